"""The package layout shows the architecture (DESIGN.md section 2), and stays so."""

from __future__ import annotations

import ast
from pathlib import Path

STREAM = Path(__file__).resolve().parents[2] / "stream"
IO_LIBRARIES = {"faust", "mode", "aiokafka", "aiohttp", "redis", "prometheus_client"}
MAX_FUNCTION_LINES = 80


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


def modules_of(folder: str) -> list[Path]:
    found = sorted((STREAM / folder).rglob("*.py"))
    assert found, f"no modules in stream/{folder}"
    return found


def test_core_imports_no_kafka_faust_http_or_redis() -> None:
    for path in modules_of("core"):
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top not in IO_LIBRARIES, f"{path.name} imports {name}"
            if top == "stream":
                assert name.startswith("stream.core"), f"{path.name} imports {name}"


def test_worker_and_api_do_not_import_the_local_stack_or_the_tools() -> None:
    for folder in ("worker", "api", "core", "faust_fixes", "kafka"):
        for path in modules_of(folder):
            for name in imported_modules(path):
                assert not name.startswith(("stream.ops", "stream.tools")), (
                    f"stream/{folder}/{path.name} imports {name}"
                )


def test_no_function_is_longer_than_about_80_lines() -> None:
    long = []
    for path in STREAM.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(STREAM)}:{node.name} ({lines} lines)")
    assert not long, long


def test_each_faust_fix_names_its_upstream_and_when_to_delete_it() -> None:
    for path in modules_of("faust_fixes"):
        if path.name in ("__init__.py", "patching.py"):  # the package, its installer
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "Delete when" in doc, path.name
        assert "faust-streaming" in doc or "faust." in doc, path.name


COLLECTOR_ADAPTERS = {"app.py", "sender.py", "metrics.py"}


def test_the_collector_decides_without_io_and_stands_apart_from_the_worker() -> None:
    """Its answers are decided in modules a unit test can drive without a socket;
    and it is a process of its own: no worker, API or Faust code in it."""
    for path in modules_of("collector"):
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert not name.startswith(("stream.worker", "stream.api", "stream.ops")), (
                f"collector/{path.name} imports {name}"
            )
            assert top not in {"faust", "mode"}, f"collector/{path.name} imports {name}"
            if path.name not in COLLECTOR_ADAPTERS:
                assert top not in IO_LIBRARIES, f"collector/{path.name} imports {name}"

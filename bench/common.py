"""Shared helpers for benchmarks: machine facts and result files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

# `python -m bench --quick` writes under results/quick/, so the full run's files stay.
RESULTS = Path(os.environ.get("FUNNEL_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


def attribution(rng: random.Random) -> dict[str, str]:
    """The attribution fields every benchmark event carries (realistic payload size)."""
    return {
        "channel": rng.choice(["search", "social", "email", "direct", "paid"]),
        "campaign": rng.choice(["winter", "spring", "brand"]),
        "region": rng.choice(["north", "south"]),
        "device": rng.choice(["mobile", "desktop"]),
    }


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    versions = {}
    for pkg in ("msgspec", "orjson", "jsonschema", "fastjsonschema", "faust-streaming", "aiokafka"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "versions": versions,
        "git": git_revision(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **figures}, indent=2) + "\n")
    return path


def counters_digest(counters: dict) -> str:
    """One hash of the non-zero counters of an engine (or of engines summed): the
    check that a peer doing our job (bench/quix_engine_peer.py) got our numbers."""
    lines = sorted(f"{tuple(key)!r}={n}" for key, n in counters.items() if n)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()

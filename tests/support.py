"""Helpers for tests that drive real processes: workers, producers, HTTP polls."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Ports of the test stack: away from the defaults so `make run` can stay up.
# FUNNEL_TEST_PORT_OFFSET moves them all (and the run directory), so a second
# suite can run beside the first on one machine.
_OFFSET = int(os.environ.get("FUNNEL_TEST_PORT_OFFSET", "0"))
TEST_ENV = {
    "FUNNEL_RUN_DIR": str(REPO / ".run" / (f"test{_OFFSET}" if _OFFSET else "test")),
    "FUNNEL_KAFKA_PORT": str(19092 + _OFFSET),
    "FUNNEL_KAFKA_CONTROLLER_PORT": str(19097 + _OFFSET),
    "FUNNEL_KAFKA_SASL_PORT": str(19094 + _OFFSET),
    "FUNNEL_REDIS_PORT": str(16379 + _OFFSET),
    "FUNNEL_PROMETHEUS_PORT": str(19090 + _OFFSET),
    "FUNNEL_ALERTMANAGER_PORT": str(19093 + _OFFSET),
    "FUNNEL_SCRAPE_INTERVAL": "1s",
    "FUNNEL_WEB_PORT": str(16066 + _OFFSET),
    "FUNNEL_KAFKA_HEAP": "512m",
    "FUNNEL_SESSION_TIMEOUT": "6",
    # A test runs the webhook receiver here (tests/integration/test_alerts.py).
    "FUNNEL_ALERT_WEBHOOK": f"http://127.0.0.1:{15001 + _OFFSET}/alerts",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0, token: str = "") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_json(url: str, timeout: float = 5.0, token: str = "") -> Any:
    status, body = http_get(url, timeout, token)
    if status != 200:
        raise AssertionError(f"GET {url} -> {status}: {body[:500]!r}")
    return json.loads(body)


class Fatal(AssertionError):
    """Raised by a check when waiting longer cannot help (e.g. the process died)."""


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns a truthy value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Fatal:
            raise
        except Exception as exc:  # noqa: BLE001 - keep polling, report at the end
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}; last={last!r} {last_exc!r}"
    )


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (no HELP/TYPE lines)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    total = 0.0
    for key, value in metrics.items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def watermarks_at_least(worker, settings, ts: float) -> bool:
    """Whether every partition of the events topic has a watermark of ``ts`` or later
    on ``worker`` (which owns them all): until then nothing is late."""
    metrics = worker.metrics()
    got = [
        metric_sum(metrics, "funnel_watermark_seconds", partition=str(p))
        for p in range(settings.partitions)
    ]
    return all(mark >= ts for mark in got)


def unique_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """Environment for one test's worker: its own topics and consumer group."""
    tag = uuid.uuid4().hex[:8]
    env = {
        **base,
        "FUNNEL_TOPIC_PREFIX": f"t{tag}.",
        "FUNNEL_APP_ID": f"funnel-test-{tag}",
        "FUNNEL_REDIS_PREFIX": f"funnel-test-{tag}:",
    }
    env.update(extra)
    return env


def own_group_env(base: dict[str, str], name: str) -> dict[str, str]:
    """``base`` read by a consumer group of its own (app id, internal and
    dead-letter topics), over the same input topics: for comparing runs."""
    prefix = base.get("FUNNEL_TOPIC_PREFIX", "")
    return {
        **base,
        "FUNNEL_APP_ID": f"{base.get('FUNNEL_APP_ID', 'funnel')}-{name}",
        "FUNNEL_EVENTS_TOPIC": f"{prefix}{name}.funnel.events",
        "FUNNEL_DEAD_LETTER_TOPIC": f"{prefix}{name}.funnel.dead-letter",
    }


class WorkerProcess:
    """A real `funnel worker` subprocess with its log in the run directory."""

    def __init__(self, env: dict[str, str], web_port: int, name: str = "worker") -> None:
        self.env = {**env, "FUNNEL_WEB_PORT": str(web_port)}
        self.port = web_port
        run_dir = Path(env["FUNNEL_RUN_DIR"])
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = run_dir / f"{name}-{env.get('FUNNEL_APP_ID', 'app')}-{web_port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 60.0) -> WorkerProcess:
        self.start_process()
        return self.wait_ready(ready_timeout)

    def start_process(self) -> None:
        """Start without waiting, so several workers can join a group together."""
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def wait_ready(self, ready_timeout: float = 60.0) -> WorkerProcess:
        wait_for(self._ready, ready_timeout, f"worker on :{self.port} to be ready")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise Fatal(f"worker exited with {self.proc.returncode}; log:\n{self.log_tail()}")
        status, _ = http_get(self.url + "/health/ready", timeout=1.0)
        return status == 200

    def log_tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def metrics(self) -> dict[str, float]:
        status, body = http_get(self.url + "/metrics")
        assert status == 200, body
        return parse_metrics(body.decode())

    def kill(self) -> None:
        """kill -9: no commit, no leaving the group (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MB."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class CollectorProcess(WorkerProcess):
    """A real `funnel collector` subprocess (same start/stop/log as a worker)."""

    def __init__(self, env: dict[str, str], port: int, name: str = "collector") -> None:
        super().__init__({**env, "FUNNEL_COLLECTOR_PORT": str(port)}, port, name)
        self.env.pop("FUNNEL_WEB_PORT", None)
        self.env["FUNNEL_WEB_PORT"] = env.get("FUNNEL_WEB_PORT", "6066")

    def start_process(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "collector"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 30
    ) -> tuple[int, Any, dict[str, str]]:
        """POST ``body``; (status, JSON answer, headers)."""
        req = urllib.request.Request(self.url + path, body, headers or {}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)


def prometheus_query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    data = http_json(url)
    assert data["status"] == "success", data
    return data["data"]["result"]


def settings_for(env: dict[str, str]):
    """Settings as the worker in ``env`` would read them."""
    from stream.config import Settings

    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return Settings.from_env()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def offset_rows(settings, group: str) -> list[tuple[str, int, int | None, int, int]]:
    """(topic, partition, group's committed offset, last stable offset, log end) for
    the input topics, funnel.events and every changelog of ``group``: an open
    transaction shows as LSO < end, commits that stopped as committed < LSO - 1."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    async def run() -> list:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        committed_c = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
        )
        plain = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        await committed_c.start()
        await plain.start()
        try:
            committed = await admin.list_consumer_group_offsets(group)
            topics = [
                t
                for t in await plain.topics()
                if t == settings.events_topic
                or t in settings.topics.values()
                or (t.startswith(group) and "changelog" in t)
            ]
            rows = []
            for topic in sorted(topics):
                tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
                lso = await committed_c.end_offsets(tps)
                end = await plain.end_offsets(tps)
                for tp in tps:
                    c = committed.get(tp)
                    rows.append((topic, tp.partition, c.offset if c else None, lso[tp], end[tp]))
            return rows
        finally:
            await plain.stop()
            await committed_c.stop()
            await admin.close()

    return asyncio.run(run())


def committed_to_the_end(settings, topic: str, rows) -> bool:
    """Whether the group's committed offsets of ``topic`` leave nothing readable behind.

    Only transaction markers may follow a committed offset (each transaction that
    wrote to a partition ends with one; several end together at a commit), so a
    committed offset short of the last stable offset is fine when a
    read_committed read from it finds no record.
    """
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    behind = [(p, c, lso) for t, p, c, lso, _ in rows if t == topic and (c or 0) < lso]
    if not behind:
        return any(t == topic for t, *_ in rows)
    if any(c is None for _, c, _ in behind):
        return False

    async def readable() -> bool:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            for p, c, _ in behind:
                tp = TopicPartition(topic, p)
                consumer.assign([tp])
                consumer.seek(tp, c)
                if (await consumer.getmany(tp, timeout_ms=1000)).get(tp):
                    return True
            return False
        finally:
            await consumer.stop()

    return not asyncio.run(readable())


def offsets_report(settings, group: str) -> str:
    """Debug aid for a failed exactness check: ``offset_rows`` as text."""
    try:
        rows = offset_rows(settings, group)
    except Exception as exc:  # noqa: BLE001 - a debug aid must not hide the real failure
        return f"(offsets report failed: {exc!r})"
    return "\n".join(f"{t}:{p} committed={c} lso={lso} end={end}" for t, p, c, lso, end in rows)


Record = tuple[bytes | None, bytes | None]  # (key, value); a None value is a tombstone


async def write_transactions(
    options: dict[str, Any], topic: str, batches: list[tuple[list[Record], bool]]
) -> None:
    """Each batch of records to partition 0 in its own transaction, committed or
    aborted: a log with records, aborted records and commit markers."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**options, transactional_id=f"tx-{uuid.uuid4().hex[:6]}")
    await producer.start()
    try:
        for records, commit in batches:
            await producer.begin_transaction()
            for key, value in records:
                await producer.send_and_wait(topic, value, key=key, partition=0)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()

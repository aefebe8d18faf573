"""The chaos suite's machinery: a seeded load sent at a steady rate while faults
are injected, and the settling check that compares what the workers hold with
what a batch recompute of the same input says.

Every scenario ends in ``settle``: it waits for the workers' event-level counts
(``/api/events-per-minute``, distinct events per type and minute, summed over
the workers) to equal the input's, then checks every funnel document, the
workers' ``/metrics`` and ``funnel replay`` of the same input against the
oracle, and the dead-letter topic against the poison that was sent. The
figures go to ``RESULTS`` and are printed as a table at the end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stream.core.funnels import load_funnels
from stream.kafka.producer import FunnelProducer
from stream.ops.stack import Stack
from stream.tools.replay import replay
from tests.support import (
    REPO,
    WorkerProcess,
    free_port,
    http_get,
    http_json,
    metric_sum,
    offsets_report,
    settings_for,
)
from tests.workload import events_per_minute, oracle_docs, total, wait_answer

# FUNNEL_CHAOS_SOAK=1 (make test-chaos) runs every scenario longer and harder.
SOAK = os.environ.get("FUNNEL_CHAOS_SOAK") == "1"
EVENTS = 60_000 if SOAK else 20_000
RATE = 1_500  # messages per second the load sends
RESULTS_FILE = REPO / ".run" / "chaos-results.json"


@dataclass
class Figures:
    """One scenario's outcome, in events (distinct event ids)."""

    scenario: str
    sent: int = 0  # messages produced: events, resends and poison
    distinct: int = 0  # distinct valid events among them
    counted: int = 0  # distinct events the workers' state holds
    lost: int = 0
    duplicated: int = 0
    dead_letters: int = 0
    poison: int = 0
    recovery_s: float = float("nan")  # fault over -> every answer exact again
    restarts: int = 0  # workers restarted by the harness (a supervisor's job)
    checks: list[str] = field(default_factory=list)


RESULTS: list[Figures] = []


def table(results: list[Figures]) -> str:
    head = (
        "| scenario | sent | distinct | counted | lost | double-counted | dead letters "
        "| recovery s | crashes restarted |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [
        f"| {r.scenario} | {r.sent:,} | {r.distinct:,} | {r.counted:,} | {r.lost} "
        f"| {r.duplicated} | {r.dead_letters:,} of {r.poison:,} | {r.recovery_s:.1f} "
        f"| {r.restarts} |"
        for r in results
    ]
    return "\n".join([head, *rows])


def record(figures: Figures) -> None:
    RESULTS.append(figures)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    save_results()


class Load(threading.Thread):
    """Sends ``messages`` (topic, key, value) at ``rate`` per second in chunks, each
    acknowledged before the next. A chunk that fails (broker down, timeout) is
    sent again with a fresh producer, as a real client retries: the resends are
    counted in ``sent``, and the worker must count each event once."""

    def __init__(self, settings, messages: list[tuple[str, bytes | None, bytes]], rate: int):
        super().__init__(daemon=True)
        self.settings = settings
        self.messages = messages
        self.rate = rate
        self.sent = 0
        self.progress = 0  # messages acknowledged so far
        self.retries = 0
        self.error: BaseException | None = None
        self.done_at: float | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._send_all())
        except BaseException as exc:  # noqa: BLE001 - reported by the scenario
            self.error = exc
        self.done_at = time.monotonic()

    def wait(self, timeout: float = 300) -> int:
        """Wait until everything is sent and acknowledged; the messages sent."""
        self.join(timeout)
        assert not self.is_alive(), f"load still sending after {timeout}s"
        assert self.error is None, self.error
        return self.sent

    async def _send_all(self) -> None:
        chunk = max(1, self.rate // 10)
        start = time.monotonic()
        producer: FunnelProducer | None = None
        i = 0
        while i < len(self.messages):
            part = self.messages[i : i + chunk]
            try:
                if producer is None:
                    producer = FunnelProducer(self.settings, request_timeout_ms=10_000)
                    await asyncio.wait_for(producer.start(), 15)
                pending = [await producer.send_raw(t, k, v) for t, k, v in part]
                self.sent += len(part)
                await asyncio.wait_for(asyncio.gather(*pending), 20)
            except Exception:  # noqa: BLE001 - broker away: retry the chunk
                self.retries += 1
                if producer is not None:
                    await _quietly(producer.stop())
                producer = None
                await asyncio.sleep(1.0)
                continue
            i += len(part)
            self.progress = i
            lag = start + i / self.rate - time.monotonic()
            if lag > 0:
                await asyncio.sleep(lag)
        if producer is not None:
            await producer.stop()


async def _quietly(coro) -> None:
    with contextlib.suppress(Exception):  # the producer is being dropped anyway
        await asyncio.wait_for(coro, 10)


def messages_of(settings, docs: list[dict]) -> list[tuple[str, bytes | None, bytes]]:
    producer = FunnelProducer(settings)
    return [producer.prepare(d)[:3] for d in docs]


class Cluster:
    """The workers of one consumer group, started and stopped by the scenario."""

    def __init__(self, env: dict[str, str], name: str, supervise: bool = False) -> None:
        self.env = env
        self.name = name
        # Restart a worker that exits on its own, as Kubernetes would (counted).
        self.supervise = supervise
        self.workers: list[WorkerProcess] = []
        self.restarts = 0
        self._n = 0

    def start(self, n: int = 1, wait: bool = True) -> list[WorkerProcess]:
        new = []
        for _ in range(n):
            self._n += 1
            new.append(WorkerProcess(self.env, free_port(), name=f"{self.name}-w{self._n}"))
        for w in new:
            w.start_process()
        if wait:
            for w in new:
                w.wait_ready(120)
        self.workers += new
        return new

    def kill(self, worker: WorkerProcess) -> None:
        worker.proc.kill()
        worker.stop()
        self.workers.remove(worker)

    def leave(self, worker: WorkerProcess) -> None:
        code = worker.stop()
        assert code == 0, f"worker left with {code}:\n{worker.log_tail()}"
        self.workers.remove(worker)

    def revive(self) -> None:
        """Restart any worker that exited, as Kubernetes would, and count it."""
        for w in list(self.workers):
            if w.proc is not None and w.proc.poll() is not None:
                w.stop()
                self.workers.remove(w)
                self.restarts += 1
                self.start(1, wait=False)

    def check_alive(self) -> None:
        """Fail at once, with its log, if a worker exited on its own."""
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is not None:
                raise AssertionError(
                    f"worker on :{w.port} exited with {w.proc.returncode}:\n{w.log_tail(30)}"
                )

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers = []

    def counted(self) -> dict[str, dict[str, int]] | None:
        """Events per type and minute summed over the workers; None unless every
        worker is ready (during a rebalance partitions are owned by nobody)."""
        if self.supervise:
            self.revive()
        total: dict[str, dict[str, int]] = {}
        for w in self.workers:
            try:
                ready, _ = http_get(w.url + "/health/ready", timeout=2)
                status, body = http_get(w.url + "/api/events-per-minute", timeout=5)
            except OSError:  # not listening yet (starting) or any more (exited)
                return None
            if ready != 200 or status != 200:
                return None
            for kind, minutes in json.loads(body).items():
                into = total.setdefault(kind, {})
                for minute, n in minutes.items():
                    into[minute] = into.get(minute, 0) + n
        return total

    def counted_total(self) -> int:
        got = self.counted() or {}
        return total(got)


def compare(want: dict[str, dict[str, int]], got: dict[str, dict[str, int]]) -> tuple[int, int]:
    """(lost, double-counted) events between the input's and the workers' counts."""
    lost = dup = 0
    for kind in set(want) | set(got):
        w, g = want.get(kind, {}), got.get(kind, {})
        for minute in set(w) | set(g):
            diff = g.get(minute, 0) - w.get(minute, 0)
            lost += max(0, -diff)
            dup += max(0, diff)
    return lost, dup


def settle(
    figures: Figures,
    cluster: Cluster,
    settings,
    docs: list[dict],
    fault_over: float,
    tmp_path: Path,
    expected_dead: int = 0,
    timeout: float = 240,
    supervise: bool = False,
    breakdowns: list[tuple[str, str]] = (),
) -> None:
    """Wait for the workers to hold exactly the input, then check every answer.

    Records the figures before asserting, so a failing scenario still shows its
    row (lost / double-counted) in the table.
    """
    want = events_per_minute(docs)
    figures.distinct = total(want)
    figures.poison = expected_dead
    deadline = time.monotonic() + timeout
    got: dict[str, dict[str, int]] | None = None
    exact = False
    exited = ""
    while time.monotonic() < deadline:
        if supervise or cluster.supervise:
            cluster.revive()
        else:
            try:
                cluster.check_alive()
            except AssertionError as exc:
                exited = str(exc)
                break
        got = cluster.counted() or got
        if got == want:
            exact = True
            break
        time.sleep(0.5)
    figures.restarts = cluster.restarts
    got = got or {}
    figures.counted = total(got)
    figures.lost, figures.duplicated = compare(want, got)
    if exact:
        figures.recovery_s = time.monotonic() - fault_over
    dead = dead_letters(settings)
    figures.dead_letters = len(dead)
    record(figures)
    assert not exited, exited
    assert exact, (
        f"{figures.scenario}: events per type and minute never equalled the input: "
        f"lost {figures.lost}, double-counted {figures.duplicated}; by type "
        f"{ {k: compare({k: want.get(k, {})}, {k: got.get(k, {})}) for k in want} }\n"
        + offsets_report(settings, settings.app_id)
        + "\n"
        + "\n".join(lag_lines(w) for w in cluster.workers)
    )
    # Every funnel document, from every worker, is the oracle's.
    wants = oracle_docs(docs, settings)
    for f in load_funnels():
        for w in cluster.workers:
            wait_answer(f"{w.url}/api/funnels/{f.name}?window=all", wants[f.name], 60, settings)
    figures.checks.append("API == oracle")
    # The workers' /metrics add up to the oracle (each exports its own partitions).
    exported = [w.metrics() for w in cluster.workers]
    for f in load_funnels():
        for step in wants[f.name]["steps"]:
            labels = {"funnel": f.name, "step": step["name"], "window": "24h", "breakdown": ""}
            got_n = sum(metric_sum(m, "funnel_step_reached", **labels) for m in exported)
            assert got_n == step["reached"], (figures.scenario, f.name, step, got_n)
    figures.checks.append("/metrics == oracle")
    # `funnel replay` of the same input gives the same documents.
    path = tmp_path / "input.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    offline = replay(
        path, load_funnels(), settings.bucket, settings.lateness, settings.dedup_horizon,
        progress=False,
    )  # fmt: skip
    for f in load_funnels():
        assert next(d for d in offline["funnels"] if d["funnel"] == f.name) == wants[f.name]
    figures.checks.append("replay == oracle")
    # Breakdowns (attribution) from the API are those of replaying the input.
    for name, dim in breakdowns:
        doc = replay(
            path, load_funnels(), settings.bucket, settings.lateness, settings.dedup_horizon,
            breakdown=dim, progress=False,
        )  # fmt: skip
        want_b = next(d for d in doc["funnels"] if d["funnel"] == name)["breakdown"]
        for w in cluster.workers:
            got_b = http_json(f"{w.url}/api/funnels/{name}?window=all&breakdown={dim}")
            got_v, want_v = got_b["breakdown"][dim], want_b[dim]
            diff = {
                v: ((got_v.get(v) or {}).get("steps"), (want_v.get(v) or {}).get("steps"))
                for v in set(got_v) | set(want_v)
                if got_v.get(v) != want_v.get(v)
            }
            assert not diff, (figures.scenario, name, dim, "value: (API, replay)", diff)
        figures.checks.append(f"{name} by {dim} == replay")
    assert figures.dead_letters == expected_dead, (figures.dead_letters, expected_dead)
    save_results()  # with the checks that passed


def lag_lines(worker: WorkerProcess) -> str:
    try:
        metrics = worker.metrics()
    except Exception as exc:  # noqa: BLE001 - a debug aid must not hide the failure
        return f"{worker.url}: {exc!r}"
    lines = [f"{k} {v}" for k, v in metrics.items() if "lag" in k or "refetched" in k]
    return f"{worker.url}:\n" + "\n".join(lines)


def save_results() -> None:
    RESULTS_FILE.write_text(json.dumps([asdict(r) for r in RESULTS], indent=1))


def dead_letters(settings) -> list[Any]:
    from tests.integration.test_contract import read_topic

    return asyncio.run(
        read_topic(settings.kafka_bootstrap, settings.dead_letter_topic, 10**9, timeout=3)
    )


def new_run(stack_env: dict[str, str], **extra: str):
    """Environment and settings of a fresh group with its own topics."""
    from tests.support import unique_env

    env = unique_env(stack_env, **extra)
    settings = settings_for(env)
    asyncio.run(Stack(settings).create_topics())
    return env, settings


def fence(settings, groups: int = 3, partitions: tuple[int, ...] = (1,)) -> list[str]:
    """Take the worker's transactional ids over, as a partition's new owner does:
    a producer of each id starts (InitProducerId bumps the epoch), so the
    worker's producers of those ids are fenced. Faust names them
    ``{app id}-{topic group}-{partition}``; the worker has three topic groups
    (one per agent, worker/app.py)."""
    from aiokafka import AIOKafkaProducer

    from stream.kafka.client import client_options

    tids = [f"{settings.app_id}-{g}-{p}" for g in range(groups) for p in partitions]

    async def take_over() -> None:
        for tid in tids:
            producer = AIOKafkaProducer(**client_options(settings), transactional_id=tid)
            await producer.start()
            try:
                await producer.begin_transaction()  # waits for the new producer id
                await producer.abort_transaction()
            finally:
                await producer.stop()

    asyncio.run(take_over())
    return tids


def wait_progress(check: Callable[[], int], target: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check() >= target:
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} >= {target}")

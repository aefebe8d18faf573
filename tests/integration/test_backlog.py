"""Event time through backlogs (DESIGN.md section 4): an import, a catch-up, a slow
source and a crash mid-import all count exactly what `funnel replay` and the oracle
count, with no event late; a truly late one is still dead-lettered as `late`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from stream.core.events import decode
from stream.core.funnels import load_funnels
from stream.ops.stack import Stack
from stream.tools.demo import Traffic
from stream.tools.replay import documents, run_engine
from tests.support import (
    REPO,
    WorkerProcess,
    free_port,
    http_json,
    metric_sum,
    settings_for,
    unique_env,
    wait_for,
    watermarks_at_least,
)
from tests.workload import events_per_minute, oracle_docs, send_docs, total, wait_answer

pytestmark = pytest.mark.integration

DAY = 86400.0
HOUR = 3600.0


def demo_history(env: dict[str, str], minutes: float, rate: float, path) -> list[dict]:
    """`funnel demo --history`: that many minutes of all six input types, sent at once."""
    cmd = [sys.executable, "-m", "stream", "demo", "--rate", str(rate), "--seed", "7"]
    cmd += ["--history", str(minutes), "--duration", "1", "--out", str(path)]
    run = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def traffic_between(traffic: Traffic, end: float) -> list[dict]:
    """The demo's events due up to ``end`` (event time), as sent to Kafka."""
    out = []
    for event in traffic.due(end):
        if event["type"] != "_lease":
            out.append({k: v for k, v in event.items() if not k.startswith("_")})
    return out


def ts_of(doc: dict) -> float:
    return datetime.fromisoformat(doc["occurred_at"]).timestamp()


def write(path, docs: list[dict]) -> None:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))


def wait_counted(worker: WorkerProcess, docs: list[dict], timeout: float = 240) -> None:
    """Until the worker has counted every distinct event sent so far."""
    want = total(events_per_minute(docs))
    try:
        wait_for(
            lambda: total(http_json(f"{worker.url}/api/events-per-minute")) == want,
            timeout,
            f"{want} events counted",
        )
    except AssertionError as exc:
        got = total(http_json(f"{worker.url}/api/events-per-minute"))
        metrics = worker.metrics()
        late = {
            f.name: metric_sum(metrics, "funnel_events_late_total", funnel=f.name)
            for f in load_funnels()
        }
        raise AssertionError(f"{exc}: counted {got}; late {late}\n{worker.log_tail(15)}") from None


def assert_exact(worker: WorkerProcess, settings, docs: list[dict], path, timeout=240) -> None:
    """API == `funnel replay` == oracle for every funnel, both views, window=all and
    every breakdown; no event late in the replay or in the stream."""
    write(path, docs)
    funnels = load_funnels()
    args = (settings.bucket, settings.lateness, settings.dedup_horizon)
    engine, counts = run_engine(path, funnels, *args, progress=False)
    assert counts["late"] == 0 and counts["invalid"] == 0, counts
    sources = [d["type"] for d in docs]
    for view in ("period", "cohort"):
        for breakdown in (None, *sorted({d for f in funnels for d in f.breakdowns})):
            wants = oracle_docs(docs, settings, view, breakdown, sources)
            offline = documents(engine, funnels, view=view, breakdown=breakdown)
            for f in funnels:
                if f.name not in wants:
                    continue  # the funnel has no such breakdown
                want = wants[f.name]
                assert next(d for d in offline if d["funnel"] == f.name) == want
                query = f"window=all&view={view}" + (f"&breakdown={breakdown}" if breakdown else "")
                url = f"{worker.url}/api/funnels/{f.name}?{query}"
                wait_answer(url, want, timeout=timeout, settings=settings)
                timeout = 10  # once one answer is right the rest are there already
    assert metric_sum(worker.metrics(), "funnel_events_late_total") == 0


def new_env(stack_env: dict[str, str], **extra: str) -> tuple[dict[str, str], object]:
    env = unique_env(stack_env, **extra)
    settings = settings_for(env)
    asyncio.run(Stack(settings).create_topics())
    return env, settings


def test_a_bulk_import_of_three_days_of_demo_history_is_exact(stack, stack_env, tmp_path):
    env, settings = new_env(stack_env)
    docs = demo_history(env, 3 * 24 * 60, 0.05, tmp_path / "sent.jsonl")
    assert len({d["type"] for d in docs}) == 6 and len(docs) > 5_000
    started = time.monotonic()
    worker = WorkerProcess(env, free_port()).start()
    try:
        assert_exact(worker, settings, docs, tmp_path / "events.jsonl")
        metrics = worker.metrics()
        # The worker committed throughout, and its commit counters say how long that took.
        commits = metric_sum(metrics, "funnel_commits_total")
        committing = metric_sum(metrics, "funnel_commit_seconds_total")
        assert commits >= 2 and 0 < committing < time.monotonic() - started, (commits, committing)
        assert "funnel_commit_held_seconds_total" in metrics, sorted(metrics)[:20]
        print(
            f"3-day import: {len(docs)} events counted exactly in "
            f"{time.monotonic() - started:.0f}s; worker peak memory "
            f"{worker.peak_rss_mb():.0f} MB; longest gap between commits "
            f"{metric_sum(metrics, 'funnel_commit_gap_max_seconds'):.1f}s"
        )
    finally:
        worker.stop()


def test_a_kill_9_in_the_middle_of_the_import_is_exact(stack, stack_env, tmp_path):
    env, settings = new_env(stack_env)
    docs = demo_history(env, 3 * 24 * 60, 0.05, tmp_path / "sent.jsonl")
    worker = WorkerProcess(env, free_port()).start()
    try:
        want = total(events_per_minute(docs))
        wait_for(
            lambda: total(http_json(f"{worker.url}/api/events-per-minute")) > want // 3,
            240,
            "a third of the import counted",
        )
        worker.kill()
        worker = WorkerProcess(env, free_port(), name="restarted").start(ready_timeout=120)
        assert_exact(worker, settings, docs, tmp_path / "events.jsonl")
    finally:
        worker.stop()


def test_a_catch_up_after_the_worker_was_down_for_30_minutes_is_exact(stack, stack_env, tmp_path):
    env, settings = new_env(stack_env)
    now = time.time()
    traffic = Traffic(seed=11, rate=1.5, start=now - 90 * 60)
    before = traffic_between(traffic, now - 30 * 60)
    worker = WorkerProcess(env, free_port()).start()
    try:
        send_docs(settings, before)
        wait_counted(worker, before)
        assert worker.stop() == 0
        during = traffic_between(traffic, now)  # 30 minutes of traffic while it was down
        send_docs(settings, during)
        worker = WorkerProcess(env, free_port(), name="back").start(ready_timeout=120)
        assert_exact(worker, settings, before + during, tmp_path / "events.jsonl")
    finally:
        worker.stop()


def test_a_source_paused_for_two_hours_of_event_time_is_exact(stack, stack_env, tmp_path):
    env, settings = new_env(stack_env)
    now = time.time()
    docs = traffic_between(Traffic(seed=5, rate=1.0, start=now - 3 * HOUR), now)
    paused = [d for d in docs if d["type"] == "visit" and ts_of(d) >= now - 2 * HOUR]
    held = {d["event_id"] for d in paused}
    others = [d for d in docs if d["event_id"] not in held]
    worker = WorkerProcess(env, free_port()).start()
    try:
        send_docs(settings, others)  # the visits topic is paused at its producer
        wait_counted(worker, others)
        send_docs(settings, paused)  # and released: two hours behind the other topics
        assert_exact(worker, settings, others + paused, tmp_path / "events.jsonl")
    finally:
        worker.stop()


def test_a_truly_late_event_is_dead_lettered_and_counted_per_funnel(stack, stack_env, tmp_path):
    env, settings = new_env(stack_env)
    now = time.time()
    docs = traffic_between(Traffic(seed=3, rate=0.5, start=now - HOUR), now)
    worker = WorkerProcess(env, free_port()).start()
    try:
        send_docs(settings, docs)
        wait_counted(worker, docs)
        wait_for(
            lambda: watermarks_at_least(worker, settings, now - 2 * HOUR),
            settings.idle_timeout + 30,
            "every partition's watermark past the backlog",
        )
        shop_window = next(f.window for f in load_funnels() if f.name == "shop")
        late = {
            "event_id": "truly-late-1",
            "type": "visit",
            "occurred_at": datetime.fromtimestamp(
                now - 2 * HOUR - shop_window - settings.lateness, tz=UTC
            ).isoformat(),
            "visitor_id": docs[-1].get("visitor_id") or "v-late",
        }
        send_docs(settings, [late])
        wait_for(
            lambda: metric_sum(worker.metrics(), "funnel_events_late_total", funnel="shop") == 1,
            60,
            "the late event counted for the shop funnel",
        )
        letters = asyncio.run(dead_letters(settings, 1))
        assert decode(letters[0][0], now=float("inf")).event_id == late["event_id"]
        headers = letters[0][1]
        assert headers["reason"] == "late" and "watermark" in headers["message"]
        assert headers["topic"] == settings.topics["visit"]
    finally:
        worker.stop()


async def dead_letters(settings, n: int) -> list[tuple[bytes, dict[str, str]]]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.dead_letter_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        out = []
        deadline = time.monotonic() + 30
        while len(out) < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for r in records:
                    out.append((r.value, {k: v.decode() for k, v in r.headers}))
        return out
    finally:
        await consumer.stop()


SHORT_FUNNELS = """
[[funnel]]
name = "shop"
entity = "visitor_id"
window = "2m"
breakdowns = ["channel"]
steps = [
  { name = "visit",  match = { type = "visit" } },
  { name = "signup", match = { type = "signup" } },
  { name = "cart",   match = { type = "cart", action = "add" } },
]
"""


def tick(i: int) -> dict:
    """A visit of a new visitor now: it moves its partition's watermark."""
    return {
        "event_id": f"tick-{i}",
        "type": "visit",
        "occurred_at": datetime.fromtimestamp(time.time(), tz=UTC).isoformat(),
        "visitor_id": f"tick-{i}",
    }


def test_journeys_expire_behind_the_watermark_once_the_backlog_is_read(stack, stack_env, tmp_path):
    """State stays bounded: after a catch-up the watermark moves on and entities
    two windows behind it are dropped, while their counts stay."""
    funnels_file = tmp_path / "funnels.toml"
    funnels_file.write_text(SHORT_FUNNELS)
    env, settings = new_env(
        stack_env, FUNNEL_FUNNELS=str(funnels_file), FUNNEL_LATENESS="60", FUNNEL_IDLE_TIMEOUT="5"
    )
    now = time.time()
    docs = traffic_between(Traffic(seed=9, rate=3.0, start=now - 40 * 60), now - 60)
    visitors = {d["visitor_id"] for d in docs if d["type"] in ("visit", "signup", "cart")}
    worker = WorkerProcess(env, free_port()).start()
    try:
        send_docs(settings, docs)  # 40 minutes of traffic at once: a backlog
        wait_counted(worker, docs)
        # Every source is read now. Once they have been silent for the idle timeout
        # they stop holding the watermark back: fresh visits (on every partition)
        # then move each partition's watermark past the backlog, and expiry runs.
        recent = {
            d["visitor_id"]
            for d in docs
            if d["type"] in ("visit", "signup", "cart") and ts_of(d) >= now - 10 * 60
        }
        ticks: list[dict] = []

        def expired() -> bool:
            base = len(ticks)
            ticks.extend([tick(base + i) for i in range(10)])
            send_docs(settings, ticks[-10:])
            wait_counted(worker, docs + ticks)
            held = metric_sum(worker.metrics(), "funnel_journeys", funnel="shop")
            return held <= len(recent) + len(ticks)

        wait_for(expired, settings.idle_timeout + 60, "journeys to expire", interval=2)
        metrics = worker.metrics()
        held = metric_sum(metrics, "funnel_journeys", funnel="shop")
        assert len(ticks) <= held < len(visitors) / 2, (held, len(visitors))
        # Dropped journeys keep their counts: every visitor's visit is still counted.
        shop = http_json(f"{worker.url}/api/funnels/shop?window=all")
        attempts = shop["steps"][0]["reached"]
        assert attempts >= len(visitors) + len(ticks)
        assert metric_sum(metrics, "funnel_events_late_total") == 0
        print(f"journeys held after the catch-up: {held:.0f} of {len(visitors)} visitors")
    finally:
        worker.stop()

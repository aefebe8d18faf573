"""Throughput of 1, 2 and 3 workers against a raw consumer, same topics, same run.

    python -m bench.scale [--events 200000] [--partitions 6] [--workers 1,2,3]

Uses the local stack (`funnel stack up`; FUNNEL_* ports as configured). Fills a
fresh set of input topics with a seeded, realistic mix of all five event types
(journeys that advance: visit -> signup -> cart actions; calls; deal stages),
then reads the same topics:

1. the limit: a raw aiokafka consumer that only reads and decodes (orjson);
2. the engine alone: `funnel replay` of the same events from a file, in process;
3. the worker doing the full job (validation, de-dup, re-keying through the
   internal topic, journeys, windowed counters, exactly-once commits), with 1,
   2, 3 workers, each count as its own consumer group from the beginning.

A worker run is done when its group's committed offsets reach the end of the
input topics and of its internal events topic (every event counted and
committed). Figures: events/s over the processing time (first progress to
done; worker start-up is reported apart) and the ratios to the raw consumer and to replay,
plus each worker's resident memory at the end. Results: bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.common import RESULTS, attribution, counters_digest, write_result
from bench.finish import FinishWatch
from bench.profile import Profiler
from stream.config import Settings
from stream.kafka.client import client_options
from stream.kafka.producer import FunnelProducer
from stream.ops.stack import Stack
from stream.progress import Progress
from tests.support import (
    WorkerProcess,
    free_port,
    http_get,
    metric_sum,
    own_group_env,
    parse_metrics,
    settings_for,
)

REPO = Path(__file__).resolve().parents[1]
# How often the run's committed offsets are read (the finish is dated to that).
POLL_S = 0.25
STAGES = ["lead", "contacted", "qualified", "proposal", "negotiation"]


def events(n: int, seed: int = 1) -> list[dict]:
    """Journeys over the last ~8 minutes (inside the allowed lateness), in time order."""
    rng = random.Random(seed)
    start = time.time() - 480
    visitors = max(n // 6, 1)
    out = []
    for i in range(n):
        ts = datetime.fromtimestamp(start + 480 * i / n, tz=UTC).isoformat()
        common = {
            "event_id": f"b{seed}-{i}",
            "occurred_at": ts,
            **attribution(rng),
        }
        kind = rng.choices(["visit", "signup", "cart", "call", "deal_stage"], [45, 10, 30, 7, 8])[0]
        visitor = f"v{rng.randrange(visitors)}"
        if kind == "visit":
            ev = {"visitor_id": visitor, "session_id": f"s{i}"}
        elif kind == "signup":
            ev = {"visitor_id": visitor, "user_id": f"u-{visitor}"}
        elif kind == "cart":
            action = rng.choices(["add", "checkout", "purchase", "remove"], [50, 25, 15, 10])[0]
            ev = {"visitor_id": visitor, "action": action, "value": 19.9, "currency": "EUR"}
        elif kind == "call":
            ev = {"call_id": f"c{i}", "tracking_number": "tn-1", "answered": rng.random() < 0.7}
        else:
            ev = {
                "deal_id": f"d{rng.randrange(max(n // 40, 1))}",
                "stage": rng.choice(STAGES),
                "manager": rng.choice(["ann", "bob", "cem"]),
            }
            if rng.random() < 0.1:
                ev["status"] = rng.choice(["won", "lost"])
                if ev["status"] == "lost":
                    ev["lost_reason"] = "price"
        out.append({**common, "type": kind, **ev})
    return out


async def produce(settings: Settings, docs: list[dict]) -> None:
    progress = Progress(len(docs), "producing", "events")
    async with FunnelProducer(settings, linger_ms=20) as producer:
        for doc in docs:
            await producer.send(doc, wait=False)
            progress.advance()
        await producer.flush()
    progress.done()


async def raw_consumer(settings: Settings, total: int) -> dict:
    """The limit: read and decode every input record, nothing else."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *settings.topics.values(),
        **client_options(settings),
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    progress = Progress(total, "raw consumer", "events")
    seen = 0
    first = None
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
                first = first or time.monotonic()
            progress.done_n = seen
            progress.advance(0)
        took = time.monotonic() - first
    finally:
        await consumer.stop()
    progress.done()
    return {"events": seen, "seconds": round(took, 2), "events_per_s": round(seen / took)}


def replay_rate(settings: Settings, docs: list[dict]) -> dict:
    """The engine alone: `funnel replay` (stream/tools/replay.py) of the same events
    from a file, in this process: the ceiling of what a worker adds Kafka to."""
    import tempfile

    from stream.core.funnels import load_funnels
    from stream.tools.replay import run_engine

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
        began = time.monotonic()
        engine, counts = run_engine(
            path,
            load_funnels(settings.funnels or None),
            settings.bucket,
            settings.lateness,
            settings.dedup_horizon,
            progress=False,
        )
        took = time.monotonic() - began
    return {
        "events": counts["valid"],
        "seconds": round(took, 2),
        "events_per_s": round(len(docs) / took),
        "counters_sha256": counters_digest(engine.counters),
    }


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory now, or its peak so far with ``field="VmHWM"``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (is a run CPU-bound or waiting?)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def run_workers(
    base_env: dict[str, str], n: int, total: int, tag: str, profile: Path | None = None
) -> dict:
    env = {
        **own_group_env({**base_env, "FUNNEL_APP_ID": f"bench-{tag}"}, f"n{n}"),
        "FUNNEL_LOG_LEVEL": "warning",
    }
    settings = settings_for(env)
    workers = [WorkerProcess(env, free_port(), name=f"scale-n{n}-w{i}") for i in range(n)]
    started = time.monotonic()
    for w in workers:
        w.start_process()
    profiler = Profiler(workers[0].proc.pid, profile) if profile else None
    progress = Progress(total, f"{n} worker(s)", "events")
    first = None
    finish = FinishWatch(settings, settings.app_id)
    try:
        while True:
            if any(w.proc.poll() is not None for w in workers):
                raise RuntimeError(f"a worker exited; see logs in {settings.run_dir}")
            committed, done = finish.poll()
            if committed and first is None:
                first = finish.changed_at
            progress.done_n = committed
            progress.advance(0)
            if done:
                break
            time.sleep(POLL_S)
        finished = finish.changed_at or time.monotonic()
        progress.done()
        hotspots = profiler.stop() if profiler else None
        ready = sum(http_get(f"{w.url}/health/ready")[0] == 200 for w in workers)
        commits = [commit_figures(w) for w in workers]
        rss = [rss_mb(w.proc.pid) for w in workers]
        cpu = [cpu_s(w.proc.pid) for w in workers]
    finally:
        finish.close()
        for w in workers:
            w.stop(60)
    took = finished - (first or started)
    run = {
        "workers": n,
        "startup_s": round((first or finished) - started, 2),
        "seconds": round(took, 2),
        "events_per_s": round(total / took),
        "ready_workers": ready,
        "rss_mb": rss,
        # Start-up included; a worker near `seconds` of CPU is CPU-bound.
        "cpu_s": cpu,
        # Per worker: commits, seconds committing, seconds its batches waited on them.
        "commits": commits,
    }
    if hotspots:
        run["profile"] = hotspots
    return run


def commit_figures(worker: WorkerProcess) -> dict:
    """The worker's commit counters (stream/worker/metrics.py) at the end of a run."""
    status, body = http_get(f"{worker.url}/metrics", timeout=60)
    if status != 200:
        return {}
    metrics = parse_metrics(body.decode())
    return {
        "commits": int(metric_sum(metrics, "funnel_commits_total")),
        "committing_s": round(metric_sum(metrics, "funnel_commit_seconds_total"), 2),
        "held_s": round(metric_sum(metrics, "funnel_commit_held_seconds_total"), 2),
    }


QUIX_VENV = REPO / "bench" / ".quix-venv"
QUIX_VERSION = "3.28.1"
# The same-job peer imports our stream.core, which needs these.
QUIX_PACKAGES = [f"quixstreams=={QUIX_VERSION}", "msgspec", "orjson"]


def quix_python() -> Path:
    """bench/.quix-venv's python, the venv made (or completed) from PyPI first."""
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {QUIX_VENV} ({', '.join(QUIX_PACKAGES)} from PyPI)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *QUIX_PACKAGES], check=True)
    return python


def run_quix(python: Path, script: str, args: list[str], what: str) -> dict:
    """One Quix Streams peer (a script in bench/) with the venv's ``python``; its JSON line."""
    print(f"{what}: running", file=sys.stderr, flush=True)
    run = subprocess.run(
        [str(python), str(REPO / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if run.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{run.stderr[-3000:]}")
    return {"version": QUIX_VERSION, **json.loads(run.stdout.strip().splitlines()[-1])}


def quix_peers(settings: Settings, total: int, tag: str) -> dict[str, dict]:
    """Both Quix Streams peers on the same topics: the same job (our engine,
    bench/quix_engine_peer.py) and per-step counting only (bench/quix_peer.py)."""
    inputs = {kind: t for kind, t in settings.topics.items() if kind != "spend"}  # spend: empty
    python = quix_python()  # the venv checked (pip) once for both
    same_job = run_quix(
        python,
        "quix_engine_peer.py",
        [settings.kafka_bootstrap, f"bench-quix-job-{tag}", str(total)]
        + [f"{kind}={topic}" for kind, topic in inputs.items()]
        + ["--bucket", str(settings.bucket), "--lateness", str(settings.lateness)]
        + ["--horizon", str(settings.dedup_horizon)],
        "quix streams same-job peer",
    )
    count_only = run_quix(
        python,
        "quix_peer.py",
        [settings.kafka_bootstrap, f"bench-quix-{tag}", str(total), *inputs.values()],
        "quix streams count-only peer",
    )
    return {"quix_same_job_peer": same_job, "quix_count_only_peer": count_only}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--workers", default="1,2,3", help="worker counts, comma separated")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also run the Quix Streams peers (bench/quix_engine_peer.py, bench/quix_peer.py)",
    )
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="record the first worker run with py-spy into bench/results/NAME.{txt,json}",
    )
    parser.add_argument("--name", help="results file name (default: scale or scale-with-peer)")
    args = parser.parse_args(argv)
    tag = uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        "FUNNEL_TOPIC_PREFIX": f"bench{tag}.",
        "FUNNEL_PARTITIONS": str(args.partitions),
    }
    settings = settings_for(env)
    env["FUNNEL_RUN_DIR"] = str(settings.run_dir)  # where the workers' logs go
    up = subprocess.run([sys.executable, "-m", "stream", "stack", "up"], env=env, cwd=REPO)
    if up.returncode != 0:
        return up.returncode
    asyncio.run(Stack(settings).create_topics())
    docs = events(args.events)
    asyncio.run(produce(settings, docs))
    raw = asyncio.run(raw_consumer(settings, len(docs)))
    replay = replay_rate(settings, docs)
    replay["ratio_vs_raw"] = round(replay["events_per_s"] / raw["events_per_s"], 3)
    counts = [int(n) for n in args.workers.split(",")]
    profile = RESULTS / f"{args.profile}.txt" if args.profile else None
    runs = [
        run_workers(env, n, len(docs), tag, profile if i == 0 else None)
        for i, n in enumerate(counts)
    ]
    peers = quix_peers(settings, len(docs), tag) if args.peer else {}
    for run in runs:
        run["ratio_vs_raw"] = round(run["events_per_s"] / raw["events_per_s"], 3)
        run["ratio_vs_replay"] = round(run["events_per_s"] / replay["events_per_s"], 3)
        one = runs[0]["events_per_s"]
        run["speedup_vs_first"] = round(run["events_per_s"] / one, 2)
        for name, peer in peers.items():
            run[f"ratio_vs_{name}"] = round(run["events_per_s"] / peer["events_per_s"], 2)
    entities = {d.get("visitor_id") or d.get("deal_id") or d.get("call_id") for d in docs}
    figures = {
        "events": len(docs),
        # Journeys are kept per entity and funnel, de-dup ids per event: both grow the state.
        "entities": len(entities),
        "partitions": args.partitions,
        "raw_consumer": raw,
        "replay": replay,
        "workers": runs,
    }
    for peer in peers.values():
        peer["ratio_vs_raw"] = round(peer["events_per_s"] / raw["events_per_s"], 4)
    if peers:  # same job: the peer's counters equal replay's
        job = peers["quix_same_job_peer"]
        job["same_counters_as_replay"] = job["counters_sha256"] == replay["counters_sha256"]
    figures.update(peers)
    name = args.name or args.profile or ("scale-with-peer" if peers else "scale")
    path = write_result(name, figures)
    print(f"\nraw consumer (read + decode): {raw['events_per_s']:>8} events/s")
    rate, ratio = replay["events_per_s"], replay["ratio_vs_raw"]
    print(f"funnel replay (the engine): {rate:>8} events/s  x{ratio} of raw")
    for run in runs:
        print(
            f"{run['workers']} worker(s): {run['events_per_s']:>8} events/s  "
            f"x{run['ratio_vs_raw']} of raw  x{run['ratio_vs_replay']} of replay  "
            f"x{run['speedup_vs_first']} of one worker  "
            f"start-up {run['startup_s']}s  rss {run['rss_mb']} MB"
        )
    for name, peer in peers.items():
        print(
            f"{name}: {peer['events_per_s']:>8} events/s  x{peer['ratio_vs_raw']} of raw "
            f"(one worker x{runs[0][f'ratio_vs_{name}']} of the peer)"
        )
    if peers:
        print(f"same-job peer's counters equal replay's: {job['same_counters_as_replay']}")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

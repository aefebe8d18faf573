"""A backlog of days of all event types, produced at once, counted by one worker.

    python -m bench.backlog [--events 1000000] [--days 12]

DESIGN.md section 4 and issue "Event time that survives backlogs": the demo's
simulation (all six input types, the daily rhythm) over ``--days`` of event time
at the rate that gives ``--events``, sent to fresh topics before the worker
starts. Reported: the time to count it all, events/s, the worker's peak memory,
the longest gap between two commits and the longest commit (an open transaction
lasts at most about their sum; the broker's transaction timeout is 60 s), and
whether the API equals `funnel replay` of the same events with none late.
Results: bench/results/backlog.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import write_result
from bench.finish import FinishWatch
from bench.scale import produce
from stream.core.funnels import load_funnels
from stream.ops.stack import Stack
from stream.progress import Progress
from stream.tools.demo import Traffic
from tests.support import (
    WorkerProcess,
    free_port,
    http_get,
    http_json,
    metric_sum,
    parse_metrics,
    settings_for,
    unique_env,
)

DAY = 86400.0


def backlog(n: int, days: float, seed: int = 1) -> list[dict]:
    """About ``n`` demo events over the last ``days`` of event time, in time order."""
    now = time.time()
    traffic = Traffic(seed=seed, rate=n / (days * DAY) * 1.6, start=now - days * DAY)
    out = []
    progress = Progress(int(days * 24), "simulating", "hours")
    for hour in range(1, int(days * 24) + 1):
        for event in traffic.due(now - days * DAY + hour * 3600):
            if event["type"] != "_lease":
                out.append({k: v for k, v in event.items() if not k.startswith("_")})
        progress.advance()
    progress.done()
    return out[:n]


def watch(worker: WorkerProcess, settings, total: int) -> dict:
    """Poll the committed offsets until every event is committed; then the worker's
    figures (its commit gauges are maxima since start: one scrape at the end)."""
    progress = Progress(total, "worker", "events")
    started = time.monotonic()
    finish = FinishWatch(settings, settings.app_id)
    try:
        while True:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"the worker exited; log:\n{worker.log_tail()}")
            committed, done = finish.poll()
            progress.done_n = committed
            progress.advance(0)
            if done:
                break
            time.sleep(1)
    finally:
        finish.close()
    progress.done()
    seconds = (finish.changed_at or time.monotonic()) - started
    status, body = http_get(f"{worker.url}/metrics", timeout=120)
    assert status == 200, body[:300]
    metrics = parse_metrics(body.decode())
    return {
        "seconds": round(seconds, 1),
        "longest_commit_gap_s": round(metric_sum(metrics, "funnel_commit_gap_max_seconds"), 2),
        "longest_commit_s": round(metric_sum(metrics, "funnel_commit_duration_max_seconds"), 2),
        "peak_rss_mb": round(worker.peak_rss_mb()),
        "late": metric_sum(metrics, "funnel_events_late_total"),
    }


def compare_with_replay(worker: WorkerProcess, settings, docs: list[dict]) -> dict:
    from stream.tools.replay import documents, run_engine

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
        args = (settings.bucket, settings.lateness, settings.dedup_horizon)
        engine, counts = run_engine(path, load_funnels(), *args)
    offline = {d["funnel"]: d for d in documents(engine, load_funnels())}
    equal = {
        name: http_json(f"{worker.url}/api/funnels/{name}?window=all", timeout=120) == doc
        for name, doc in offline.items()
    }
    return {"replay_late": counts["late"], "api_equals_replay": equal}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=12)
    args = parser.parse_args(argv)
    env = {**unique_env(dict(os.environ)), "FUNNEL_LOG_LEVEL": "warning"}
    settings = settings_for(env)
    env["FUNNEL_RUN_DIR"] = str(settings.run_dir)  # where the worker's log goes
    up = subprocess.run([sys.executable, "-m", "stream", "stack", "up"], env=env)
    if up.returncode != 0:
        return up.returncode
    asyncio.run(Stack(settings).create_topics())
    docs = backlog(args.events, args.days)
    asyncio.run(produce(settings, docs))
    worker = WorkerProcess(env, free_port(), name="backlog").start(ready_timeout=120)
    try:
        figures = watch(worker, settings, len(docs))
        figures.update(compare_with_replay(worker, settings, docs))
    finally:
        worker.stop(60)
    result = {
        "events": len(docs),
        "days": args.days,
        "types": sorted({d["type"] for d in docs}),
        "events_per_s": round(len(docs) / figures["seconds"]),
        **figures,
    }
    print(json.dumps(result, indent=2))
    write_result("backlog", result)
    return 0 if all(result["api_equals_replay"].values()) and not result["late"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

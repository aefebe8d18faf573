"""Recovery: how long a restarted worker takes to answer again with N journeys in its tables.

    python -m bench.recovery [--journeys 100000] [--compare]

Uses the local stack (`funnel stack up`). Sends N visits of N new visitors
(N journeys, N de-dup ids) to fresh topics, lets one worker count them all,
stops it, and starts a new worker with the same app id: its tables come back
from their changelog topics (`memory://` store, read in bulk). Figures: the
time from the new worker's start to /health/ready and to the API answering N
visits, and its memory then; the state cost: the first worker's memory with N
journeys less its memory idle, and the bytes of the changelog topics on the
broker's disk, also per 1M journeys. ``--compare`` restarts a third worker
with Faust's own changelog reader (``FUNNEL_RECOVERY_BULK_S=0``) on the same
changelogs, for the ratio. Results: bench/results/recovery.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import orjson

from bench.common import RESULTS, write_result
from bench.profile import Profiler
from bench.scale import cpu_s, produce, rss_mb
from stream.ops.stack import Stack
from tests.support import REPO, WorkerProcess, free_port, http_get, http_json, settings_for


def visits(n: int) -> list[dict]:
    now = time.time()
    return [
        {
            "event_id": f"r{i}",
            "type": "visit",
            "occurred_at": datetime.fromtimestamp(now - 300 + 300 * i / n, UTC).isoformat(),
            "visitor_id": f"v{i}",
            "channel": ("search", "social", "email", "direct", "paid")[i % 5],
        }
        for i in range(n)
    ]


def counted(url: str) -> int:
    try:
        status, body = http_get(f"{url}/api/funnels/shop?window=all")
    except OSError:  # not listening yet
        return -1
    return orjson.loads(body)["steps"][0]["reached"] if status == 200 else -1


def is_ready(url: str) -> bool:
    try:
        return http_get(f"{url}/health/ready", timeout=1.0)[0] == 200
    except OSError:
        return False


def wait_count(url: str, n: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if counted(url) == n:
            return time.monotonic()
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not count {n} visits in {timeout:.0f}s")


def changelog_bytes(settings, app_id: str) -> int:
    """Bytes of the app's changelog topics in the local broker's data directory
    (one folder per topic partition, named topic-partition): blocks in use, as
    Kafka's index files are sparse files of their full size."""
    data = settings.run_dir / "kafka" / "data"
    return sum(
        f.stat().st_blocks * 512
        for d in data.glob(f"{app_id}-*-changelog-*")
        for f in d.iterdir()
        if f.is_file()
    )


def restart(env: dict, n: int, profile: str | None = None) -> dict:
    """A new worker with the same app id: time to ready and to answering all ``n``
    visits, its CPU time at ready and its memory once it answered."""
    second = WorkerProcess(env, free_port(), name="recovery-second")
    started = time.monotonic()
    second.start_process()
    profiler = Profiler(second.proc.pid, RESULTS / f"{profile}.txt") if profile else None
    try:
        while not is_ready(second.url):
            if second.proc.poll() is not None:
                raise RuntimeError(f"worker exited; log:\n{second.log_tail()}")
            time.sleep(0.1)
        ready = time.monotonic() - started
        ready_cpu = cpu_s(second.proc.pid)
        answered = wait_count(second.url, n, 900) - started
        hotspots = profiler.stop() if profiler else None
        metrics = http_json(f"{second.url}/api/funnels")  # still serving after recovery
        assert metrics["funnels"], metrics
        recovered_mb = rss_mb(second.proc.pid)
        recovered_peak_mb = rss_mb(second.proc.pid, "VmHWM")
    finally:
        second.stop(60)
    return {
        "ready_s": round(ready, 2),
        "answers_all_s": round(answered, 2),
        # Near ready_s: recovery is CPU-bound in the worker (not waiting on the broker).
        "ready_cpu_s": ready_cpu,
        "recovered_rss_mb": recovered_mb,
        # The pod's memory limit must hold this, not only what the state takes.
        "recovered_peak_rss_mb": recovered_peak_mb,
        "profile": hotspots,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journeys", type=int, default=100_000)
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="record the restarted worker's recovery with py-spy into bench/results/NAME.*",
    )
    parser.add_argument(
        "--name", default="recovery", help="write the figures to bench/results/NAME.json"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="restart a third worker with Faust's own changelog reader (FUNNEL_RECOVERY_BULK_S=0)",
    )
    args = parser.parse_args(argv)
    n = args.journeys
    tag = uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        "FUNNEL_TOPIC_PREFIX": f"rec{tag}.",
        "FUNNEL_APP_ID": f"bench-recovery-{tag}",
        "FUNNEL_LOG_LEVEL": "warning",
    }
    settings = settings_for(env)
    env["FUNNEL_RUN_DIR"] = str(settings.run_dir)
    up = subprocess.run([sys.executable, "-m", "stream", "stack", "up"], env=env, cwd=REPO)
    if up.returncode != 0:
        return up.returncode
    asyncio.run(Stack(settings).create_topics())
    first = WorkerProcess(env, free_port(), name="recovery-first").start(120)
    try:
        time.sleep(3)
        idle_mb = rss_mb(first.proc.pid)
        asyncio.run(produce(settings, visits(n)))
        started = time.monotonic()
        wait_count(first.url, n, 3600)
        print(f"first worker counted {n} visits in {time.monotonic() - started:.1f}s")
        time.sleep(3)  # a commit interval or two: everything counted is committed
        full_mb = rss_mb(first.proc.pid)
        peak_mb = rss_mb(first.proc.pid, "VmHWM")
    finally:
        first.stop(60)
    disk = changelog_bytes(settings, settings.app_id)
    bulk = restart(env, n, args.profile)
    faust_reader = restart({**env, "FUNNEL_RECOVERY_BULK_S": "0"}, n) if args.compare else None
    figures = {
        "journeys": n,
        "dedup_ids": n,
        **{k: v for k, v in bulk.items() if k != "profile"},
        "store": settings.store,
        "worker_rss_idle_mb": idle_mb,
        "worker_rss_mb": full_mb,
        "worker_peak_rss_mb": peak_mb,
        "memory_per_1m_journeys_mb": round((full_mb - idle_mb) * 1_000_000 / n),
        "changelog_disk_mb": round(disk / 2**20, 1),
        "changelog_disk_per_1m_journeys_mb": round(disk / 2**20 * 1_000_000 / n),
    }
    if faust_reader:
        figures["faust_reader"] = faust_reader
        figures["answers_all_vs_faust_reader"] = round(
            bulk["answers_all_s"] / faust_reader["answers_all_s"], 3
        )
    if bulk.get("profile"):
        figures["profile"] = bulk["profile"]
    path = write_result(args.profile or args.name, figures)
    for name, run in (("bulk reader", bulk), ("Faust's reader", faust_reader)):
        if run:
            print(
                f"restarted worker ({name}): ready after {run['ready_s']:.1f}s, answered all "
                f"{n} after {run['answers_all_s']:.1f}s, {run['recovered_rss_mb']:.0f} MB "
                f"(peak {run['recovered_peak_rss_mb']:.0f} MB)"
            )
    print(
        f"state: {full_mb - idle_mb:.0f} MB of worker memory and {disk / 2**20:.0f} MB of "
        f"changelogs on disk for {n} journeys"
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

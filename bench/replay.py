"""The engine alone, without Kafka: `funnel replay` of the bench log, several runs.

    python -m bench.replay [--events 200000] [--runs 5] [--file PATH] [--name NAME]

The same mix of events as `bench/scale.py` (its ``events``), written once to
``--file`` (kept, and read again if it exists, so two checkouts can be timed on
the very same events: run the old code from a worktree with the same
``--file``). Each run is `funnel replay`'s ``run_engine`` over the file in this
process; the best and median CPU seconds of the runs give events/s, and the
counters' digest says whether two versions counted the same. CPU time rather
than wall time, and several runs, because this 2-core machine's neighbours
move a single wall-clock run by 10-20 %. Results: bench/results/NAME.json
(default ``replay``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.common import counters_digest, write_result
from stream.config import Settings
from stream.core.funnels import load_funnels
from stream.progress import Progress
from stream.tools.replay import run_engine


def write_log(path: Path, n: int) -> None:
    from bench.scale import events

    path.write_bytes(b"".join(orjson.dumps(doc) + b"\n" for doc in events(n)))


def timed_runs(path: Path, runs: int) -> tuple[list[float], str, dict]:
    """CPU seconds of each run, the counters' digest and the outcome counts."""
    settings = Settings.from_env()
    funnels = load_funnels(settings.funnels or None)
    args = (settings.bucket, settings.lateness, settings.dedup_horizon)
    took, digest, counts = [], "", {}
    progress = Progress(runs, "replay runs", "runs")
    for _ in range(runs):
        began = time.process_time()
        engine, counts = run_engine(path, funnels, *args, progress=False)
        took.append(time.process_time() - began)
        digest = counters_digest(engine.counters)
        progress.advance()
    progress.done()
    return took, digest, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--file", type=Path, help="the events file (written if missing)")
    parser.add_argument("--name", default="replay")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or Path(tmp) / "bench.jsonl"
        if not path.exists():
            write_log(path, args.events)
        took, digest, counts = timed_runs(path, args.runs)
    n = sum(counts.values())
    best, median = n / min(took), n / statistics.median(took)
    figures = {
        "events": n,
        "runs": args.runs,
        "cpu_s": [round(t, 2) for t in took],
        "best_events_per_s": round(best),
        "median_events_per_s": round(median),
        "outcomes": counts,
        "counters_sha256": digest,
    }
    path_out = write_result(args.name, figures)
    print(f"funnel replay, {n} events: best {best:,.0f} events/s, median {median:,.0f} (CPU)")
    print(f"counters {digest[:16]}  results: {path_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

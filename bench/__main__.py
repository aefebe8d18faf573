"""Every benchmark in one run, with a table of the figures against the targets.

    python -m bench            (make bench: 1M events, 1M journeys; about 40 minutes)
    python -m bench --quick    (make bench-quick: 50k events, 50k journeys; about 6 minutes)

Uses the local stack (`funnel stack up`, started if needed). In order:

1. throughput (bench/scale.py): a raw aiokafka consumer (read + decode), one
   worker, two workers and the Quix Streams peer, on the same topics;
2. end-to-end latency (bench/latency.py) at 1,000 and 5,000 events/s;
3. state cost and recovery (bench/recovery.py): memory and disk per 1M
   journeys, and how long a restarted worker takes to rebuild them.

Each step writes its JSON under bench/results/ (bench/results/quick/ for
--quick); the summary is bench/results/summary.json, printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

TARGETS = {
    "worker_vs_raw": 0.5,
    "worker_vs_peer": 1.0,
    "p99_at_5000_s": 1.0,
    "recovery_1m_journeys_s": 30.0,
}


def summarise(results: Path) -> dict:
    """The headline figures, from the step files, each beside its target."""
    scale = json.loads((results / "scale-with-peer.json").read_text())
    latency = json.loads((results / "latency.json").read_text())
    recovery = json.loads((results / "recovery.json").read_text())
    one, *more = scale["workers"]
    at = {run["rate"]: run for run in latency["runs"]}
    return {
        "git": scale["machine"]["git"],
        "events": scale["events"],
        "raw_events_per_s": scale["raw_consumer"]["events_per_s"],
        "worker_events_per_s": one["events_per_s"],
        "worker_vs_raw": one["ratio_vs_raw"],
        "peer_events_per_s": scale["quix_streams_peer"]["events_per_s"],
        "worker_vs_peer": one["ratio_vs_quix_peer"],
        "two_workers_speedup": more[0]["speedup_vs_first"] if more else None,
        "latency": {
            rate: {k: run[k] for k in ("p50_s", "p99_s", "max_s", "consumed_per_s")}
            for rate, run in at.items()
        },
        "p99_at_5000_s": at[5000]["p99_s"] if 5000 in at else None,
        "journeys": recovery["journeys"],
        "recovery_ready_s": recovery["ready_s"],
        "recovery_answers_all_s": recovery["answers_all_s"],
        # Only a full run measures it: recovery has a fixed part (a few seconds of
        # start-up and group join), so scaling a small run would mislead. The
        # target counts until the API answers exactly again, not until ready.
        "recovery_1m_journeys_s": recovery["answers_all_s"]
        if recovery["journeys"] >= 1_000_000
        else None,
        "memory_per_1m_journeys_mb": recovery["memory_per_1m_journeys_mb"],
        "changelog_disk_per_1m_journeys_mb": recovery["changelog_disk_per_1m_journeys_mb"],
        "targets": TARGETS,
    }


def table(s: dict) -> str:
    def met(name: str, value: float | None, higher: bool) -> str:
        if value is None:
            return "not measured"
        ok = value >= TARGETS[name] if higher else value <= TARGETS[name]
        return "met" if ok else "missed"

    rows = [
        ("raw consumer, events/s", f"{s['raw_events_per_s']:,}", ""),
        ("one worker, events/s", f"{s['worker_events_per_s']:,}", ""),
        (
            "one worker / raw consumer",
            s["worker_vs_raw"],
            "0.5: " + met("worker_vs_raw", s["worker_vs_raw"], True),
        ),
        ("Quix Streams peer, events/s", f"{s['peer_events_per_s']:,}", ""),
        (
            "one worker / peer",
            s["worker_vs_peer"],
            "1.0: " + met("worker_vs_peer", s["worker_vs_peer"], True),
        ),
        ("two workers / one", s["two_workers_speedup"], ""),
    ]
    for rate, run in s["latency"].items():
        figures = f"{run['p50_s']} / {run['p99_s']} / {run['max_s']}"
        rows.append(
            (
                f"latency at {int(rate):,}/s, p50 / p99 / max s",
                f"{figures} (consumed {run['consumed_per_s']:,}/s)",
                "p99 <= 1 s: " + met("p99_at_5000_s", s["p99_at_5000_s"], False)
                if int(rate) == 5000
                else "",
            )
        )
    rows += [
        (
            f"recovery of {s['journeys']:,} journeys: ready / answering all, s",
            f"{s['recovery_ready_s']} / {s.get('recovery_answers_all_s')}",
            "",
        ),
        (
            "recovery of 1M journeys (answering all), s",
            s["recovery_1m_journeys_s"] or "(full run only)",
            "30 s: " + met("recovery_1m_journeys_s", s["recovery_1m_journeys_s"], False),
        ),
        ("worker memory per 1M journeys, MB", f"{s['memory_per_1m_journeys_mb']:,}", ""),
        ("changelog disk per 1M journeys, MB", f"{s['changelog_disk_per_1m_journeys_mb']:,}", ""),
    ]
    lines = ["| figure | value | target |", "|---|---:|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k events and journeys")
    parser.add_argument("--summary-only", action="store_true", help="re-print from the files")
    args = parser.parse_args(argv)
    if args.quick:
        os.environ["FUNNEL_BENCH_RESULTS"] = str(Path(__file__).parent / "results" / "quick")
    from bench import latency, recovery, scale
    from bench.common import RESULTS, write_result

    events = 50_000 if args.quick else 1_000_000
    if not args.summary_only:
        steps = [
            ("throughput", scale.main, ["--events", str(events), "--workers", "1,2", "--peer"]),
            (
                "latency",
                latency.main,
                ["--rates", "1000,5000", "--seconds", "20" if args.quick else "30"],
            ),
            ("recovery", recovery.main, ["--journeys", str(events)]),
        ]
        for i, (name, step, step_args) in enumerate(steps, 1):
            print(f"\n== bench {i}/{len(steps)}: {name} {' '.join(step_args)}", flush=True)
            if step(step_args) != 0:
                print(f"bench: {name} failed", file=sys.stderr)
                return 1
    summary = summarise(RESULTS)
    path = write_result("summary", summary)
    print("\n" + table(summary))
    print(f"\nsummary: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

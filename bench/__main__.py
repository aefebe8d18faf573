"""Every benchmark in one run, with a table of the figures against the targets.

    python -m bench            (make bench: 1M events, 1M journeys; about 40 minutes)
    python -m bench --quick    (make bench-quick: 50k events, 50k journeys; about 6 minutes)

Uses the local stack (`funnel stack up`, started if needed). In order:

1. throughput (bench/scale.py): a raw aiokafka consumer (read + decode), the
   engine alone (`funnel replay`), one worker, two workers and the two Quix
   Streams peers (our engine inside Quix; per-step counting only), on the
   same topics;
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

# Issue #22's targets, each a ratio in one run or a limit.
TARGETS = {
    "engine_vs_raw": 0.2,
    "worker_vs_replay": 0.5,
    "worker_vs_same_job_peer": 1.0,
    "p99_at_5000_s": 1.0,
    "recovery_1m_journeys_s": 30.0,
    "memory_per_1m_journeys_mb": 600,
    "two_workers_speedup": 1.6,
}


def figure(doc: dict, *path: str) -> object:
    """``doc[path[0]][path[1]]...``, or None where a key is missing."""
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def number(value: float | None) -> str:
    return "not measured" if value is None else f"{value:,}"


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
        # Figures a step file of an older bench lacks are None ("not measured").
        "replay_events_per_s": figure(scale, "replay", "events_per_s"),
        "engine_vs_raw": figure(scale, "replay", "ratio_vs_raw"),
        "worker_vs_replay": one.get("ratio_vs_replay"),
        "same_job_peer_events_per_s": figure(scale, "quix_same_job_peer", "events_per_s"),
        "same_job_peer_exact": figure(scale, "quix_same_job_peer", "same_counters_as_replay"),
        "worker_vs_same_job_peer": one.get("ratio_vs_quix_same_job_peer"),
        "count_only_peer_events_per_s": figure(scale, "quix_count_only_peer", "events_per_s"),
        "worker_vs_count_only_peer": one.get("ratio_vs_quix_count_only_peer"),
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

    def target(name: str, higher: bool) -> str:
        return f"{TARGETS[name]}: {met(name, s[name], higher)}"

    rows = [
        ("raw consumer, events/s", f"{s['raw_events_per_s']:,}", ""),
        ("one worker, events/s", f"{s['worker_events_per_s']:,}", ""),
        ("one worker / raw consumer", s["worker_vs_raw"], ""),
        ("funnel replay (the engine), events/s", number(s["replay_events_per_s"]), ""),
        ("replay / raw consumer", number(s["engine_vs_raw"]), target("engine_vs_raw", True)),
        ("one worker / replay", number(s["worker_vs_replay"]), target("worker_vs_replay", True)),
        (
            "Quix same-job peer (our engine), events/s",
            number(s["same_job_peer_events_per_s"]),
            "counters equal replay's: "
            + {True: "yes", False: "NO", None: "not checked"}[s["same_job_peer_exact"]],
        ),
        (
            "one worker / same-job peer",
            number(s["worker_vs_same_job_peer"]),
            target("worker_vs_same_job_peer", True),
        ),
        ("Quix count-only peer, events/s", number(s["count_only_peer_events_per_s"]), ""),
        ("one worker / count-only peer", number(s["worker_vs_count_only_peer"]), ""),
        ("two workers / one", s["two_workers_speedup"], target("two_workers_speedup", True)),
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
        (
            "worker memory per 1M journeys, MB",
            f"{s['memory_per_1m_journeys_mb']:,}",
            target("memory_per_1m_journeys_mb", False),
        ),
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

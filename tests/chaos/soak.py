"""Run chaos scenarios many times: a flake is a bug to find, and a loop shows its rate.

    python -m tests.chaos.soak -k join_and_leave -n 50      (make soak SCENARIO=... RUNS=...)

Starts the test stack once (kept between runs), runs ``pytest tests/chaos -k
SCENARIO`` N times (slow-marked scenarios included), and after each run reads
the scenario rows the suite wrote (.run/chaos-results.json); each run's output
goes to .run/soak-logs/run-N.txt, and a failed run keeps its pytest temp dir
(the input it sent) in .run/soak-logs/run-N/; the workers' logs are in the
stack's run dir (FUNNEL_RUN_DIR), named by scenario, app id and port. Prints runs,
passed, lost and double-counted events, crashes restarted and the worst
recovery time per scenario; writes them with every run's rows to
.run/soak-results.json. Exit status 1 if any run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from tests.chaos.harness import RESULTS_FILE
from tests.support import REPO, TEST_ENV

SUMMARY_FILE = REPO / ".run" / "soak-results.json"
LOG_DIR = REPO / ".run" / "soak-logs"


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per scenario: runs, passed, lost, double-counted, restarts, worst recovery."""
    out: dict[str, dict] = {}
    for run in runs:
        for row in run["rows"]:
            s = out.setdefault(
                row["scenario"],
                {"runs": 0, "exact": 0, "lost": 0, "duplicated": 0, "restarts": 0,
                 "worst_recovery_s": 0.0},
            )  # fmt: skip
            s["runs"] += 1
            s["exact"] += int(row["lost"] == 0 and row["duplicated"] == 0 and run["rc"] == 0)
            s["lost"] += row["lost"]
            s["duplicated"] += row["duplicated"]
            s["restarts"] += row["restarts"]
            recovery = row["recovery_s"]
            if recovery == recovery:  # not NaN (never exact)
                s["worst_recovery_s"] = max(s["worst_recovery_s"], round(recovery, 1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="scenario", required=True, help="pytest -k expression")
    parser.add_argument("-n", dest="runs", type=int, default=10)
    args = parser.parse_args(argv)
    env = {**os.environ, **TEST_ENV, "FUNNEL_KEEP_STACK": "1"}
    up = subprocess.run([sys.executable, "-m", "stream", "stack", "up"], env=env, cwd=REPO)
    if up.returncode != 0:
        return up.returncode
    runs = []
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for i in range(1, args.runs + 1):
        RESULTS_FILE.unlink(missing_ok=True)
        started = time.monotonic()
        basetemp = LOG_DIR / f"run-{i}"
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
        command += [f"--basetemp={basetemp}"]
        command += ["tests/chaos/test_chaos.py", "-k", args.scenario, "-m", "integration"]
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
        rc = done.returncode
        log = LOG_DIR / f"run-{i}.txt"
        log.write_text(done.stdout + done.stderr)
        if rc == 0:  # a failed run keeps its input under basetemp
            shutil.rmtree(basetemp, ignore_errors=True)
        rows = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else []
        seconds = round(time.monotonic() - started)
        runs.append({"run": i, "rc": rc, "seconds": seconds, "rows": rows, "log": str(log)})
        if rc == 5:
            print(f"no scenario matched -k {args.scenario!r}")
            return 1
        if not rows:
            tail = "\n".join(done.stdout.splitlines()[-15:])
            print(f"run {i}/{args.runs}: rc {rc}, failed before its figures; {log}:\n{tail}")
        summary = summarise(runs)
        line = ", ".join(f"{k}: {v['exact']}/{v['runs']}" for k, v in summary.items())
        print(f"run {i}/{args.runs}: rc {rc}, {runs[-1]['seconds']} s; exact so far {line}",
              flush=True)  # fmt: skip
    summary = summarise(runs)
    SUMMARY_FILE.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY_FILE.write_text(json.dumps({"scenario": args.scenario, "summary": summary,
                                        "runs": runs}, indent=1))  # fmt: skip
    print(json.dumps(summary, indent=1))
    print(f"runs {len(runs)}, passed {sum(r['rc'] == 0 for r in runs)}; {SUMMARY_FILE}")
    return 0 if all(r["rc"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Sample a running worker with py-spy and summarise where its time goes.

Used by `python -m bench.scale --profile`: the one-worker run is recorded
while it processes the input, and the summary (self and total share per
function, from py-spy's collapsed stacks) is kept next to the throughput
figures so a change's before/after can be compared function by function.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


class Profiler:
    """`py-spy record` on one process; stop() ends it and returns the summary."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.out = out
        self.proc = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
            + ["--nolineno", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')[-2000:]}")
        return summarise(self.out.read_text().splitlines())


def frame_name(frame: str) -> str:
    """'f (stream/x.py)' -> 'stream/x.py:f', site-packages trimmed."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    if "site-packages/" in where:
        where = where.split("site-packages/", 1)[1]
    elif "/stream/" in where:
        where = "stream/" + where.split("/stream/", 1)[1]
    return f"{where}:{name}"


def summarise(lines: list[str], top: int = 30) -> dict:
    """Self and total share of the samples per function, from collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    idle = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";")]
        samples += n
        if frames[-1].endswith("Selector.select"):  # an event loop waiting for I/O
            idle += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n

    def share(counter: Counter[str]) -> list[list]:
        return [[f, round(100 * n / samples, 1)] for f, n in counter.most_common(top)]

    return {
        "samples": samples,
        "loop_waiting_pct": round(100 * idle / samples, 1) if samples else 0.0,
        "self_pct": share(own),
        "total_pct": share(total),
    }

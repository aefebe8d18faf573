"""`funnel replay`: the same engine offline over an events file (DESIGN.md section 5).

For backfills and for checking the stream: one JSON event per line in arrival
order, de-duplicated and checked for lateness exactly as the worker does, and
summarised in the section 5 shape for the whole range (or --from/--to).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from stream.core import dedup, money
from stream.core.engine import Engine
from stream.core.events import Rejection, parse_timestamp
from stream.core.funnels import Funnel
from stream.core.summary import summarise
from stream.tools.files import read_events


def replay(
    path: Path,
    funnels: list[Funnel],
    bucket: int,
    lateness: float,
    horizon: float,
    start: str | None = None,
    end: str | None = None,
    view: str = "period",
    breakdown: str | None = None,
    err: TextIO | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    err = err or sys.stderr
    engine = Engine(funnels, bucket=bucket, lateness=lateness)
    seen: dict[str, float] = {}
    counts = {"valid": 0, "invalid": 0, "duplicate": 0, "late": 0}
    for lineno, _, result in read_events(path, progress=progress):
        if isinstance(result, Rejection):
            counts["invalid"] += 1
            print(f"{path}:{lineno}: {result.reason}: {result.message}", file=err)
            continue
        if dedup.is_duplicate(seen.get(result.event_id), result.ts, horizon):
            counts["duplicate"] += 1
            continue
        seen[result.event_id] = result.ts
        if not engine.process(result):
            counts["late"] += 1
            print(
                f"{path}:{lineno}: late: event time {result.occurred_at.isoformat()} is more "
                f"than {lateness:g}s behind the newest event seen",
                file=err,
            )
            continue
        counts["valid"] += 1
    lo = parse_timestamp(start, "--from") if start else float("-inf")
    hi = parse_timestamp(end, "--to") if end else float("inf")
    spend = money.spend_in(lambda a, b: engine.sums("_spend", a, b), lo, hi)
    docs = [
        summarise(f, engine.sums(f.name, lo, hi, view), "all", start, end, view, breakdown, spend)
        for f in funnels
    ]
    return {"funnels": docs, "events": counts}

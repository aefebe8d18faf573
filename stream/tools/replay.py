"""`funnel replay`: the same engine offline over an events file (DESIGN.md section 5).

For backfills and for checking the stream: one JSON event per line in arrival
order, de-duplicated and checked for lateness exactly as the worker does, and
summarised in the section 5 shape for the whole range (or --from/--to).

Each event type of the file is one source of the watermark (as each input
topic-partition is in the stream): a type holds the watermark back from the
start of the file until its last line, so a file that lists one type's history
before another's gives the same numbers as one sorted by time.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

import msgspec

from stream.core import dedup, money
from stream.core.engine import Engine
from stream.core.events import Rejection, parse_timestamp
from stream.core.funnels import Funnel
from stream.core.summary import summarise
from stream.core.watermark import SourceMarks
from stream.tools.files import read_events


class _Typed(msgspec.Struct):
    """A line's ``type`` alone: the other fields are skipped, not built."""

    type: Any = None


_typed = msgspec.json.Decoder(_Typed)


def last_lines(path: Path) -> dict[str, int]:
    """The last line of each event type in the file (a cheap pass: no validation)."""
    last: dict[str, int] = {}
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                kind = _typed.decode(line).type
            except msgspec.DecodeError:  # not a JSON object (validation names it)
                continue
            if isinstance(kind, str):
                last[kind] = lineno
    return last


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
    engine, counts = run_engine(path, funnels, bucket, lateness, horizon, err, progress)
    docs = documents(engine, funnels, start, end, view, breakdown)
    return {"funnels": docs, "events": counts}


def run_engine(
    path: Path,
    funnels: list[Funnel],
    bucket: int,
    lateness: float,
    horizon: float,
    err: TextIO | None = None,
    progress: bool = True,
) -> tuple[Engine, dict[str, int]]:
    """The engine after every event of the file, and how many were valid, invalid,
    duplicate and late."""
    err = err or sys.stderr
    engine = Engine(funnels, bucket=bucket, lateness=lateness)
    seen: dict[str, float] = {}
    counts = {"valid": 0, "invalid": 0, "duplicate": 0, "late": 0}
    last = last_lines(path)
    ends = sorted(last.values())  # the lines after which a type is finished
    finished: dict[str, int] = {}
    marks = SourceMarks()
    for lineno, _, result in read_events(path, progress=progress):
        if isinstance(result, Rejection):
            counts["invalid"] += 1
            print(f"{path}:{lineno}: {result.reason}: {result.message}", file=err)
            continue
        outcome = apply(engine, seen, horizon, result)
        counts[outcome] += 1
        if outcome == "late":
            print(f"{path}:{lineno}: late: {late_message(engine, result)}", file=err)
        moved = marks.deliver(result.type, result.ts)
        if ends and ends[0] <= lineno:  # a type's last line passed
            finished = {kind: 0 for kind, n in last.items() if n <= lineno}
            ends = [n for n in ends if n > lineno]
            moved = True
        if moved:  # else the watermark cannot change
            engine.advance(marks.advance(last, finished))
    return engine, counts


def documents(
    engine: Engine,
    funnels: list[Funnel],
    start: str | None = None,
    end: str | None = None,
    view: str = "period",
    breakdown: str | None = None,
) -> list[dict[str, Any]]:
    """The section-5 document of every funnel over [start, end) (RFC 3339; None: all)."""
    lo = parse_timestamp(start, "--from") if start else float("-inf")
    hi = parse_timestamp(end, "--to") if end else float("inf")
    spend = money.spend_in(lambda a, b: engine.sums("_spend", a, b), lo, hi)
    return [
        summarise(f, engine.sums(f.name, lo, hi, view), "all", start, end, view, breakdown, spend)
        for f in funnels
    ]


def apply(engine: Engine, seen: dict[str, float], horizon: float, event: Any) -> str:
    """De-dup and count one valid event as the worker does: valid, duplicate or late."""
    if dedup.is_duplicate(seen.get(event.event_id), event.ts, horizon):
        return "duplicate"
    seen[event.event_id] = event.ts
    return "valid" if engine.process(event) else "late"


def late_message(engine: Engine, event: Any) -> str:
    """Why an event is late: how far behind the watermark, and the limit of its funnels."""
    from datetime import UTC, datetime

    mark = datetime.fromtimestamp(engine.watermark, tz=UTC).isoformat()
    return (
        f"event time {event.occurred_at.isoformat()} is older than the watermark {mark} "
        f"minus the window of its funnel ({', '.join(engine.relevant_funnels(event))}) "
        f"and the allowed lateness of {engine.lateness:g}s, or past retention"
    )

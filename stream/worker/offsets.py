"""Every input offset applied once per batch, whatever Faust delivers.

The adapter over faust_fixes/missing_offsets.py: plan each partition's
delivered offsets against the next offset expected, skip redeliveries, read
holes back from the broker, and let Faust's committed offsets move past the
holes once the batch that applied them is written.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import faust
from faust.types import TP

from stream.faust_fixes import missing_offsets
from stream.faust_fixes.fetch_gaps import add_handled_gap
from stream.faust_fixes.known_empty import EMPTY
from stream.faust_fixes.missing_offsets import Refetcher
from stream.worker.metrics import REDELIVERED, REFETCHED

log = logging.getLogger("stream.worker")

Hole = tuple[TP, int, int]


def refetched_message(record: Any) -> Any:
    """An aiokafka record read back by the Refetcher, shaped like a Faust message."""
    return SimpleNamespace(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=list(record.headers or ()),
        tp=TP(record.topic, record.partition),
    )


async def continuous(
    refetcher: Refetcher, batch: list, known: Callable[[TP], int | None]
) -> tuple[list, dict[TP, int], list[Hole]]:
    """The batch's messages to apply: each offset once, holes read back.

    ``known(tp)`` is the next offset expected for a partition, or None where
    there is no history (then: where the consumer group resumes). Also
    returns the next offsets and the holes, for ``mark_handled`` once the
    batch is written.
    """
    by_tp: dict[TP, list] = defaultdict(list)
    for event in batch:
        by_tp[event.message.tp].append(event.message)
    out, next_offsets, holes = [], {}, []
    for tp, msgs in by_tp.items():
        expected = known(tp)
        if expected is None:
            expected = await refetcher.start(tp.topic, tp.partition)
        plan = missing_offsets.plan([m.offset for m in msgs], expected)
        out += [m for m in msgs if m.offset in plan.fresh]
        if plan.redelivered:
            REDELIVERED.labels(topic=tp.topic).inc(len(plan.redelivered))
        for first, last in plan.holes:
            out += await read_hole(refetcher, tp, first, last)
            holes.append((tp, first, last))
        if plan.next_expected is not None:
            next_offsets[tp] = plan.next_expected
    # Fresh messages could repeat within a batch: keep one of each offset.
    unique = {(m.topic, m.partition, m.offset): m for m in out}
    ordered = sorted(unique.values(), key=lambda m: (m.topic, m.partition, m.offset))
    return ordered, next_offsets, holes


async def read_hole(refetcher: Refetcher, tp: TP, first: int, last: int) -> list:
    """The records of a hole, read back from the broker but for the offsets the
    fetcher saw hold none (transaction markers, aborted records: known_empty.py)."""
    records = []
    for a, b in EMPTY.unknown(tp.topic, tp.partition, first, last):
        records += await refetcher.read(tp.topic, tp.partition, a, b)
    if records:
        REFETCHED.labels(topic=tp.topic).inc(len(records))
        log.warning(
            "events re-read that Faust did not deliver",
            extra={"tp": str(tp), "from": first, "to": last, "count": len(records)},
        )
    return [refetched_message(record) for record in records]


def mark_handled(app: faust.App, holes: list[Hole]) -> None:
    """Let Faust's committed offsets move past holes whose records this batch applied.

    Called with commits held, after the batch's writes, with its acks
    (transactions.ack_all): a commit can then only carry the hole together
    with the records read back from it.
    """
    for tp, first, last in holes:
        add_handled_gap(app.consumer, tp, first, last)

"""Agent ``count``: the events topic -> de-dup, funnel engines and their state.

Drops duplicate event ids (core/dedup.py: ``SeenIds`` per partition, table
``seen-events`` for their changelog) and runs the funnel engine
(core/engine.py), one engine per owned partition, persisting its changed
journeys, counters and watermark (tables ``journeys``, ``funnel-counters``,
``watermarks``) in the same transaction as the offsets; late events go to the
dead-letter topic. It also keeps distinct events per type and event-time
minute (core/event_counts.py), the event-level check of exactness.

Records come as bundles (core/bundles.py: one input partition's events and
mark for this partition, in order); single-event and mark records, as sent
before bundles, are still read. Marks are not events: each moves its
input source's mark (event time and input offset) for this partition; after
the batch the partition's watermark is the lowest mark over the sources still
to be delivered here (core/watermark.py, worker/sources.py), and the engine
expires behind it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from faust.types import TP

from stream.core import bundles, dedup, state
from stream.core.event_counts import minute_key
from stream.core.events import Rejection, decode, entity_of, occurred, slim
from stream.worker.context import Context
from stream.worker.dead_letters import (
    BUNDLE_HEADER,
    CORRECTION_HEADER,
    MARK_HEADER,
    Origin,
    header,
    late_headers,
    origin_of,
)
from stream.worker.metrics import DUPLICATES, EVENTS, LATE_TOTAL, REJECTED
from stream.worker.offsets import continuous, mark_handled
from stream.worker.partitions import engine_for, marks_for, owned_partitions, seen_for
from stream.worker.supervision import to_the_end, unless_revoked
from stream.worker.trace import trace_batch
from stream.worker.transactions import (
    ack_all,
    commits_held,
    send_in_transaction,
    write_state,
)

log = logging.getLogger("stream.worker")


@dataclass
class Applied:
    """What one batch changed, per events-topic partition, before it is written."""

    first_seen: dict[int, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    minutes: dict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    tps: dict[int, TP] = field(default_factory=dict)
    counted: Counter[tuple[str, str]] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    late_letters: list[tuple[TP, Any, Any, list]] = field(default_factory=list)
    marked: set[int] = field(default_factory=set)  # partitions whose source marks moved
    admitted: dict[int, list[Admitted]] = field(default_factory=lambda: defaultdict(list))


# Seconds the counting stage waits for a batch to fill. Bundles come in bursts, at
# each commit of the normalising stage (read_committed), and a batch of
# COUNT_BATCH bundles is some 6,000 events: below a backlog it never fills, so
# each batch waited the whole wait. At 0.2 s (the normalising stage's) the median
# produce-to-API latency at 1,000 events/s was 0.44 s, at 0.05 s 0.25-0.27 s
# (``python -m bench.latency``; docs/capacity.md), throughput unchanged.
COUNT_WITHIN = 0.05


async def run(ctx: Context, stream: faust.StreamT) -> None:
    async for batch in stream.take_events(bundles.COUNT_BATCH, within=COUNT_WITHIN):
        ctx.delivered(batch)
        await unless_revoked("count", batch, count_batch(ctx, stream, batch))
        ctx.delivered(batch)


async def count_batch(ctx: Context, stream: faust.StreamT, batch: list) -> None:
    marks = ctx.tables.marks.data
    messages, next_offsets, holes = await continuous(
        ctx.refetcher, batch, lambda tp: marks.get(state.next_offset_key(tp.partition))
    )
    applied = Applied()
    for msg in messages:
        apply_message(ctx, msg, applied)
    count_admitted(ctx, applied)
    for p in applied.tps:
        advance_watermark(ctx, p)
    async with commits_held(ctx.app):
        await to_the_end(write_and_ack(ctx, stream, batch, applied, next_offsets, holes))
    if ctx.settings.trace_offsets:
        trace_batch("count", batch, dups=sum(applied.duplicates.values()))
    for (source, kind), n in applied.counted.items():
        EVENTS.labels(topic=source, type=kind).inc(n)
    for source, n in applied.duplicates.items():
        DUPLICATES.labels(topic=source).inc(n)


def apply_message(ctx: Context, msg: Any, applied: Applied) -> None:
    """One record of the events topic: a bundle of events and marks, or (as sent
    before bundles) a single event or mark."""
    p = msg.partition
    applied.tps[p] = msg.tp
    if header(msg, BUNDLE_HEADER):
        try:
            items = bundles.decode(msg.value or b"")
        except bundles.BadBundle as exc:  # written by normalise; never expected
            rejection = Rejection("bundle", f"not a bundle: {exc}")
            REJECTED.labels(topic=msg.topic, reason="bundle").inc()
            ctx.reject_log.rejected(msg.topic, p, msg.offset, rejection)
            return
        source = origin_of(msg, offset=0)  # the bundle's input partition; offsets per item
        for item in items:
            if item.kind == bundles.MARK:
                apply_mark(ctx, p, item.value, applied)
            else:
                origin = Origin(source.topic, source.partition, item.offset)
                correction = item.kind == bundles.CORRECTION
                apply_event(ctx, msg, origin, item.value, correction, applied)
    elif header(msg, MARK_HEADER):
        apply_mark(ctx, p, msg.value, applied)
    else:
        correction = header(msg, CORRECTION_HEADER) is not None
        apply_event(ctx, msg, origin_of(msg), msg.value, correction, applied)


def apply_mark(ctx: Context, p: int, value: bytes, applied: Applied) -> None:
    """An input partition's progress (its newest event time, next offset) reached ``p``."""
    mark = orjson.loads(value)
    if marks_for(ctx, p).deliver(mark["source"], mark["ts"], mark["offset"]):
        applied.marked.add(p)


@dataclass
class Admitted:
    """An event past de-dup, waiting for its engine (``count_admitted``)."""

    msg: Any
    origin: Origin
    value: bytes
    event: Any
    correction: bool
    seen: bool  # a correction of an event counted before


def apply_event(
    ctx: Context, msg: Any, origin: Origin, value: bytes, correction: bool, applied: Applied
) -> None:
    """De-dup one event; what passes waits in ``applied.admitted`` for its engine."""
    p = msg.partition
    try:
        ev = decode(value, now=float("inf"))
    except Rejection as rejection:  # validated upstream; never expected
        REJECTED.labels(topic=origin.topic, reason=rejection.reason).inc()
        ctx.reject_log.rejected(msg.topic, p, msg.offset, rejection)
        return
    event_id = ev.event_id
    prior = applied.first_seen[p].get(event_id)
    if prior is None:
        prior = seen_for(ctx, p).get(event_id)
    seen = dedup.is_duplicate(prior, ev.ts, ctx.settings.dedup_horizon)
    if seen and not correction:
        applied.duplicates[origin.topic] += 1
        return
    applied.first_seen[p][event_id] = ev.ts  # the event's own id and time: held once
    slim(ev)  # held by its journeys from here on
    applied.admitted[p].append(Admitted(msg, origin, value, ev, correction, seen))


def count_admitted(ctx: Context, applied: Applied) -> None:
    """Each partition's admitted events through its engine in event-time order.

    The counts do not depend on the order (the oracle property tests shuffle
    their logs), and lateness is judged against the watermark of before the
    batch, so the order is free; in event-time order most events land after
    the others of their entity, where the engine only adds their own keys
    instead of recomputing the journey. Events of one entity from different
    input topics come out of order (each topic is normalised on its own):
    in 100,000 bench events in per-topic chunks of 1,000, a quarter of the
    shop events recomputed.
    """
    for p, admitted in applied.admitted.items():
        admitted.sort(key=event_time)  # stable: a correction stays after its original
        engine = engine_for(ctx, p)
        for item in admitted:
            count_event(ctx, engine, item, applied)


def event_time(item: Admitted) -> float:
    return item.event.ts


def count_event(ctx: Context, engine: Any, item: Admitted, applied: Applied) -> None:
    """One admitted event through its partition's engine: counted, or late."""
    ev, p = item.event, item.msg.partition
    if not engine.process(ev, replace=item.correction):
        for name in engine.relevant_funnels(ev):
            LATE_TOTAL.labels(funnel=name).inc()
        late = late_headers(item.origin, late_rejection(ctx, ev, engine.watermark))
        applied.late_letters.append((item.msg.tp, entity_of(ev).encode(), item.value, late))
        return
    if item.seen:  # a correction of an event counted before: not another event
        return
    topic = item.origin.topic
    applied.counted[(topic, ev.type)] += 1
    ctx.newest_event[topic] = max(ctx.newest_event.get(topic, ev.ts), ev.ts)
    applied.minutes[p][minute_key(p, ev.type, ev.ts)] += 1


def late_rejection(ctx: Context, ev: Any, watermark: float) -> Rejection:
    mark = datetime.fromtimestamp(watermark, tz=UTC).isoformat()
    return Rejection(
        "late",
        f"field `occurred_at`: {occurred(ev).isoformat()} is older than the watermark "
        f"{mark} minus the window of its funnel and the allowed lateness of "
        f"{ctx.settings.lateness:g}s (or past retention): its state may be expired",
        "occurred_at",
    )


def advance_watermark(ctx: Context, p: int) -> None:
    """Move partition ``p``'s watermark to the lowest mark of the sources still read."""
    catalog = ctx.catalog
    if not catalog.sources:
        return  # which sources exist is not known yet: hold the watermark
    watermark = marks_for(ctx, p).advance(catalog.sources, catalog.read_to)
    engine_for(ctx, p).advance(watermark)


def advance_loaded(ctx: Context) -> None:
    """After a source check: move the watermarks of the loaded engines, so a source
    that went idle lets them go without waiting for the next batch. (What moved is
    written with the partition's next batch; a restart from the older watermark
    only judges lateness more leniently.)"""
    for p in list(ctx.engines):
        advance_watermark(ctx, p)


async def write_and_ack(
    ctx: Context, stream: faust.StreamT, batch: list, applied: Applied, next_offsets: dict, holes
) -> None:
    """The batch's state written, its holes handled, its events acked, to the end
    even if the agent is cancelled meanwhile (supervision.to_the_end)."""
    await write_batch(ctx, applied, next_offsets)
    await ack_all(stream, batch)  # raises Revoked in a stale batch
    mark_handled(ctx.app, holes)  # with the acks: no await between


async def write_batch(ctx: Context, applied: Applied, next_offsets: dict[TP, int]) -> None:
    """Every state change of the batch into its partitions' open transactions."""
    app, tables = ctx.app, ctx.tables
    for p, ids in applied.first_seen.items():
        updates = {dedup.table_key(p, event_id): ts for event_id, ts in ids.items()}
        await write_state(app, tables.seen, applied.tps[p], updates, keep=not ctx.memory_store)
        seen_for(ctx, p).add(ids)
    for p, counts in applied.minutes.items():
        data = tables.events_per_minute.data
        updates = {k: data.get(k, 0) + n for k, n in counts.items()}
        await write_state(app, tables.events_per_minute, applied.tps[p], updates)
    for p, tp in applied.tps.items():
        await persist_engine(ctx, p, tp)
        if p in applied.marked:
            sources = marks_for(ctx, p).state()
            await write_state(app, tables.marks, tp, {state.sources_key(p): sources})
    for tp, offset in next_offsets.items():
        key = state.next_offset_key(tp.partition)
        if tables.marks.data.get(key) != offset:
            await write_state(app, tables.marks, tp, {key: offset})
    for source_tp, key, value, headers in applied.late_letters:
        await send_in_transaction(
            app, source_tp, ctx.settings.dead_letter_topic, key, value, headers
        )
    if time.monotonic() - ctx.last_purge > ctx.settings.dedup_purge_every:
        ctx.last_purge = time.monotonic()
        await purge_seen(ctx, ctx.settings.dedup_horizon)


async def persist_engine(ctx: Context, p: int, tp: TP) -> None:
    """The engine's changed journeys, counters and watermark, into ``tp``'s transaction."""
    app, tables = ctx.app, ctx.tables
    engine = engine_for(ctx, p)
    engine.expire()
    changes = engine.take_changes()
    journeys = state.journey_records(p, changes)
    await write_state(app, tables.journeys, tp, journeys, keep=not ctx.memory_store)
    counters = {state.counter_key(p, k): (n or None) for k, n in changes.counters.items()}
    await write_state(app, tables.counters, tp, counters)
    if changes.values:
        values = {state.values_key(p, f, d): kept for (f, d), kept in changes.values.items()}
        await write_state(app, tables.marks, tp, values)
    if tables.marks.data.get(str(p)) != engine.watermark and engine.watermark > float("-inf"):
        await write_state(app, tables.marks, tp, {str(p): engine.watermark})


async def purge_seen(ctx: Context, horizon: float) -> None:
    """Forget ids older than the horizon behind their partition's watermark."""
    # The engine's watermark is the partition's watermark over its sources
    # (restored from the watermarks table after a rebalance); -inf expires nothing.
    forgotten = 0
    for p in sorted(owned_partitions(ctx)):
        old = seen_for(ctx, p).expire(engine_for(ctx, p).watermark, horizon)
        if old:
            tp = TP(ctx.settings.events_topic, p)
            tombstones = dict.fromkeys(dedup.table_key(p, event_id) for event_id in old)
            await write_state(ctx.app, ctx.tables.seen, tp, tombstones)
            forgotten += len(old)
    if forgotten:
        log.info("dedup ids expired", extra={"count": forgotten})

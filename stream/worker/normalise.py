"""Agents ``normalise`` and ``attribute``: input topics -> the events topic.

Each reads input messages in batches, decodes and validates every message
(core/events.py), sends rejects with their original bytes to the dead-letter
topic, and re-keys valid events by entity into the internal events topic, all
inside the source partition's transaction (worker/transactions.py). Calls and
deal stages are first attributed from Redis (worker/attribution.py).

After its events, each input partition's newest event time so far goes to
every partition of the events topic as a mark (header ``mark``), in the same
transaction: progress of each source travels through the re-keying topic to
every counting partition, which takes the lowest as its watermark
(DESIGN.md section 4, "Event time").
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson
from faust.types import TP

from stream.core.events import Rejection, decode, entity_of
from stream.core.watermark import NONE, source_name
from stream.worker.context import Context
from stream.worker.dead_letters import (
    CORRECTION_HEADER,
    MARK_HEADER,
    dead_letter_headers,
    source_headers,
)
from stream.worker.metrics import REJECTED
from stream.worker.offsets import continuous, mark_handled
from stream.worker.supervision import to_the_end, unless_revoked
from stream.worker.trace import trace_batch
from stream.worker.transactions import Record, ack_all, commits_held, send_records

BATCH_SIZE = 1000
BATCH_WITHIN = 0.2

# (event bytes attributed, corrections of events sent before: same ids, filled in)
Enrich = Callable[[Context, Any, bytes, Any], Awaitable[tuple[bytes, list[bytes]]]]
Outgoing = tuple[Any, str, bytes | None, bytes, list[tuple[str, bytes]]]


async def run(ctx: Context, stream: faust.StreamT, name: str, enrich: Enrich | None) -> None:
    """The agent's loop: batches of up to BATCH_SIZE, or what came within BATCH_WITHIN s."""
    async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
        ctx.delivered(batch)
        await unless_revoked(name, batch, normalise_batch(ctx, stream, batch, enrich))
        ctx.delivered(batch)


async def normalise_batch(
    ctx: Context, stream: faust.StreamT, batch: list, enrich: Enrich | None
) -> None:
    """Validate a batch of input messages; rejects to the dead-letter topic, valid
    events (attributed by ``enrich`` where given) re-keyed to the events topic."""
    now = time.time()
    messages, next_offsets, holes = await continuous(ctx.refetcher, batch, ctx.source_next.get)
    out, newest = [], {}
    for msg in messages:
        outgoing, ts = await route(ctx, msg, enrich, now)
        out += outgoing
        if ts is not None and ts > newest.get(msg.tp, float("-inf")):
            newest[msg.tp] = ts
    marks = {tp: max(ctx.sent_marks.get(tp, NONE), newest.get(tp, NONE)) for tp in next_offsets}
    sends = by_transaction(out)
    for tp, record in mark_records(ctx, marks, next_offsets):
        sends[(tp, ctx.settings.events_topic)].append(record)
    async with commits_held(ctx.app):
        await to_the_end(send_and_ack(ctx, stream, batch, sends, holes))
    ctx.source_next.update(next_offsets)  # committed with this batch's transaction
    ctx.sent_marks.update({tp: ts for tp, ts in marks.items() if ts != NONE})
    if ctx.settings.trace_offsets:
        trace_batch("normalise", batch)


async def send_and_ack(
    ctx: Context, stream: faust.StreamT, batch: list, sends: dict, holes
) -> None:
    """The batch's records sent, its holes handled, its events acked, to the end
    even if the agent is cancelled meanwhile (supervision.to_the_end)."""
    for (source, topic), records in sends.items():
        await send_records(ctx.app, source, topic, records)
    await mark_handled(ctx.app, holes)
    await ack_all(stream, batch)


async def route(
    ctx: Context, msg: Any, enrich: Enrich | None, now: float
) -> tuple[list[Outgoing], float | None]:
    """Where one input message goes: the dead-letter topic, or the events topic by
    entity (with any corrections ``enrich`` makes); with the event time of a valid
    event."""
    raw = msg.value if msg.value is not None else b""
    try:
        ev = decode(raw, ctx.topic_type[msg.topic], now)
    except Rejection as rejection:
        REJECTED.labels(topic=msg.topic, reason=rejection.reason).inc()
        ctx.reject_log.rejected(msg.topic, msg.partition, msg.offset, rejection)
        headers = dead_letter_headers(rejection, msg.topic, msg.partition, msg.offset)
        return [(msg.tp, ctx.settings.dead_letter_topic, msg.key, raw, headers)], None
    fixes: list[bytes] = []
    if enrich is not None:
        raw, fixes = await enrich(ctx, ev, raw, msg)
    topic, headers = ctx.settings.events_topic, source_headers(msg)
    out = [(msg.tp, topic, entity_of(ev).encode(), raw, headers)]
    for fix in fixes:  # each keyed like the event it corrects
        key = entity_of(decode(fix, now=float("inf"))).encode()
        out.append((msg.tp, topic, key, fix, [*headers, (CORRECTION_HEADER, b"1")]))
    return out, ev.ts


def by_transaction(out: list[Outgoing]) -> dict[tuple[TP, str], list[Record]]:
    """The batch's outgoing records per (source partition, topic), in order."""
    sends: dict[tuple[TP, str], list[Record]] = defaultdict(list)
    for source, topic, key, value, headers in out:
        sends[(source, topic)].append((None, key, value, headers))
    return sends


def mark_records(
    ctx: Context, marks: dict[TP, float], next_offsets: dict[TP, int]
) -> list[tuple[TP, Record]]:
    """Each input partition's mark (newest event time so far, next input offset) for
    every counting partition, sent in that input partition's transaction after its events."""
    out = []
    for tp, ts in marks.items():
        source = source_name(tp.topic, tp.partition)
        mark = {"source": source, "ts": None if ts == NONE else ts, "offset": next_offsets[tp]}
        value = orjson.dumps(mark)
        for partition in range(ctx.settings.partitions):
            out.append((tp, (partition, None, value, [(MARK_HEADER, b"1")])))
    return out

"""Agents ``normalise`` and ``attribute``: input topics -> the events topic.

Each reads input messages in batches, decodes and validates every message
(core/events.py), sends rejects with their original bytes to the dead-letter
topic, and re-keys valid events by entity into the internal events topic, all
inside the source partition's transaction (worker/transactions.py). Calls and
deal stages are first attributed from Redis (worker/attribution.py).

After its events, each input partition's newest event time so far goes to
every partition of the events topic as a mark, in the same transaction:
progress of each source travels through the re-keying topic to every
counting partition, which takes the lowest as its watermark (DESIGN.md
section 4, "Event time"). A batch's events and mark from one input partition
to one counting partition travel as one record, a bundle (core/bundles.py).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson
from faust.types import TP

from stream.core import bundles
from stream.core.bundles import CORRECTION, EVENT, MARK, Item
from stream.core.events import Rejection, decode, entity_of
from stream.core.watermark import NONE, source_name
from stream.kafka.partitioning import partition_for
from stream.worker.context import Context
from stream.worker.dead_letters import bundle_headers, dead_letter_headers
from stream.worker.metrics import REJECTED
from stream.worker.offsets import continuous, mark_handled
from stream.worker.supervision import to_the_end, unless_revoked
from stream.worker.trace import trace_batch
from stream.worker.transactions import Record, ack_all, commits_held, send_records

BATCH_SIZE = 1000
BATCH_WITHIN = 0.2

# Per (event, bytes, message) of a batch: (event bytes attributed, corrections of
# events sent before: same ids, filled in)
Enrich = Callable[
    [Context, list[tuple[Any, bytes, Any]]], Awaitable[list[tuple[bytes, list[bytes]]]]
]
Outgoing = tuple[Any, str, bytes | None, bytes, list[tuple[str, bytes]]]
Routed = tuple[TP, int, Item]  # (input partition, counting partition, the event)


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
    letters, valid = [], []
    for msg in messages:
        ev, dead = checked(ctx, msg, now)
        letters += dead
        if ev is not None:
            valid.append((ev, msg.value, msg))
    sent = await enrich(ctx, valid) if enrich and valid else [(raw, []) for _, raw, _ in valid]
    routed, newest = [], {}
    for (ev, _, msg), (raw, fixes) in zip(valid, sent, strict=True):
        routed += routes(ctx, msg, ev, raw, fixes)
        if ev.ts > newest.get(msg.tp, float("-inf")):
            newest[msg.tp] = ev.ts
    marks = {tp: max(ctx.sent_marks.get(tp, NONE), newest.get(tp, NONE)) for tp in next_offsets}
    sends = by_transaction(letters)
    for key, records in bundled(ctx, routed, marks, next_offsets).items():
        sends[key] += records
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
    await ack_all(stream, batch)  # raises Revoked in a stale batch
    mark_handled(ctx.app, holes)  # with the acks: no await between


def checked(ctx: Context, msg: Any, now: float) -> tuple[Any | None, list[Outgoing]]:
    """One input message decoded and validated: its event, or its dead letter."""
    raw = msg.value if msg.value is not None else b""
    try:
        return decode(raw, ctx.topic_type[msg.topic], now), []
    except Rejection as rejection:
        REJECTED.labels(topic=msg.topic, reason=rejection.reason).inc()
        ctx.reject_log.rejected(msg.topic, msg.partition, msg.offset, rejection)
        headers = dead_letter_headers(rejection, msg.topic, msg.partition, msg.offset)
        return None, [(msg.tp, ctx.settings.dead_letter_topic, msg.key, raw, headers)]


def routes(ctx: Context, msg: Any, ev: Any, raw: bytes, fixes: list[bytes]) -> list[Routed]:
    """Where a valid event goes: the counting partition of its entity, and each
    correction ``enrich`` made to the partition of the event it corrects."""
    n = ctx.settings.partitions
    routed = [(msg.tp, partition_for(entity_of(ev).encode(), n), Item(EVENT, msg.offset, raw))]
    for fix in fixes:
        entity = entity_of(decode(fix, now=float("inf"))).encode()
        routed.append((msg.tp, partition_for(entity, n), Item(CORRECTION, msg.offset, fix)))
    return routed


def by_transaction(out: list[Outgoing]) -> dict[tuple[TP, str], list[Record]]:
    """The batch's outgoing records per (source partition, topic), in order."""
    sends: dict[tuple[TP, str], list[Record]] = defaultdict(list)
    for source, topic, key, value, headers in out:
        sends[(source, topic)].append((None, key, value, headers))
    return sends


def bundled(
    ctx: Context, routed: list[Routed], marks: dict[TP, float], next_offsets: dict[TP, int]
) -> dict[tuple[TP, str], list[Record]]:
    """Per input partition, a bundle (core/bundles.py) for every counting partition:
    its events for that partition in order, then its mark (newest event time so
    far, next input offset); sent in that input partition's transaction."""
    items: dict[TP, dict[int, list[Item]]] = defaultdict(lambda: defaultdict(list))
    for tp, partition, item in routed:
        items[tp][partition].append(item)
    for tp, ts in marks.items():
        source = source_name(tp.topic, tp.partition)
        value = {"source": source, "ts": None if ts == NONE else ts, "offset": next_offsets[tp]}
        mark = Item(MARK, next_offsets[tp], orjson.dumps(value))
        for partition in range(ctx.settings.partitions):
            items[tp][partition].append(mark)
    topic = ctx.settings.events_topic
    out: dict[tuple[TP, str], list[Record]] = {}
    for tp, by_partition in items.items():
        headers = bundle_headers(tp)
        out[(tp, topic)] = [
            (partition, None, value, headers)
            for partition in sorted(by_partition)
            for value in bundles.encode(by_partition[partition])
        ]
    return out

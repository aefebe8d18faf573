"""Every offset exactly once, whatever Faust delivers (pure planning + a thin re-fetcher).

Faust was seen to hand an agent a batch with an event missing (fetched, never
delivered) and another event twice (docs/guarantees.md, "Exactly-once and Faust"). So the
agents keep, per input partition and in the same transaction as their state,
the next offset they expect. For each batch:

- events below it were applied already: skipped (a redelivery);
- offsets between it and the batch's highest offset that were not delivered
  are holes. A hole is a transaction marker or an aborted record (no record
  for a read_committed reader), or an event Faust dropped: the holes are read
  back from the broker with a read_committed consumer, and whatever records
  come back are processed with the batch.

Events of a hole are applied out of order, which the engine allows within the
lateness, and de-duplication by event_id stays in place behind this.

Upstream: the delivery side of faust-streaming/faust#221 ("Prefetched events
cause out of order issue after rebalance") and of the buffer flush race in
``faust.transport.consumer.Consumer._drain_messages`` (faust-streaming
0.15.3); with ``concurrency > 1`` also #606 (DESIGN.md section 7).

Delete when: the chaos suite passes with ``funnel_events_refetched_total`` and
``funnel_events_redelivered_total`` at 0 without this module (the worker
counts both); the pure ``plan`` is tested in tests/unit/test_continuity.py and
a hole read back in tests/integration/test_continuity.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Plan:
    """What to do with one partition's offsets in a batch."""

    fresh: set[int] = field(default_factory=set)  # delivered offsets to apply
    redelivered: set[int] = field(default_factory=set)  # applied before: skip
    holes: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges to read back
    next_expected: int | None = None


def plan(delivered: Iterable[int], expected: int | None) -> Plan:
    """Split a partition's delivered offsets against the next offset expected.

    ``expected`` None means no history: the first delivered offset is trusted.
    """
    offsets = sorted(set(delivered))
    out = Plan()
    if not offsets:
        out.next_expected = expected
        return out
    start = offsets[0] if expected is None else expected
    for o in offsets:
        (out.fresh if o >= start else out.redelivered).add(o)
    cursor = start
    for o in sorted(out.fresh):
        if o > cursor:
            out.holes.append((cursor, o - 1))
        cursor = o + 1
    out.next_expected = max(cursor, start)
    return out


ADMIN_ATTEMPTS = 60  # a broker away, or a group coordinator moving: up to 30 s
ADMIN_BACKOFF_S = 0.5


class Refetcher:
    """Reads given offset ranges back from the broker (read_committed, no group).

    The group's committed offsets come from an admin client: a consumer with
    the group id, assigned one partition after another, crashed its group
    coordinator (aiokafka issue 796: ``assert assignment is not None and
    assignment.active`` when the manual assignment changes while the
    coordinator routine runs), and the error surfaced in the agent that
    asked, stopping the worker (test_scale_out, 2026-11-30).
    """

    def __init__(self, client_options: dict[str, Any], group_id: str | None = None) -> None:
        self.client_options = client_options  # stream.kafka.client.client_options
        self.group_id = group_id  # only read (committed offsets); never joined
        self._consumer: Any = None
        self._admin: Any = None
        # Both agents share one consumer; each call assigns and seeks it.
        self._lock = asyncio.Lock()

    async def _client(self) -> Any:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            self._consumer = AIOKafkaConsumer(
                **self.client_options,
                isolation_level="read_committed",
                enable_auto_commit=False,
                group_id=None,
            )
            await self._consumer.start()
        return self._consumer

    async def _admin_client(self) -> Any:
        if self._admin is None:
            from aiokafka.admin import AIOKafkaAdminClient

            self._admin = AIOKafkaAdminClient(**self.client_options)
            await self._admin.start()
        return self._admin

    async def read(self, topic: str, partition: int, first: int, last: int) -> list[Any]:
        """Records with offsets in [first, last] (markers and aborted records have none)."""
        async with self._lock:
            return await self._read(topic, partition, first, last)

    async def _read(self, topic: str, partition: int, first: int, last: int) -> list[Any]:
        from aiokafka import TopicPartition

        consumer = await self._client()
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, first)
        found = []
        while True:
            batches = await consumer.getmany(tp, timeout_ms=2000, max_records=500)
            records = batches.get(tp, [])
            found += [r for r in records if first <= r.offset <= last]
            position = await consumer.position(tp)
            if position > last or not records and position >= await self._end(consumer, tp):
                return found

    async def start(self, topic: str, partition: int) -> int:
        """Where a partition without history starts: the group's committed offset,
        else the first offset in the log (a new group reads from the earliest)."""
        async with self._lock:
            return await self._start(topic, partition)

    async def _start(self, topic: str, partition: int) -> int:
        from aiokafka import TopicPartition

        tp = TopicPartition(topic, partition)
        if self.group_id:
            committed = await self._committed(tp)
            found = committed.get(tp)
            if found is not None and found.offset >= 0:
                return found.offset
        consumer = await self._client()
        return (await consumer.beginning_offsets([tp]))[tp]

    async def _committed(self, tp: Any) -> dict:
        """The group's committed offset of ``tp``, asked again on a retriable error.

        aiokafka's admin client sends to a random broker and does not retry: in
        the three-broker chaos scenario it picked the killed one
        (``NodeNotReadyError``) and the agent that asked stopped the worker.
        """
        from aiokafka.errors import KafkaError

        admin = await self._admin_client()
        for attempt in range(ADMIN_ATTEMPTS):
            try:
                return await admin.list_consumer_group_offsets(self.group_id, partitions=[tp])
            except KafkaError as exc:
                if not exc.retriable or attempt == ADMIN_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(ADMIN_BACKOFF_S)
        raise AssertionError("unreachable")

    @staticmethod
    async def _end(consumer: Any, tp: Any) -> int:
        return (await consumer.end_offsets([tp]))[tp]

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

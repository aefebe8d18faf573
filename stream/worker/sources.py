"""Which input sources exist and which have nothing unread (for the watermark).

A source is an input topic-partition. The watermark of a counting partition is
held back by every source with something still to deliver (core/watermark.py).
"Nothing unread" is asked of the broker: the group's committed offset has
reached the end of the partition, or only transaction markers lie between them
(a read_committed read of that range is empty), and nothing was appended to
it for the idle timeout. For those sources ``read_to`` holds the committed
offset: a counting partition lets such a source go only once its marks have
come up to that offset, i.e. once everything read from it has also arrived on
that partition of the events topic.

The timeout matters while a producer is still sending a backlog: a partition
that the worker has momentarily read to its end gets more history a moment
later; letting it go at once let the watermark run minutes ahead of it, and
its next events were late (seen with a 2-minute funnel window). A source that
is silent for the whole timeout and then sends events older than the
watermark minus the window and the lateness gets them dead-lettered as late,
as with Flink's idle sources.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from stream.core.watermark import source_name

log = logging.getLogger("stream.worker")

MARKER_GAP = 4  # offsets between committed and end that may be only transaction markers


class SourceCatalog:
    """All input sources and the idle ones, refreshed by ``refresh`` (a timer)."""

    def __init__(
        self,
        client_options: dict[str, Any],
        group_id: str,
        topics: list[str],
        idle_timeout: float = 10.0,
    ) -> None:
        self.client_options = client_options
        self.group_id = group_id
        self.topics = topics
        self.idle_timeout = idle_timeout
        self._ends: dict[str, tuple[int, float]] = {}  # source -> (end offset, since when)
        self.sources: list[str] = []  # empty until the first refresh: hold every watermark
        self.read_to: dict[str, int] = {}  # source with nothing unread -> committed offset
        self._consumer: Any = None

    async def _client(self) -> Any:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            self._consumer = AIOKafkaConsumer(
                **self.client_options,
                isolation_level="read_committed",
                enable_auto_commit=False,
                group_id=self.group_id,  # only read (committed offsets); never joined
            )
            await self._consumer.start()
        return self._consumer

    async def refresh(self) -> None:
        from aiokafka import TopicPartition

        consumer = await self._client()
        tps = []
        for topic in self.topics:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or set()
            tps += [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        read_to = {}
        for tp in tps:
            source = source_name(tp.topic, tp.partition)
            if not self._silent(source, ends[tp], time.monotonic()):
                continue
            committed = await consumer.committed(tp) or 0
            if await self._nothing_unread(consumer, tp, committed, ends[tp]):
                read_to[source] = committed
        self.sources = [source_name(tp.topic, tp.partition) for tp in tps]
        self.read_to = read_to

    def _silent(self, source: str, end: int, now: float) -> bool:
        """Whether nothing was appended to the source for the idle timeout."""
        last = self._ends.get(source)
        if last is None or last[0] != end:
            self._ends[source] = (end, now)
            return self.idle_timeout <= 0
        return now - last[1] >= self.idle_timeout

    async def _nothing_unread(self, consumer: Any, tp: Any, committed: int, end: int) -> bool:
        if committed >= end:
            return True
        if end - committed > MARKER_GAP:
            return False
        consumer.assign([tp])
        consumer.seek(tp, committed)
        batches = await consumer.getmany(tp, timeout_ms=1000, max_records=MARKER_GAP)
        return not batches.get(tp)

    async def run(self, interval: float, refreshed: Callable[[], None] | None = None) -> None:
        """Refresh every ``interval`` seconds, then call ``refreshed``; a failed
        refresh keeps the last answer."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - the broker may be away for a while
                log.warning("source catalog refresh failed", extra={"error": repr(exc)})
            else:
                if refreshed is not None:
                    refreshed()
            await asyncio.sleep(interval)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

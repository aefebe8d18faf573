"""When a worker group finished a bench input: the moment its commits stopped moving.

The bench used to poll ``tests.support.offset_rows`` and
``committed_to_the_end``, which open an admin client and two consumers per
poll and then read each events partition whose committed offset trails its
end with a 1 s timeout (transaction markers always trail it). One poll took
about 12 s at 100,000 events, so a run's end was seen up to 12 s late (30 s
of work measured as 43 s). This keeps the clients open, is polled every
quarter second, and dates the finish at the first poll that saw the final
committed offsets; the slow "is anything left to read" check runs only once
the inputs are all committed, and decides *whether* the run is done, not
*when* it ended.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.config import Settings


class FinishWatch:
    """Polls a group's committed offsets against the ends of its topics."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings = settings
        self.group = group
        self.loop = asyncio.new_event_loop()
        self.committed: dict[TopicPartition, int] = {}
        self.changed_at: float | None = None  # monotonic time of the last change seen
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        servers = self.settings.kafka_bootstrap
        self.admin = AIOKafkaAdminClient(bootstrap_servers=servers)
        await self.admin.start()
        self.reader = AIOKafkaConsumer(
            bootstrap_servers=servers, isolation_level="read_committed", enable_auto_commit=False
        )
        await self.reader.start()
        topics = [*self.settings.topics.values(), self.settings.events_topic]
        parts = range(self.settings.partitions)
        self.inputs = [TopicPartition(t, p) for t in self.settings.topics.values() for p in parts]
        self.events = [TopicPartition(self.settings.events_topic, p) for p in parts]
        self.all = [TopicPartition(t, p) for t in topics for p in parts]
        self.watched = set(self.all)

    def poll(self) -> tuple[int, bool]:
        """(input records committed so far, whether everything is committed)."""
        return self.loop.run_until_complete(self._poll())

    async def _poll(self) -> tuple[int, bool]:
        now = time.monotonic()
        offsets = await self.admin.list_consumer_group_offsets(self.group)
        committed = {tp: o.offset for tp, o in offsets.items() if tp in self.watched}
        if committed != self.committed:
            self.committed, self.changed_at = committed, now
        ends = await self.reader.end_offsets(self.all)  # last stable offsets
        done_inputs = all(committed.get(tp, 0) >= ends[tp] for tp in self.inputs)
        total = sum(committed.get(tp, 0) for tp in self.inputs)
        if not done_inputs or not any(tp in committed for tp in self.events):
            return total, False
        behind = [tp for tp in self.events if committed.get(tp, 0) < ends[tp]]
        return total, not await self._readable(behind, committed)

    async def _readable(self, tps: list[TopicPartition], committed: dict) -> bool:
        """Whether a read_committed read from the committed offsets finds a record
        (only transaction markers may follow a committed offset)."""
        for tp in tps:
            self.reader.assign([tp])
            self.reader.seek(tp, committed.get(tp, 0))
            if (await self.reader.getmany(tp, timeout_ms=1000)).get(tp):
                return True
        return False

    def close(self) -> None:
        async def stop() -> None:
            await self.reader.stop()
            await self.admin.close()

        self.loop.run_until_complete(stop())
        self.loop.close()

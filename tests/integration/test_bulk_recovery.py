"""The bulk changelog reader against a real broker: committed records only, to the
end of a log that ends in a commit marker, with Faust's store semantics."""

from __future__ import annotations

import asyncio
import uuid

import faust
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.serializers import codecs
from faust.types import TP

from stream.faust_fixes.bulk_recovery import BulkRecovery
from stream.kafka.client import client_options, create_topics
from tests.support import settings_for, unique_env, write_transactions

pytestmark = pytest.mark.integration

# (records, committed): a None value is a tombstone.
LOG = [
    ([("a", 1), ("b", 2), ("d", 7)], True),
    ([("a", 99), ("c", 5)], False),  # aborted: never applied
    ([("a", None), ("b", 3)], True),
    ([("d", None), ("d", 8)], True),  # deleted and set again in one batch
]


def encoded(log: list) -> list:
    """The log's keys and values as Faust's JSON changelog records."""
    json = codecs.dumps
    return [
        ([(json("json", k), None if v is None else json("json", v)) for k, v in records], commit)
        for records, commit in log
    ]


async def last_stable(options: dict, topic: str) -> int:
    consumer = AIOKafkaConsumer(**options, isolation_level="read_committed")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


def recover(options: dict, topic: str, start: int | None) -> tuple[dict, dict, list, int]:
    app = faust.App(f"bulk-{uuid.uuid4().hex[:6]}", store="memory://")
    schema = faust.Schema(key_serializer="json", value_serializer="json")
    table = app.Table("t", default=None, partitions=1, schema=schema)
    tp = TP(topic, 0)

    async def run() -> tuple[list, int]:
        highwater = await last_stable(options, topic) - 1  # as Faust builds it
        recovery = {"tp_to_table": {tp: table}, "active_highwaters": {tp: highwater}}
        offsets = {tp: start}
        left = await BulkRecovery(options, 30.0).read(
            type("Recovery", (), recovery)(), [tp], offsets
        )
        return left, highwater, offsets

    left, highwater, offsets = asyncio.run(run())
    return dict(table.data), offsets, left, highwater


def test_the_bulk_reader_applies_committed_records_to_the_end(stack, stack_env):
    settings = settings_for(unique_env(stack_env))
    options = client_options(settings)
    topic = f"bulk-{uuid.uuid4().hex[:8]}-changelog"

    async def setup() -> None:
        await create_topics(settings, [topic])
        await write_transactions(options, topic, encoded(LOG))

    asyncio.run(setup())
    data, offsets, left, highwater = recover(options, topic, None)
    assert left == []
    assert data == {"b": 3, "d": 8}
    # Read past the final commit marker: Faust's recovery finds nothing left.
    assert offsets[TP(topic, 0)] == highwater
    # Offsets: 0-2 committed, 3 marker, 4-5 aborted, 6 marker, 7-8, 9 marker, 10-11,
    # 12 marker. From after the third transaction only the last one is read.
    data, offsets, left, _ = recover(options, topic, 9)
    assert left == [] and data == {"d": 8}

"""The Refetcher reads offset ranges back from the real broker, read_committed."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from stream.faust_fixes.missing_offsets import Refetcher
from stream.kafka.client import client_options, create_topics
from tests.support import settings_for, unique_env, write_transactions

pytestmark = pytest.mark.integration


# Offsets 0-2 committed, then an aborted transaction, then 2 committed (with markers).
LOG = [
    ([(None, b"a"), (None, b"b"), (None, b"c")], True),
    ([(None, b"x"), (None, b"y")], False),
    ([(None, b"d"), (None, b"e")], True),
]


def test_holes_read_back_hold_committed_records_only(stack, stack_env):
    settings = settings_for(unique_env(stack_env))
    topic = f"refetch-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[list, list, list, int]:
        await create_topics(settings, [topic])  # the broker does not auto-create them
        await write_transactions(client_options(settings), topic, LOG)
        refetcher = Refetcher(client_options(settings))
        try:
            everything = await refetcher.read(topic, 0, 0, 20)
            aborted_and_markers = await refetcher.read(topic, 0, 3, 6)
            one = await refetcher.read(topic, 0, 1, 1)
            start = await refetcher.start(topic, 0)
        finally:
            await refetcher.close()
        return everything, aborted_and_markers, one, start

    everything, aborted, one, start = asyncio.run(run())
    # Log: a b c [marker] x y [abort marker] d e [marker]
    assert [r.value for r in everything] == [b"a", b"b", b"c", b"d", b"e"]
    assert [r.offset for r in everything] == [0, 1, 2, 7, 8]
    assert aborted == []  # offsets 3-6: a marker, two aborted records, a marker
    assert [r.value for r in one] == [b"b"]
    assert start == 0  # no group: a partition without history starts at the log start


async def commit_offsets(settings, group: str, offsets: dict) -> None:
    """Commit ``offsets`` for ``group`` as a worker's transaction would leave them."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(**client_options(settings), group_id=group,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def test_a_partition_without_history_starts_where_the_group_committed(stack, stack_env):
    """Refetcher.start with a group id, asked for one partition after another (the
    stalled-tail check and the agents do so): the committed offset where there is
    one, the log start where there is none, and no coordinator assertion (aiokafka
    issue 796 stopped a worker when this went through a consumer of the group)."""
    from aiokafka import TopicPartition

    settings = settings_for(unique_env(stack_env, FUNNEL_PARTITIONS="3"))
    topic, group = f"refetch-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:6]}"

    async def run() -> list[int]:
        await create_topics(settings, [topic])
        await write_transactions(client_options(settings), topic, LOG)  # 9 offsets on partition 0
        await commit_offsets(settings, group, {TopicPartition(topic, 0): 7})
        refetcher = Refetcher(client_options(settings), group_id=group)
        try:
            return [await refetcher.start(topic, p) for p in (0, 1, 2, 0, 2)]
        finally:
            await refetcher.close()

    assert asyncio.run(run()) == [7, 0, 0, 7, 0]


def test_the_fetcher_notes_markers_and_aborted_records_as_empty(stack, stack_env):
    """What known_empty.py tells missing_offsets: the offsets a read_committed
    fetch stepped over, never one that holds a record."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream.faust_fixes import apply_all
    from stream.faust_fixes.known_empty import EMPTY

    apply_all()
    settings = settings_for(unique_env(stack_env))
    topic = f"known-empty-{uuid.uuid4().hex[:8]}"

    async def run() -> list:
        await create_topics(settings, [topic])
        await write_transactions(client_options(settings), topic, LOG)
        consumer = AIOKafkaConsumer(
            **client_options(settings), isolation_level="read_committed", group_id=None
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            records = []
            while await consumer.position(tp) < (await consumer.end_offsets([tp]))[tp]:
                records += (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
        finally:
            await consumer.stop()
        return records

    records = asyncio.run(run())
    assert [r.offset for r in records] == [0, 1, 2, 7, 8]
    # Log: a b c [marker 3] x y [abort marker 6] d e [marker 9]: only records left.
    assert EMPTY.unknown(topic, 0, 0, 9) == [(0, 2), (7, 8)]

"""Exactly-once batch writes on top of Faust's transactions.

Faust's own table writes are queued in a producer buffer (``send_soon``) that
its transactional commit does not flush, so a commit can carry offsets whose
state changes are still queued (lost on a crash) or state changes of events
whose offsets are not acked yet (double-counted on a crash). DESIGN.md
section 7 lists the related upstream issues.

Batch handlers here therefore, with commits held off:
1. write each changed key to the table's local store and *await* the send of
   its changelog record into the partition's open transaction,
2. ack the batch's events,
and only then let a commit run. A commit thus always holds exactly the state
changes of the offsets it commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import faust
import orjson
from faust.types import TP


class Revoked(Exception):  # noqa: N818 - a signal, not an error
    """The batch's partitions were revoked while it wrote: it must stop writing.

    Its offsets are not committed, so the partitions' next owner (maybe this
    worker again, from freshly recovered tables) reads its events again.
    """


# Bumped on every revoke; a batch remembers the value it began under.
_generation = [0]
_batch_generation: ContextVar[int | None] = ContextVar("batch_generation", default=None)


def new_generation() -> None:
    """Partitions are being revoked: batches begun before may not write any more."""
    _generation[0] += 1


def begin_batch() -> None:
    """Mark the calling agent task's batch as begun under the current assignment."""
    _batch_generation.set(_generation[0])


def batch_is_stale() -> bool:
    began = _batch_generation.get()
    return began is not None and began != _generation[0]


def check_not_revoked() -> None:
    """Raise ``Revoked`` in a batch that began before the latest revoke.

    A batch still running when a rebalance starts would otherwise go on
    writing into tables that the rebalance resets and into transactions that
    it ends ("Can't send messages while not in transaction" crashed a worker
    in the chaos suite's join/leave scenario).
    """
    if batch_is_stale():
        raise Revoked("partitions revoked while the batch was being written")


@asynccontextmanager
async def commits_held(app: faust.App) -> AsyncIterator[None]:
    """Keep Faust's committer out while a batch writes state and acks.

    Uses the consumer's own "a commit is running" future: a commit started
    meanwhile waits for it and then skips (the next interval commits).
    """
    consumer = app.consumer
    while await consumer.maybe_wait_for_commit_to_finish():
        pass
    held: asyncio.Future = asyncio.get_running_loop().create_future()
    consumer._commit_fut = held
    try:
        yield
    finally:
        if consumer._commit_fut is held:
            consumer._commit_fut = None
        held.set_result(None)


async def write_state(
    app: faust.App,
    table: faust.Table,
    source: TP,
    updates: Mapping[Any, Any],
    keep: bool = True,
) -> None:
    """Set keys in ``table`` and put their changelog records in ``source``'s transaction.

    ``source`` is the input partition the updates came from; the changelog
    partition equals its number so recovery restores them to the worker that
    owns it. A value of None deletes the key (a changelog tombstone). Records
    are serialised as JSON, as the tables' json schema expects on recovery.
    ``keep=False`` writes the changelog only and drops the key from memory:
    for state the caller holds itself and reads back only after a recovery.
    """
    data = table.data
    changelog = table.changelog_topic.get_topic_name()
    for key, value in updates.items():
        check_not_revoked()
        if value is None or not keep:
            drop_keys(table, (key,))
        else:
            data[key] = value
        raw = None if value is None else orjson.dumps(value)
        await send_in_transaction(
            app, source, changelog, orjson.dumps(key), raw, partition=source.partition
        )


def drop_keys(table: faust.Table, keys: Iterable[Any]) -> None:
    """Remove keys from a table's memory, and from the memory store's key -> partition index."""
    store = table.data
    index = getattr(store, "_key_partition", None)
    for key in keys:
        store.pop(key, None)
        if index is not None:
            index.pop(key, None)


async def ack_all(stream: faust.StreamT, events: Iterable[faust.EventT]) -> None:
    for event in events:
        await stream.ack(event)


async def send_in_transaction(
    app: faust.App,
    source: TP,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None = None,
    partition: int | None = None,
) -> None:
    """Produce to ``topic`` inside the open transaction of the *source* partition.

    Faust picks a transaction by the destination partition, which only fits
    changelogs co-partitioned with the source; forwarding to another topic
    (re-keying, dead letters) must commit with the offsets it came from.
    """
    check_not_revoked()
    group = app.assignor.group_for_topic(source.topic)
    transactional_id = f"{app.conf.id}-{group}-{source.partition}"
    await app.producer.send(
        topic, key, value, partition, None, headers, transactional_id=transactional_id
    )

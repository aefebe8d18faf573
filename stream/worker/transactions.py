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
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import faust
import orjson
from faust.types import TP

from stream.faust_fixes.batch_sends import partition_of, topic_ready, transaction_producer
from stream.worker import cut_batches


class Revoked(Exception):  # noqa: N818 - a signal, not an error
    """The batch's partitions were revoked while it wrote: it must stop writing.

    Its offsets are not committed, so the partitions' next owner (maybe this
    worker again, from freshly recovered tables) reads its events again.
    """


# Bumped on every revoke; a batch remembers the value it began under.
_generation = [0]
# Between a revoke and the next assignment: no assignment to write under.
_unassigned = [False]
_batch_generation: ContextVar[int | None] = ContextVar("batch_generation", default=None)
_NO_ASSIGNMENT = -1  # what a batch begun while unassigned remembers: never current


def new_generation() -> None:
    """Partitions are being revoked: batches begun before may not write any more,
    nor may batches begun before the next assignment (``assignment_done``)."""
    _generation[0] += 1
    _unassigned[0] = True


def awaiting_assignment() -> bool:
    """Between a revoke (or a fence) and the next assignment."""
    return _unassigned[0]


def assignment_done() -> None:
    """The rebalance assigned partitions: batches begun from now on may write,
    into the fresh transactions Faust began for the assignment."""
    _unassigned[0] = False
    cut_batches.transactions_ended()


def begin_batch() -> None:
    """Mark the calling agent task's batch as begun under the current assignment.

    A batch begun between a revoke and the next assignment (events Faust had
    buffered before the rebalance) counts as stale from the start. Let write,
    it put its state into a transaction that the revoke's commit had already
    passed: the rebalance then dropped the in-memory tables
    (faust_fixes/rebalance_state.py) while recovery, stopping at the last
    stable offset below that open transaction, restored none of it; the
    transaction was committed after the assignment, with its offsets, and the
    partition went on counting from memory without the batch. Its events were
    lost (test_scale_out, 5 of 2,500 events on one partition, 2026-11-30).
    """
    _batch_generation.set(_NO_ASSIGNMENT if _unassigned[0] else _generation[0])
    cut_batches.begin()


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


class CommitGate:
    """Batches write while no commit runs; a commit runs once no batch is writing.

    A commit that is waiting keeps new batches out, so commits happen every
    commit interval however busy the agents are. (Holding commits off with
    Faust's own "a commit is running" future made a waiting commit *skip*:
    with three agents writing back to back through a backlog every interval
    was skipped, nothing committed for minutes and the transactions timed out:
    ProducerFenced, the worker exited.)
    """

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self.writing = 0
        self.waiting = 0  # commits waiting for the batches in flight
        self.committing = False
        self.last_commit = time.monotonic()
        self.longest_gap = 0.0  # seconds between two commits, the most seen
        self.longest_commit = 0.0
        self.commits = 0
        self.committing_s = 0.0  # seconds spent in commits, all together
        self.held_s = 0.0  # seconds batches waited for a commit, all together
        self.skipped = 0  # commits not run: writes of a cut batch (worker/cut_batches.py)

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        began = time.monotonic()
        async with self._cond:
            await self._cond.wait_for(lambda: not self.committing and not self.waiting)
            self.writing += 1
        self.held_s += time.monotonic() - began
        try:
            yield
        finally:
            cut_batches.left()  # before a waiting commit can run
            async with self._cond:
                self.writing -= 1
                self._cond.notify_all()

    @asynccontextmanager
    async def commit(self) -> AsyncIterator[bool]:
        """Hold batches out for a commit. Yields False when the open transactions
        hold writes of a cut batch (worker/cut_batches.py): nothing may commit then."""
        async with self._cond:
            self.waiting += 1
            try:
                await self._cond.wait_for(lambda: not self.writing and not self.committing)
            finally:
                self.waiting -= 1
            self.committing = True
        allowed = not cut_batches.holds_cut_writes()
        began = time.monotonic()
        try:
            yield allowed
        finally:
            done = time.monotonic()
            if allowed:
                self.longest_gap = max(self.longest_gap, began - self.last_commit)
                self.longest_commit = max(self.longest_commit, done - began)
                self.commits += 1
                self.committing_s += done - began
                self.last_commit = done
            else:
                self.skipped += 1
            async with self._cond:
                self.committing = False
                self._cond.notify_all()


def commit_gate(app: faust.App) -> CommitGate:
    """The consumer's gate; installed on first use around its ``force_commit``."""
    consumer = app.consumer
    gate = getattr(consumer, "funnel_gate", None)
    if gate is None:
        gate = consumer.funnel_gate = CommitGate()
        original = consumer.force_commit

        async def force_commit(*args: Any, **kwargs: Any) -> bool:
            async with gate.commit() as allowed:
                return await original(*args, **kwargs) if allowed else False

        consumer.force_commit = force_commit
    return gate


@asynccontextmanager
async def commits_held(app: faust.App) -> AsyncIterator[None]:
    """Keep Faust's committer out while a batch writes state and acks."""
    async with commit_gate(app).batch():
        yield


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
    if not updates:
        return
    check_not_revoked()
    data = table.data
    records: list[Record] = []
    dropped = []
    for key, value in updates.items():
        if value is None or not keep:
            dropped.append(key)
        else:
            data[key] = value
        raw = None if value is None else orjson.dumps(value)
        records.append((source.partition, orjson.dumps(key), raw, None))
    drop_keys(table, dropped)
    await send_records(app, source, table.changelog_topic.get_topic_name(), records)


def records(table: faust.Table) -> Any:
    """A table's records to read or drop by key: the memory store's dict itself,
    whose methods run in C (the store's own mapping methods are Python code per
    key: a sixth of a restarted worker's engine loading at 300,000 journeys);
    any other store as it is."""
    store = table.data
    return getattr(store, "data", store)


def drop_keys(table: faust.Table, keys: Iterable[Any]) -> None:
    """Remove keys from a table's memory, and from the memory store's key -> partition index."""
    index = getattr(table.data, "_key_partition", None)
    data = records(table)
    for key in keys:
        data.pop(key, None)
        if index is not None:
            index.pop(key, None)


def shrink(table: faust.Table) -> None:
    """Copy a table's memory into dicts sized for what it still holds.

    CPython never shrinks a dict when keys are popped: once a restarted worker's
    engines took the journeys out of the journeys table (``drop_keys``), the
    emptied table and the memory store's key -> partition index kept their
    full size, about 120 MB at 1M journeys, for good (nothing is written back
    into that table's memory to reuse the room)."""
    store = table.data
    store.data = dict(store.data)
    if getattr(store, "_key_partition", None) is not None:
        store._key_partition = dict(store._key_partition)


async def ack_all(stream: faust.StreamT, events: Iterable[faust.EventT]) -> None:
    """Ack a written batch, unless a rebalance made it stale meanwhile.

    Checked first, and nothing here yields (Faust's ``Stream.ack`` awaits
    nothing): a batch begun before a revoke acks nothing after it. A stale
    batch that had nothing to write never met the check in its sends, and its
    acks landed in the next assignment's offsets, committable there though
    the events were never applied in it (the join/leave scenario lost a deal
    stage, CI of 546352b; the callers mark their holes right after, also
    without yielding).
    """
    check_not_revoked()
    for event in events:
        await stream.ack(event)
    cut_batches.finished()


# (partition or None for the key's partition, key, value, headers)
Record = tuple[int | None, bytes | None, bytes | None, list[tuple[str, bytes]] | None]


async def send_in_transaction(
    app: faust.App,
    source: TP,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None = None,
    partition: int | None = None,
) -> None:
    """Produce one record to ``topic`` inside the open transaction of ``source``."""
    await send_records(app, source, topic, [(partition, key, value, headers)])


async def send_records(app: faust.App, source: TP, topic: str, records: list[Record]) -> None:
    """Produce ``records`` to ``topic`` inside the open transaction of the *source*
    partition, in order per destination partition, a record batch per partition.

    Faust picks a transaction by the destination partition, which only fits
    changelogs co-partitioned with the source; forwarding to another topic
    (re-keying, dead letters) must commit with the offsets it came from.
    """
    check_not_revoked()
    group = app.assignor.group_for_topic(source.topic)
    aio, lock = transaction_producer(app, f"{app.conf.id}-{group}-{source.partition}")
    await topic_ready(aio, topic)
    by_partition: dict[int, list[Record]] = defaultdict(list)
    for record in records:
        p, key, value, _ = record
        by_partition[partition_of(aio, topic, key, value) if p is None else p].append(record)
    for p, group_records in by_partition.items():
        batch = aio.create_batch()
        for _, key, value, headers in group_records:
            if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                await _send_batch(aio, lock, batch, topic, p)
                batch = aio.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers or [])
        await _send_batch(aio, lock, batch, topic, p)


async def _send_batch(aio: Any, lock: asyncio.Lock, batch: Any, topic: str, p: int) -> None:
    async with lock:  # checked under the lock: a revoke ends transactions under it
        check_not_revoked()
        cut_batches.sending()
        delivery = await aio.send_batch(batch, topic, partition=p)
    delivery.add_done_callback(_failure_seen)


def _failure_seen(delivery: asyncio.Future) -> None:
    """A failed delivery fails the transaction's commit (aiokafka marks the
    transaction failed), which is where it is handled; retrieving it here keeps
    asyncio from logging "Future exception was never retrieved" for every
    record batch of a fenced transaction."""
    if not delivery.cancelled():
        delivery.exception()

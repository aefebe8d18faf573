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
from typing import Any

import faust


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


async def write_state(table: faust.Table, partition: int, updates: Mapping[Any, Any]) -> None:
    """Set keys in ``table`` and put their changelog records in the transaction.

    ``partition`` is the source partition the updates came from; the
    changelog partition must equal it so recovery restores them to the
    worker that owns that partition.
    """
    data = table.data
    changelog = table.changelog_topic
    for key, value in updates.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
        await changelog.send(key=key, value=value, partition=partition)


async def ack_all(stream: faust.StreamT, events: Iterable[faust.EventT]) -> None:
    for event in events:
        await stream.ack(event)

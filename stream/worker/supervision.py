"""How an agent's batch loop fails.

A revoked or fenced batch is dropped (read again later); anything else stops
the worker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable

import faust

from stream.faust_fixes.failed_batch_acks import keep_unacked, never_ack
from stream.faust_fixes.fenced_transactions import FENCED, fenced
from stream.worker.transactions import Revoked, batch_is_stale, begin_batch

log = logging.getLogger("stream.worker")


def stop_worker_on_error(app: faust.App, name: str) -> Callable:
    """An agent that fails stops the whole worker (exit status 1) instead of idling.

    Faust logs a crashed agent and keeps the worker up with that agent dead, so
    its partitions stop counting while health checks stay green. Stopping lets
    the supervisor restart the worker, which resumes from committed state.
    """

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        async def agent(stream: faust.StreamT) -> None:
            try:
                await fn(stream)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                keep_unacked(stream)  # the failed batch is read again, not committed
                log.critical(f"agent {name} failed; stopping the worker", exc_info=True)
                asyncio.get_running_loop().call_later(15, os._exit, 1)  # if stopping hangs
                await app.crash(exc)
                raise

        return agent

    return wrap


async def unless_revoked(agent: str, batch: list, handle: Awaitable) -> None:
    """Run one batch; drop it if its partitions are revoked while it writes, or
    if its transaction is fenced (worker/fencing.py: the worker rejoins).

    A batch that does not finish is never acked (``never_ack``): Faust's
    ``take_events`` acks the batch it yielded when the agent asks for the next
    one, or when its generator is closed after a stop's cancel, and a commit
    would then carry offsets of events never counted. Its writes are not
    committed either (the commit gate holds commits until the rebalance ends
    the transactions: worker/cut_batches.py), so it is read again by the
    partitions' next owner. Failures other than a revoke or a fence propagate
    (and stop the worker).
    """
    begin_batch()
    try:
        await handle
    except BaseException as exc:
        never_ack(batch)  # a batch that finished has acked itself already
        if not await droppable(agent, exc):
            raise
        dropped(agent, batch, exc)


async def droppable(agent: str, exc: BaseException) -> bool:
    """A revoked batch, or a fenced one the worker handles by rejoining."""
    if isinstance(exc, Revoked):
        return True
    if isinstance(exc, FENCED):
        return batch_is_stale() or await fenced(f"batch of {agent}", exc)
    return False


def dropped(agent: str, batch: list, exc: BaseException) -> None:
    log.warning(
        "batch dropped: partitions revoked or transaction fenced while it was written; "
        "it is read again",
        extra={"agent": agent, "events": len(batch), "error": repr(exc)},
    )


async def to_the_end(work: Awaitable) -> None:
    """Run a batch's writes and acks to their end even if the agent is cancelled
    meanwhile, then let the cancellation go on.

    A stopping worker (SIGTERM, leaving the group) cancels its agents. Cancelled
    between two writes, a batch had put part of its state into its transaction
    (the ids it saw, not yet their counts); Faust's ``take_events`` then acked
    the whole batch and the stop's commit committed both, so the events, read
    again by the partition's next owner, were duplicates of seen ids and never
    counted: the chaos suite's join/leave scenario lost 81 and 85 events of the
    leaving worker's two partitions (the seen-events changelog held their ids,
    the counts did not; tests/chaos/where_lost.py).
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()

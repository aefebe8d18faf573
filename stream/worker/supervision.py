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

    Its offsets are never committed (``never_ack``), nor are its writes (the
    commit gate holds commits until the rebalance ends its transactions:
    worker/cut_batches.py), so it is read again by the partitions' next owner.
    A batch cancelled by a stop before it finished is not acked either: the
    agent's generator, closed after the cancel, acks the batch it yielded
    (faust_fixes/failed_batch_acks.py), and the stop's commit would commit it.
    Any other failure propagates (and stops the worker).
    """
    begin_batch()
    try:
        await handle
    except asyncio.CancelledError:
        # A stop cancelled it mid-way (a whole batch has acked itself first):
        # closing take_events would ack it all before the stop's commit.
        never_ack(batch)
        raise
    except Revoked as exc:
        dropped(agent, batch, exc)
    except FENCED as exc:
        if not batch_is_stale() and not await fenced(f"batch of {agent}", exc):
            raise
        dropped(agent, batch, exc)


def dropped(agent: str, batch: list, exc: BaseException) -> None:
    never_ack(batch)  # take_events would ack it when the agent asks for the next one
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

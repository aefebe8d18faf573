"""A fenced transaction stops the whole worker.

Works around ``faust.transport.consumer.TransactionManager.commit``
(faust-streaming 0.15.3), which answers ``ProducerFenced`` with
``app.crash``, and faust-streaming issue 323: a worker whose transactional
producer is fenced (the partition's new owner started its producer before this
worker heard of the rebalance, or the broker aborted a transaction that ran
past ``transaction.timeout.ms``) exits, its batch failing with
``ProducerFenced`` or ``IllegalOperation: Can't send messages while not in
transaction``. The chaos suite's join/leave scenario crashed a worker that
way in about 1 run in 8; a supervisor restarted it.

Here a fence is one event for the whole worker, handled without exiting:

1. the fenced commit is not raised (``commit_transactions`` below);
2. every transactional producer of the worker is aborted where it still
   can be, stopped and forgotten (``drop_transactions``): a batch cut by the
   fence may have written into several transactions, none of which may
   commit now (a fenced one was ended by its successor's start);
3. the worker's handler (``worker/fencing.py``) marks running batches stale,
   and asks the group for a rejoin: the revoke drops the in-memory tables
   (``rebalance_state``), the assignment starts fresh producers and recovers
   committed state from the changelogs, and the agents resume from the
   committed offsets, as a restarted worker would, in the same process.

Delete when: Faust handles a fenced producer by rebalancing instead of
crashing (tests/unit/test_faust_fixes.py shows the upstream ``app.crash``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import IllegalOperation, InvalidProducerEpoch, InvalidTxnState, ProducerFenced

from stream.faust_fixes.batch_sends import TransactionGone

log = logging.getLogger("stream.worker")

# What a transaction that can no longer commit raises (aiokafka 0.14).
FENCED = (ProducerFenced, InvalidProducerEpoch, InvalidTxnState, IllegalOperation, TransactionGone)

# Called once per fence with the transactional id and the error; set by the worker.
Handler = Callable[[str, BaseException], Awaitable[None]]
_handler: list[Handler] = []


def on_fenced(handler: Handler) -> None:
    """Handle fences with ``handler`` (the worker's; one at a time)."""
    _handler[:] = [handler]


def is_fenced(exc: BaseException) -> bool:
    return isinstance(exc, FENCED)


async def fenced(tid: str, exc: BaseException) -> bool:
    """Hand a fence to the worker's handler; False if there is none (then raise)."""
    if not _handler:
        return False
    await _handler[0](tid, exc)
    return True


async def drop_transactions(producer: Any) -> list[str]:
    """Abort (where it still can), stop and forget every transactional producer
    of Faust's ``producer``.

    Each is taken under its Faust lock, so no send or commit of it is half
    done. Aborting ends its open transaction at once, so the recovery of its
    partitions, here or on another worker, does not wait for the transaction
    timeout (a fenced one cannot abort: its successor's start ended it). A
    batch that then writes finds no producer (``TransactionGone``); a commit
    skips the transaction ("unknown transaction"); the next assignment
    starts new ones (``TransactionManager.on_rebalance``).
    """
    dropped = []
    for tid in list(producer._transaction_producers):
        async with producer._trn_locks[tid]:
            aio = producer._transaction_producers.pop(tid, None)
            if aio is None:
                continue
            dropped.append(tid)
            for step in (aio.abort_transaction, aio.stop):
                try:
                    await step()
                except Exception:  # noqa: BLE001 - a fenced producer cannot end cleanly
                    log.debug("ending a dropped producer failed", exc_info=True)
    return dropped


def request_rejoin(app: Any) -> None:
    """Ask the group coordinator for a rebalance (aiokafka's ``request_rejoin``):
    this worker's partitions are revoked and assigned again."""
    consumer = app.consumer._thread._ensure_consumer()
    consumer._coordinator.request_rejoin()

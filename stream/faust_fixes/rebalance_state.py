"""In-memory tables keep the writes of a transaction aborted by a rebalance.

Works around faust-streaming/faust#323 (a rebalance under exactly_once leaves
a transaction open: "Invalid state transition IN_TRANSACTION ->
IN_TRANSACTION") together with how ``faust.tables.recovery.Recovery`` resumes
a kept partition from its in-memory offsets (faust-streaming 0.15.3).

Under load a rebalance can leave a transaction of a partition this worker
keeps open; it is aborted, but its writes stay in the in-memory tables, and
Faust's recovery resumes a kept partition from where the memory left off.
Memory and committed state then diverge: the chaos suite's join/leave
scenario lost 238 to 3,784 of 20,004 events that way. ``forget_uncommitted_state``
drops every in-memory table and makes the coming recovery read each changelog
of the new assignment from its start (read_committed: committed state only).
It costs a full changelog replay per rebalance.

The same issue leaves transactions *open* across a rebalance: Faust commits a
transaction only when one of its partitions has a new committable offset, so
writes of a batch whose offsets cannot be committed yet (a stale batch cut by
the revoke; or the counting agent's batch while Faust's committed offset of an
events partition lags behind the ``next`` offset its state holds) stay in a
transaction the revoke does not end. For a partition the worker keeps, the
coming recovery then waits on the worker's own open transaction (the last
stable offset stays below it) until ``recovery_highwaters`` gives up, and the
partition was loaded from empty tables: the soak of the join/leave scenario
lost 727 and 516 events of two kept partitions that way (run 6 of 50,
2026-11-30; the log said "recovery goes on with transactions still pending").
``end_open_transactions`` aborts them after the revoke's commits: what they
held belongs to batches that are read again (their ``next`` offset went with
them), and the recovery finds nothing of this worker's pending.

Delete when: Faust aborts and rewinds table memory with the transaction, or
the worker moves to a durable store with a checkpointed offset; and Faust
ends every transaction on a revoke.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("stream.faust_fixes")


def forget_uncommitted_state(app: Any, had_engines: bool = True) -> None:
    """Clear every table's memory and recovery's remembered offsets.

    A worker with no engine and all tables empty (starting up) has nothing to
    forget and is left alone; engines count, as they hold journeys the tables
    do not.
    """
    if not had_engines and not any(len(table.data) for table in app.tables.values()):
        return
    for table in app.tables.values():
        store = table.data
        store.data.clear()
        store._key_partition.clear()
    recovery = app.tables.recovery
    recovery.active_offsets.clear()
    recovery.standby_offsets.clear()
    # Without them Faust's idle check for aborted transactions has nothing to
    # mark read before the coming recovery sets them (recovery_positions.py).
    recovery.active_highwaters.clear()
    recovery.standby_highwaters.clear()


def has_writes(aio: Any) -> bool:
    """An aiokafka transactional producer in a transaction that holds records or offsets."""
    txn = aio._txn_manager
    if txn is None or not txn.is_in_transaction():
        return False
    return not txn.is_empty_transaction() or bool(txn.partitions_to_add())


async def end_open_transactions(producer: Any) -> list[str]:
    """Abort every open transaction of Faust's ``producer`` that holds writes, and
    begin the next; each under its Faust lock (a batch checks for a revoke under
    that lock before it sends, so nothing stale enters the new one)."""
    aborted = []
    for tid in list(producer._transaction_producers):
        async with producer._trn_locks[tid]:
            aio = producer._transaction_producers.get(tid)
            if aio is None or not has_writes(aio):
                continue
            await aio.abort_transaction()
            await aio.begin_transaction()
            aborted.append(tid)
    if aborted:
        log.info("open transactions aborted on revoke", extra={"transactions": aborted})
    return aborted

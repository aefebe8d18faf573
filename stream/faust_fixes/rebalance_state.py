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

Delete when: Faust aborts and rewinds table memory with the transaction, or
the worker moves to a durable store with a checkpointed offset.
"""

from __future__ import annotations

from typing import Any


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

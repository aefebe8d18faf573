"""A fenced transaction costs a rejoin of the group, not the process.

The upstream part (what Faust does on a fence, what is reached into) is in
stream/faust_fixes/fenced_transactions.py; this is what the worker does about
it, once per fence.
"""

from __future__ import annotations

import logging

from stream.faust_fixes.fenced_transactions import drop_transactions, request_rejoin
from stream.worker import cut_batches
from stream.worker.context import Context
from stream.worker.metrics import FENCED
from stream.worker.transactions import awaiting_assignment, new_generation

log = logging.getLogger("stream.worker")


async def handle_fence(ctx: Context, tid: str, exc: BaseException) -> None:
    """Drop every open transaction and rejoin: committed state is read back.

    Running batches become stale (they stop writing, their events are read
    again after the assignment); nothing of this worker commits until the
    rejoin's assignment starts new producers. A second fence before that
    assignment is part of the first.
    """
    if awaiting_assignment():
        return
    new_generation()
    dropped = await drop_transactions(ctx.app.producer)
    cut_batches.transactions_ended()
    FENCED.inc()
    log.warning(
        "transaction fenced: open transactions dropped, rejoining the group to read "
        "committed state back",
        extra={"transactional_id": tid, "error": repr(exc), "dropped": len(dropped)},
    )
    request_rejoin(ctx.app)

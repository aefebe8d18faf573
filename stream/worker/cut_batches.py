"""Writes of a batch cut mid-way must never be committed.

A batch puts its state into the open transactions send by send and acks its
events last (worker/transactions.py). Cut between the two (its partitions
revoked, its transaction fenced, a send failing), it leaves its sends in the
transactions of every partition it wrote to, and its events are read again.
Committing any of those transactions commits state without the offsets that
go with it. The chaos suite's fence scenario lost 5 to 16 orders of 1,140
that way in 2 of 3 runs (`make soak SCENARIO=fenced`, 2026-11-30): a counting
batch cut by the fence of partition 1 had sent partition 3's seen ids and
events-per-minute counts, the commit interval came round before the fence
handler had dropped partition 3's transaction and committed it (with the
batch's offsets, acked by Faust's ``take_events``: faust_fixes/
failed_batch_acks.py), and the events read again after the rejoin were
duplicates of seen ids: counted per minute, missing from the journeys.

So a batch that leaves with sends not yet acked marks the open transactions
as holding cut writes; no commit runs until they are all ended (a revoke's
aborts, a fence's drop, the fresh producers of an assignment), which is the
rebalance the cut always comes with. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class _Writes:
    """The running batch's sends that its acks have not caught up with."""

    epoch: int | None = None  # the transactions' epoch of its latest unacked send


# Bumped whenever every open transaction has been ended; a cut batch's sends
# are in the transactions of the epoch it sent them in.
_epoch = [0]
_cut = [False]
# A mutable object, so the task that runs a batch's writes (supervision.to_the_end)
# and the agent that began it see the same record.
_writes: ContextVar[_Writes | None] = ContextVar("batch_writes", default=None)


def begin() -> None:
    """A batch begins in the calling task; nothing of it is sent yet."""
    _writes.set(_Writes())


def sending() -> None:
    """The batch is about to send into an open transaction (before: a send that
    fails may still have reached the transaction)."""
    writes = _writes.get()
    if writes is not None:
        writes.epoch = _epoch[0]


def finished() -> None:
    """The batch acked its events: its sends and its offsets now go together."""
    writes = _writes.get()
    if writes is not None:
        writes.epoch = None


def left() -> None:
    """The batch leaves the commit gate: if it sent and did not ack, it was cut."""
    writes = _writes.get()
    if writes is not None and writes.epoch == _epoch[0]:
        _cut[0] = True


def transactions_ended() -> None:
    """Every open transaction was aborted or replaced: nothing cut is left in them."""
    _epoch[0] += 1
    _cut[0] = False


def holds_cut_writes() -> bool:
    """Whether a commit now would commit writes of a cut batch."""
    return _cut[0]

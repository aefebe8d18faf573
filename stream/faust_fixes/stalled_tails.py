"""Records fetched after a partition's last delivered one are never delivered.

Works around the stream-queue clear in ``mode.utils.queues.FlowControlEvent.resume``
as Faust calls it in ``faust.tables.recovery.Recovery.on_recovery_completed``
(faust-streaming 0.15.3, mode-streaming 0.4): ``resume`` empties every stream
queue, also when the flow was already running. After a rebalance the recovery
first resumes the flow, then resumes the partitions and awaits
``perform_seek``; records the fetcher hands over meanwhile are put in the
queues, recorded as read, and cleared. The consumer's position is past them.
Related upstream reports: faust-streaming/faust#221 (records fetched around a
rebalance) and robinhood/faust#681 (a partition back after two rebalances
never committed again).

A hole in the middle of a partition is read back by the agents when a later
record arrives (faust_fixes/missing_offsets.py). At the tail nothing later
arrives: the partition stalls with its committed offset stuck, until new
events come. test_scale_out hit it in about one run of four: after the
second rebalance a worker took one record each from six input partitions
and nothing after (visits 1 of 69, calls 3 of 55). ``to_reread`` finds such
partitions (the next offset the agent expects lies below the partition's
end, no batch came for a while, and it was not already asked for that
offset); the worker seeks them back to that offset, and Faust delivers the
records again. A tail of transaction markers only (no records) costs one
empty fetch per offset: each offset is asked for once.

Delete when: ``FlowControlEvent.resume`` clears only a suspended flow's
queues, or Faust records a read offset only for delivered records, and the
scale-out loop passes without ``funnel_partitions_reread_total`` moving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")  # a topic partition


@dataclass(frozen=True)
class Tail:
    """Where one assigned partition stands."""

    expected: int | None  # next offset its agent expects; None: not known
    end: int | None  # its end (last stable offset); None: not known
    idle: float  # seconds since its agent last got a batch of it (or since assigned)


@dataclass
class TailWatch(Generic[P]):
    """Which stalled partitions were already sent back to which offset; and,
    within one assignment, where partitions without a batch yet start."""

    asked: dict[P, int] = field(default_factory=dict)
    starts: dict[P, int] = field(default_factory=dict)

    def to_reread(self, tails: dict[P, Tail], idle_after: float) -> dict[P, int]:
        """Partitions to seek back, with the offset: records past what was
        delivered, nothing delivered for ``idle_after`` seconds, not asked yet."""
        out: dict[P, int] = {}
        for tp, tail in tails.items():
            if tail.expected is None or tail.end is None or tail.expected >= tail.end:
                continue
            if tail.idle < idle_after or self.asked.get(tp) == tail.expected:
                continue
            out[tp] = tail.expected
        self.asked.update(out)
        return out

    def forget(self) -> None:
        """A new assignment: offsets asked for before mean nothing now."""
        self.asked.clear()
        self.starts.clear()

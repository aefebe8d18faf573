"""Faust's fetch loop counts offsets it never delivered as acked ("gaps").

Patches ``faust.transport.consumer.Consumer._add_gap`` (faust-streaming
0.15.3) as ``Consumer._drain_messages`` calls it. When a message comes more
than one offset after the last one read, the fetch loop records every offset
between as a gap, and the commit counts gaps as acked. That is meant for
transaction markers, but after a rebalance's seek back to the committed
offset a message fetched before the seek (faust-streaming/faust#221, the
prefetch side) can arrive right after the first one read again: chaos
scenario 10 (fences) read ``crm.calls:0`` 214, then 633; the loop recorded
215-633 as a gap and dropped 215-632 as already read, and the commit 0.1 s
later moved to 634 while 220-632 (read back by ``missing_offsets``) waited in
a batch that the next fence dropped: 2,524 calls and deal stages never
reached ``funnel.events`` (`make soak SCENARIO=fenced`, 2026-11-30).

The agents check offset continuity themselves (``missing_offsets.py``):
every offset between the next one expected and a batch's highest is read
back from the broker (a marker returns nothing), and only once the batch that
applied them is written is the range marked handled, through
``add_handled_gap``. That covers the markers the loop's gaps were for, so the
loop's own ``_add_gap`` records nothing.

Delete when: Faust's fetch loop no longer treats undelivered offsets as
acked (the test in tests/unit/test_faust_fixes.py reads the upstream loop).
"""

from __future__ import annotations

from typing import Any

from stream.faust_fixes.patching import install


async def add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """The fetch loop's gap: nothing is acked before an agent handled it."""
    return None


def add_handled_gap(consumer: Any, tp: Any, first: int, last: int) -> None:
    """Count ``first..last`` as acked: a batch applied whatever records they hold.

    Faust's ``_add_gap`` without its ``await asyncio.sleep(0)``: the agents
    mark holes and ack in one step that no rebalance can come between
    (worker/transactions.ack_all)."""
    committed = consumer._committed_offset[tp]
    if committed is not None:
        first = max(first, committed + 1)
    if first <= last:
        gaps = consumer._gap[tp]
        gaps.addi(first, last + 1)  # intervaltree intervals exclude the end
        gaps.merge_overlaps()


def fix_fetch_gaps() -> None:
    from faust.transport.consumer import Consumer

    install(Consumer, "_add_gap", add_gap)

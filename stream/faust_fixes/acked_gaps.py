"""Committed offsets lag far behind: a gap that holds an acked offset makes it twice.

Patches ``faust.transport.consumer.Consumer._new_offset`` (faust-streaming
0.15.3; robinhood/faust#625 "Offsets not committed due to duplicate in
_acked", open upstream).

Faust's fetch loop records a gap in the offsets it reads (a transaction
marker, an aborted record) as ``_add_gap(tp, last_read + 1, offset)``: the
range includes ``offset``, the message being delivered, which is acked a
moment later. ``_new_offset`` then merges the gap into the acked offsets
without removing duplicates, and ``consecutive_numbers`` ends the first run
at the duplicate, so each commit advances only to the next gap. Reading a
transactional topic (a marker after every transaction) the committed offset
of ``funnel.events`` fell hundreds to 1,400 offsets behind what was applied:
longer re-reads after a crash, and transactions left open until another of
their partitions moved (docs/guarantees.md fix 13).

The replacement is upstream's method with the merged offsets de-duplicated.
Delete when: the upstream test in tests/unit/test_faust_fixes.py finds a
single run after a gap that holds an acked offset.
"""

from __future__ import annotations

from typing import Any

from stream.faust_fixes.patching import install


def new_offset(self: Any, tp: Any) -> int | None:
    """The offset to commit for ``tp``: one past the first run of acked offsets,
    gaps counted as acked; None while the acked offsets start more than one past
    the committed one (as upstream, a single missing offset there is taken for
    a transaction marker; an event Faust never delivered is read back by
    ``missing_offsets``)."""
    from faust.utils.functional import consecutive_numbers

    acked = self._acked[tp]
    if not acked:
        return None
    merge_gaps(acked, self._gap[tp])
    acked[:] = sorted(set(acked))
    committed = self._committed_offset[tp]
    if committed and acked[0] - committed > 1:
        return None
    run = next(consecutive_numbers(acked))
    del acked[: len(run)]
    self._acked_index[tp].difference_update(run)
    return run[-1] + 1


def merge_gaps(acked: list[int], gaps: Any) -> None:
    """Count the gap offsets up to the highest acked one as acked (as upstream)."""
    if not gaps:
        return
    highest = max(acked)
    found = sorted(gaps.overlap(0, highest), key=lambda interval: interval.begin)
    if not found:
        return
    offsets = [o for interval in found for o in range(interval.begin, interval.end)]
    acked.extend(offsets)
    gaps.chop(0, max(offsets[-1], highest + 1))


def fix_acked_gaps() -> None:
    from faust.transport.consumer import Consumer

    install(Consumer, "_new_offset", new_offset)

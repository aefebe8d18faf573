"""Offset ranges known to hold no record (faust_fixes/known_empty.py): what is left to read."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.faust_fixes.known_empty import KEEP_PER_PARTITION, EmptyRanges


def test_a_known_marker_leaves_nothing_to_read() -> None:
    empty = EmptyRanges()
    empty.note("t", 0, 10, 10)
    assert empty.unknown("t", 0, 10, 10) == []
    assert empty.unknown("t", 1, 10, 10) == [(10, 10)]  # another partition
    assert empty.unknown("u", 0, 10, 10) == [(10, 10)]  # another topic


def test_only_the_unknown_parts_of_a_hole_are_left() -> None:
    empty = EmptyRanges()
    empty.note("t", 0, 3, 6)
    empty.note("t", 0, 9, 9)
    assert empty.unknown("t", 0, 0, 12) == [(0, 2), (7, 8), (10, 12)]
    assert empty.unknown("t", 0, 4, 5) == []
    assert empty.unknown("t", 0, 5, 9) == [(7, 8)]


def test_the_oldest_ranges_go_beyond_the_limit() -> None:
    empty = EmptyRanges()
    for offset in range(0, 2 * (KEEP_PER_PARTITION + 1), 2):
        empty.note("t", 0, offset, offset)
    assert empty.unknown("t", 0, 0, 0) == [(0, 0)]  # forgotten: read back, as before
    newest = 2 * KEEP_PER_PARTITION
    assert empty.unknown("t", 0, newest, newest) == []


ranges = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 8)), max_size=12)


@given(ranges, st.integers(0, 70), st.integers(0, 20))
def test_unknown_is_the_hole_minus_every_noted_offset(noted, first, length) -> None:
    empty = EmptyRanges()
    known: set[int] = set()
    for start, extra in noted:
        empty.note("t", 0, start, start + extra)
        known.update(range(start, start + extra + 1))
    last = first + length
    left = empty.unknown("t", 0, first, last)
    offsets = [o for a, b in left for o in range(a, b + 1)]
    assert offsets == [o for o in range(first, last + 1) if o not in known]
    assert all(a <= b for a, b in left)
    assert all(b + 1 < c for (_, b), (c, _) in zip(left, left[1:], strict=False))  # merged

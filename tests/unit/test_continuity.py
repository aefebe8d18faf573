"""Each offset applied once: redeliveries skipped, holes found (faust_fixes/missing_offsets.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.faust_fixes import missing_offsets
from stream.faust_fixes.missing_offsets import Refetcher, plan


def test_contiguous_batch_after_the_expected_offset():
    p = plan([10, 11, 12], expected=10)
    assert p.fresh == {10, 11, 12} and not p.redelivered and p.holes == []
    assert p.next_expected == 13


def test_redelivered_offsets_are_skipped():
    p = plan([8, 9, 10, 11], expected=10)
    assert p.redelivered == {8, 9} and p.fresh == {10, 11} and p.next_expected == 12


def test_holes_at_the_start_and_inside_are_ranges_to_read_back():
    p = plan([12, 13, 17], expected=10)
    assert p.holes == [(10, 11), (14, 16)] and p.next_expected == 18


def test_no_history_trusts_the_first_offset():
    p = plan([5, 7], expected=None)
    assert p.holes == [(6, 6)] and p.next_expected == 8


def test_a_batch_of_only_old_offsets_keeps_the_expected_offset():
    p = plan([3, 4], expected=10)
    assert p.fresh == set() and p.next_expected == 10 and p.holes == []


@given(
    expected=st.integers(0, 50),
    delivered=st.lists(st.integers(0, 80), max_size=40),
)
def test_every_offset_from_expected_to_the_highest_is_fresh_or_in_a_hole(expected, delivered):
    p = plan(delivered, expected)
    covered = set(p.fresh)
    for first, last in p.holes:
        assert first <= last
        covered |= set(range(first, last + 1))
    top = max([o for o in delivered if o >= expected], default=expected - 1)
    assert covered == set(range(expected, top + 1))
    assert p.redelivered == {o for o in delivered if o < expected}
    assert p.next_expected == max(expected, top + 1)


class FlakyAdmin:
    """An admin client whose first answers come from a broker that is away."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.asked = failures, error, 0

    async def list_consumer_group_offsets(self, group_id, partitions):  # noqa: ANN001, ANN201
        self.asked += 1
        if self.asked <= self.failures:
            raise self.error
        return {partitions[0]: SimpleNamespace(offset=42)}


def refetcher_with(admin: FlakyAdmin) -> Refetcher:
    refetcher = Refetcher({}, group_id="g")
    refetcher._admin = admin
    return refetcher


def test_committed_offsets_are_asked_again_while_a_broker_is_away(monkeypatch) -> None:
    from aiokafka.errors import NodeNotReadyError

    monkeypatch.setattr(missing_offsets, "ADMIN_BACKOFF_S", 0)
    admin = FlakyAdmin(2, NodeNotReadyError("node 3 not ready"))
    assert asyncio.run(refetcher_with(admin).start("t", 0)) == 42
    assert admin.asked == 3


def test_a_non_retriable_error_is_not_asked_again(monkeypatch) -> None:
    from aiokafka.errors import GroupAuthorizationFailedError

    monkeypatch.setattr(missing_offsets, "ADMIN_BACKOFF_S", 0)
    admin = FlakyAdmin(1, GroupAuthorizationFailedError("no"))
    with pytest.raises(GroupAuthorizationFailedError):
        asyncio.run(refetcher_with(admin).start("t", 0))
    assert admin.asked == 1

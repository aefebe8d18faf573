"""The worker's garbage-collector policy (stream/heap.py) with the real collector."""

from __future__ import annotations

import gc
import weakref

import pytest

from stream import heap


class Node:
    other: Node | None = None


def cycle() -> Node:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


@pytest.fixture
def collector():
    yield
    heap.freeze_when_slow(0)  # removes the callback
    gc.unfreeze()


def test_a_slow_full_collection_freezes_what_survived_and_only_that(collector):
    freezer = heap.freeze_when_slow(1e-9)  # every full collection counts as slow
    kept = [cycle() for _ in range(1000)]
    dead = cycle()
    gone = weakref.ref(dead)
    del dead
    frozen_before = gc.get_freeze_count()
    gc.collect()
    assert gone() is None  # garbage cycles are collected before the freeze
    assert freezer.freezes == 1
    assert gc.get_freeze_count() >= frozen_before + 2 * len(kept)
    gc.collect(1)  # a younger collection is not a full one
    assert freezer.freezes == 1


def test_a_fast_full_collection_freezes_nothing(collector):
    freezer = heap.freeze_when_slow(3600.0)
    frozen_before = gc.get_freeze_count()
    gc.collect()
    assert freezer.freezes == 0
    assert gc.get_freeze_count() == frozen_before


def test_one_freezer_at_most_and_zero_installs_none(collector):
    heap.freeze_when_slow(1.0)
    heap.freeze_when_slow(2.0)
    mine = [c for c in gc.callbacks if isinstance(c, heap.FreezeWhenSlow)]
    assert [c.limit for c in mine] == [2.0]
    assert heap.freeze_when_slow(0) is None
    assert not any(isinstance(c, heap.FreezeWhenSlow) for c in gc.callbacks)

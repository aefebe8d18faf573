"""Loading a large state without the garbage collector's full passes.

A restarted worker builds millions of long-lived objects at once (the tables'
records, then the engines' journeys); each full collection walks all of them,
and they trigger one another as the heap grows: loading 300,000 journeys
offline took 8.4 s with the collector on and 5.9 s with it off. The loaded
state holds no reference cycles (plain dicts, lists and dataclasses, freed by
reference counting), so it is moved out of the collector's sight once built
(``gc.freeze``): later collections walk only what was made since.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def bulk_load() -> Iterator[None]:
    """Collector off while the block builds state, then what exists is frozen."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_on:
            gc.enable()


# A full collection slower than this freezes what survived it (FUNNEL_GC_FREEZE_MS).
FREEZE_AFTER_S = 0.05


class FreezeWhenSlow:
    """A ``gc.callbacks`` entry: after a full collection that took longer than
    ``limit`` seconds, freeze its survivors.

    A growing worker makes full collections ever slower (each walks every
    journey held) and no rarer: CPython 3.11 starts one once a quarter of the
    long-lived objects were promoted since the last, and a worker's batches
    promote their short-lived objects at a steady rate. At 200,000 events the
    full collections took 3.7 of 80 s, each 0.36 s at the end. Right after a
    full collection every generation has been merged and swept, so what is
    frozen is live; the state (dicts, lists, dataclasses, no cycles) is still
    freed by reference counting when its engine is dropped. A cycle frozen
    while alive (an object of the batch in flight) is never collected once
    dead; that is bounded by one batch's objects per freeze, and freezes come
    only as often as the heap grows by what ``limit`` can walk.
    """

    def __init__(self, limit: float = FREEZE_AFTER_S) -> None:
        self.limit = limit
        self.started: float | None = None
        self.freezes = 0

    def __call__(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self.started = time.perf_counter()
            return
        took = time.perf_counter() - self.started if self.started is not None else 0.0
        self.started = None
        if took > self.limit:
            gc.freeze()
            self.freezes += 1


def freeze_when_slow(limit: float = FREEZE_AFTER_S) -> FreezeWhenSlow | None:
    """Install one FreezeWhenSlow in ``gc.callbacks`` (a limit <= 0 installs none)."""
    for callback in gc.callbacks:
        if isinstance(callback, FreezeWhenSlow):
            gc.callbacks.remove(callback)
    if limit <= 0:
        return None
    freezer = FreezeWhenSlow(limit)
    gc.callbacks.append(freezer)
    return freezer

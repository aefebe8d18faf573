"""A kept partition's recovery is skipped: Faust takes a stale position for aborted transactions.

Patches ``faust.tables.recovery.Recovery._build_offsets`` (faust-streaming
0.11.x; the ``detect_aborted_tx`` step of ``Recovery._slurp_changelogs``).

Under exactly-once a changelog ends with a commit marker that no record
reaches, so Faust's changelog reader, once its queue has been idle for two
5-s checks, takes every active changelog partition whose consumer position
is at or past its highwater as read to the end (``"Aborted tx until
highwater"``). That check runs whenever the queue is idle, also while a new
recovery is being set up: after ``_build_offsets`` has set the partitions'
offsets back (to -1 for a full replay, rebalance_state.py) and before they
are sought, the position it compares is the previous one, at the end of the
changelog. The partition is then marked read without a record read, and its
engine loads from empty tables while its input resumes from the committed
offsets: chaos scenario 8 (Redis down across a rebalance, so the queue was
idle for 20 s) lost 5,199 and 5,900 events of two kept partitions that way
(soak of 2026-11-30, runs with ``"Aborted tx until highwater"`` logged before
``"Resuming flow..."``).

The replacement sets the offsets of active partitions only once the consumer
has been sought to them, so a position compared with the highwater is
always that of the recovery under way. (``forget_uncommitted_state`` clears
the highwaters too, closing the same window on the revoke side.)

Delete when: Faust checks for aborted transactions only while recovery is
reading (the test in tests/unit/test_faust_fixes.py reads the upstream code).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from stream.faust_fixes.patching import install, upstream


async def build_offsets(self: Any, consumer: Any, tps: Any, destination: Any, title: str) -> None:
    """Faust's ``_build_offsets``; for the active partitions the consumer is
    sought to the new offsets before they are published."""
    from faust.tables.recovery import Recovery

    original = upstream(Recovery, "_build_offsets")
    if destination is not self.active_offsets or not tps:
        return await original(self, consumer, tps, destination, title)
    staged: Counter = Counter({tp: destination[tp] for tp in tps})
    await original(self, consumer, tps, staged, title)
    await consumer.seek_wait({tp: max(staged[tp] or 0, 0) for tp in tps})  # as _seek_offsets
    for tp in tps:  # (Counter.update would add)
        destination[tp] = staged[tp]


def fix_recovery_positions() -> None:
    from faust.tables.recovery import Recovery

    install(Recovery, "_build_offsets", build_offsets)

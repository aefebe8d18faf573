"""A kept partition's recovery is skipped: an idle check taken from before the recovery.

Patches ``faust.transport.consumer.ThreadDelegateConsumer.position`` and
``faust.tables.recovery.Recovery._build_offsets`` (faust-streaming 0.15.3;
the ``detect_aborted_tx`` step of ``Recovery._slurp_changelogs``).

Under exactly-once a changelog ends with a commit marker that no record
reaches, so Faust's changelog reader, once its queue has been idle for two
5-s checks, takes every active changelog partition whose consumer position
is at or past its highwater as read to the end ("Aborted tx until
highwater"). The idle count is kept across recoveries: when the queue was
idle before a rebalance (chaos scenario 8: every agent waits 20 s for
Redis), the first 5-s check after the new recovery resumes fetching runs the
step at once. By then aiokafka has fetched the whole changelog (its position
is at the end) but not one record has reached the queue: every partition is
marked read, none is applied, and the partition's engine loads from empty
tables while its input resumes from the committed offsets. The soak of
scenario 8 lost 5,199, 5,900 and 5,805 events of kept partitions that way in
3 of 17 runs (2026-11-30; the trace shows "Aborted tx until highwater" 0.2 s
after "Resuming flow...", and "partition engine loaded ... journeys 0" with
its changelogs "read" to their highwaters).

The replacement ``position`` answers -1 (never at the highwater) for an
active changelog partition until the reader has had nothing for
``IDLE_S`` since the current recovery set its offsets (``_build_offsets``
stamps the time) and since its last record: Faust's rule, counted from this
recovery only.

Delete when: Faust's idle count starts with each recovery, or it compares
the offsets applied instead of the consumer's position (the test in
tests/unit/test_faust_fixes.py reads the upstream code).
"""

from __future__ import annotations

import time
from typing import Any

from stream.faust_fixes.patching import install, upstream

IDLE_S = 10.0  # Faust's two idle checks of 5 s each


def reading_idle(recovery: Any, now: float) -> bool:
    """Whether the changelog reader has had nothing for ``IDLE_S`` since this
    recovery set its offsets."""
    since = getattr(recovery, "funnel_offsets_set_at", 0.0)
    last = max(recovery._active_events_received_at.values(), default=0.0)
    return now - max(since, last) >= IDLE_S


async def position(self: Any, tp: Any) -> int | None:
    """The consumer's position; -1 for an active changelog partition whose
    recovery has not been idle long enough to judge by it."""
    from faust.transport.consumer import ThreadDelegateConsumer

    recovery = self.app.tables.recovery
    if tp in recovery.active_tps and not reading_idle(recovery, time.monotonic()):
        return -1
    return await upstream(ThreadDelegateConsumer, "position")(self, tp)


async def build_offsets(self: Any, consumer: Any, tps: Any, destination: Any, title: str) -> None:
    """Faust's ``_build_offsets``, stamping when the active offsets were set."""
    from faust.tables.recovery import Recovery

    if destination is self.active_offsets:
        self.funnel_offsets_set_at = time.monotonic()
    await upstream(Recovery, "_build_offsets")(self, consumer, tps, destination, title)


def fix_recovery_positions() -> None:
    from faust.tables.recovery import Recovery
    from faust.transport.consumer import ThreadDelegateConsumer

    install(Recovery, "_build_offsets", build_offsets)
    install(ThreadDelegateConsumer, "position", position)

"""Messages re-fetched after a rebalance are dropped as "already read".

Patches ``faust.transport.consumer.Consumer.__init__`` (its ``_read_offset``
dict) and ``Consumer.seek`` (faust-streaming 0.15.3). Related upstream work:
faust-streaming/faust#221 and #253 (prefetched events and fetching while the
flow is stopped during a rebalance), robinhood/faust#115 (first message after
a rebalance dropped).

Faust's fetch loop hands each message to the streams with
``wait_first(callback(message), suspend_flow.wait())`` and then records it as
read even when the suspend side won and the message was never delivered.
During a rebalance this runs after recovery's seek back to the committed
offsets, so the re-fetched messages below the recorded offset are dropped as
already read: events lost, and the hole in the acks stops that partition's
commits. Seeks write through ``dict`` methods and still apply; only the
loop's writes while the flow is stopped are ignored.

Delete when: Faust's fetch loop records a read offset only for a delivered
message (the test in tests/unit/test_faust_fixes.py checks the upstream loop).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any


class ReadOffsets(defaultdict):
    """Faust's per-partition read offsets, ignoring the fetch loop while flow is stopped."""

    def __init__(self, suspended: Any) -> None:  # a mode Event
        super().__init__(lambda: None)
        self._suspended = suspended

    def __setitem__(self, tp: Any, offset: Any) -> None:
        if self._suspended.is_set():
            return
        dict.__setitem__(self, tp, offset)


def fix_read_offset_race() -> None:
    from faust.transport import consumer as consumer_mod

    cls = consumer_mod.Consumer
    if getattr(cls.__init__, "funnel_fixed", False):
        return
    original_init = cls.__init__

    def __init__(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202, N807
        original_init(self, *args, **kwargs)
        self._read_offset = ReadOffsets(self.suspend_flow)

    async def seek(self, partition, offset):  # noqa: ANN001, ANN202
        await self._seek(partition, offset)
        dict.__setitem__(self._read_offset, consumer_mod.ensure_TP(partition), offset or None)

    __init__.funnel_fixed = True  # type: ignore[attr-defined]
    cls.__init__ = __init__
    cls.seek = seek

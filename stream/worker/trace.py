"""Debug aids (FUNNEL_TRACE_OFFSETS=1): batch offset ranges, Faust's gaps and seeks."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

log = logging.getLogger("stream.trace")


def trace_batch(agent: str, batch: list, **extra: Any) -> None:
    """A batch's offset range and size per topic partition."""
    ranges: dict[str, list[int]] = defaultdict(list)
    for event in batch:
        ranges[f"{event.message.topic}:{event.message.partition}"].append(event.message.offset)
    summary = {tp: [min(o), max(o), len(o)] for tp, o in ranges.items()}
    log.warning("batch", extra={"agent": agent, "ranges": summary, **extra})


def trace_offsets() -> None:
    """Log every gap Faust records and every seek."""

    from faust.transport import consumer as consumer_mod

    cls = consumer_mod.Consumer
    original_gap = cls._add_gap
    original_seek = cls.seek

    async def _add_gap(self, tp, offset_from, offset_to):  # noqa: ANN001, ANN202
        log.warning(
            "gap",
            extra={
                "tp": str(tp),
                "from": offset_from,
                "to": offset_to,
                "suspended": self.suspend_flow.is_set(),
                "committed": self._committed_offset.get(tp),
            },
        )
        return await original_gap(self, tp, offset_from, offset_to)

    async def seek(self, partition, offset):  # noqa: ANN001, ANN202
        log.warning("seek", extra={"tp": str(partition), "offset": offset})
        return await original_seek(self, partition, offset)

    cls._add_gap = _add_gap
    cls.seek = seek

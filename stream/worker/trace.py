"""Debug aids (FUNNEL_TRACE_OFFSETS=1): batch offset ranges, Faust's gaps, seeks,
commits, and the stream-queue clears of its flow control; Faust's recovery log."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

log = logging.getLogger("stream.trace")


def trace_batch(agent: str, batch: list, **extra: Any) -> None:
    """A batch's offset range and size per topic partition, and its generation."""
    from stream.worker import transactions

    ranges: dict[str, list[int]] = defaultdict(list)
    for event in batch:
        ranges[f"{event.message.topic}:{event.message.partition}"].append(event.message.offset)
    summary = {tp: [min(o), max(o), len(o)] for tp, o in ranges.items()}
    began = transactions._batch_generation.get()
    now = transactions._generation[0]
    log.warning(
        "batch", extra={"agent": agent, "ranges": summary, "began": began, "now": now, **extra}
    )


def trace_offsets() -> None:
    """Install every trace: gaps, seeks, commits, queue clears (Faust's recovery
    log at info is in ``stream.logs.logging_config``)."""
    from faust.transport import consumer as consumer_mod

    cls = consumer_mod.Consumer
    trace_gaps_and_seeks(cls)
    trace_commits(cls)
    trace_queue_clears()


def trace_gaps_and_seeks(cls: Any) -> None:
    original_gap, original_seek = cls._add_gap, cls.seek
    original_perform_seek = cls.perform_seek

    async def _add_gap(self, tp, offset_from, offset_to):  # noqa: ANN001, ANN202
        extra = {"tp": str(tp), "from": offset_from, "to": offset_to}
        extra.update(suspended=self.suspend_flow.is_set(), committed=self._committed_offset.get(tp))
        log.warning("gap", extra=extra)
        return await original_gap(self, tp, offset_from, offset_to)

    async def seek(self, partition, offset):  # noqa: ANN001, ANN202
        log.warning("seek", extra={"tp": str(partition), "offset": offset})
        return await original_seek(self, partition, offset)

    async def perform_seek(self):  # noqa: ANN001, ANN202
        await original_perform_seek(self)
        reads = {f"{k.topic}:{k.partition}": v for k, v in self._read_offset.items()}
        log.warning("seek to committed", extra={"read_offsets": reads})

    cls._add_gap, cls.seek, cls.perform_seek = _add_gap, seek, perform_seek


def trace_commits(cls: Any) -> None:
    original = cls._commit_offsets

    async def _commit_offsets(self, offsets, start_new_transaction=True):  # noqa: ANN001, ANN202
        done = await original(self, offsets, start_new_transaction)
        shown = {f"{k.topic}:{k.partition}": v for k, v in offsets.items()}
        log.warning("commit", extra={"offsets": shown, "committed": done})
        return done

    cls._commit_offsets = _commit_offsets


def trace_queue_clears() -> None:
    """What ``FlowControlEvent.resume`` drops from the stream queues (stalled_tails.py)."""
    from mode.utils.queues import FlowControlEvent

    original = FlowControlEvent.resume

    def resume(self):  # noqa: ANN001, ANN202
        cleared = defaultdict(list)
        for queue in self._queues:
            for event in list(queue._queue):
                msg = getattr(event, "message", None)
                if msg is not None:
                    cleared[f"{msg.topic}:{msg.partition}"].append(msg.offset)
        summary = {k: [min(v), max(v), len(v)] for k, v in cleared.items()}
        log.warning(
            "flow resume", extra={"was_suspended": self._suspend.is_set(), "cleared": summary}
        )
        return original(self)

    FlowControlEvent.resume = resume

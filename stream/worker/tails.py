"""Partitions whose tail Faust fetched and never delivered: read again.

The adapter over faust_fixes/stalled_tails.py: every idle check, once the
worker is ready, each assigned input and events partition is compared with
its end; one that stalled is sought back to the offset its agent expects,
so Faust fetches and delivers those records again. The agents skip what
they applied before (worker/offsets.py), so a seek of a partition that was
only slow costs a re-read, never a double count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from faust.types import TP

from stream.core import state
from stream.faust_fixes.stalled_tails import Tail
from stream.worker import partitions
from stream.worker.context import Context
from stream.worker.metrics import REREAD

log = logging.getLogger("stream.worker")


async def watch(ctx: Context) -> None:
    """Check every FUNNEL_IDLE_CHECK seconds; a failed check is logged and retried."""
    while True:
        await asyncio.sleep(ctx.settings.idle_check)
        try:
            await check(ctx)
        except Exception as exc:  # noqa: BLE001 - e.g. the broker away for a while
            log.warning("stalled partition check failed", extra={"error": repr(exc)})


async def check(ctx: Context) -> None:
    if not partitions.ready(ctx):
        return
    now = time.monotonic()
    if ctx.ready_since is None:  # first check since the assignment's recovery ended
        ctx.ready_since = now
    tails = {}
    for tp in stream_partitions(ctx):
        # Idle since its last batch, or since the worker became ready (a recovery
        # of minutes is not a stall); both are cleared on each assignment.
        idle = now - ctx.last_batch.get(tp, ctx.ready_since)
        end = end_offset(ctx, tp)
        if idle < ctx.settings.stall_after or not end:
            continue  # busy, or nothing in it: no need to ask where it stands
        tails[tp] = Tail(await expected_offset(ctx, tp), end, idle)
    for tp, offset in ctx.tails.to_reread(tails, ctx.settings.stall_after).items():
        log.warning(
            "partition stalled: records past the next offset were never delivered; "
            "reading them again",
            extra={"tp": f"{tp.topic}:{tp.partition}", "offset": offset, "end": tails[tp].end},
        )
        REREAD.labels(topic=tp.topic).inc()
        await ctx.app.consumer.seek(tp, offset)


def stream_partitions(ctx: Context) -> list[TP]:
    """The assigned partitions the agents read: input topics and the events topic."""
    topics = {*ctx.settings.topics.values(), ctx.settings.events_topic}
    return [tp for tp in ctx.app.assignor.assigned_actives() if tp.topic in topics]


async def expected_offset(ctx: Context, tp: TP) -> int | None:
    """The next offset the partition's agent expects; before its first batch,
    where the group resumes it (asked of the broker once per assignment)."""
    if tp.topic == ctx.settings.events_topic:
        known = ctx.tables.marks.data.get(state.next_offset_key(tp.partition))
    else:
        known = ctx.source_next.get(tp)
    if known is not None:
        return known
    if tp not in ctx.tails.starts:
        ctx.tails.starts[tp] = await ctx.refetcher.start(tp.topic, tp.partition)
    return ctx.tails.starts[tp]


def end_offset(ctx: Context, tp: TP) -> int | None:
    """The partition's end as the consumer last saw it (the last stable offset)."""
    try:
        end: Any = ctx.app.consumer.highwater(tp)
    except Exception:  # noqa: BLE001 - no longer assigned in the client
        return None
    return end if isinstance(end, int) else None

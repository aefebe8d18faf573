"""Calls and deal stages attributed from Redis (call tracking) before they are counted.

While Redis is down the CRM events are held back (the shop topics go on),
never guessed; the agent retries with a growing delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from stream.net import redacted_url
from stream.worker.context import Context
from stream.worker.metrics import ATTRIBUTED, HELD, REDIS_UP
from stream.worker.tracking_store import attribute_all

log = logging.getLogger("stream.worker")

MAX_DELAY = 5.0  # seconds between retries while Redis is down


async def enrich(
    ctx: Context, batch: list[tuple[Any, bytes, Any]]
) -> list[tuple[bytes, list[bytes]]]:
    """Each (event, bytes, message) of a batch: its bytes with the call-tracking
    touch filled in, once Redis answers, and corrections of deal events that
    waited for its call; the batch in a few Redis round trips (``attribute_all``)."""
    delay, since = 0.5, None
    while True:
        try:
            results = await attribute_all(ctx.store, [(ev, raw) for ev, raw, _ in batch])
        except RedisError as exc:
            if since is None:
                since = time.monotonic()
                redis_down(ctx, exc, batch[0][2])
            HELD.set(1)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
            continue
        if since is not None:
            REDIS_UP.set(1)
            HELD.set(0)
            log.warning(
                "Redis is back: attributing held events",
                extra={"held_s": round(time.monotonic() - since, 1)},
            )
        for (ev, _, _), (_, result, fixes) in zip(batch, results, strict=True):
            ATTRIBUTED.labels(type=ev.type, result=result).inc()
            if fixes:
                ATTRIBUTED.labels(type="deal_stage", result="corrected").inc(len(fixes))
        return [(raw, fixes) for raw, _, fixes in results]


def redis_down(ctx: Context, exc: Exception, msg: Any) -> None:
    REDIS_UP.set(0)
    log.warning(
        "Redis unavailable: holding call and deal events until it is back",
        extra={
            "redis": redacted_url(ctx.settings.redis_url),
            "error": str(exc),
            "tp": str(msg.tp),
            "offset": msg.offset,
        },
    )


async def sync_number_pool(ctx: Context) -> None:
    """Make the Redis number pool match the configuration (at start)."""
    try:
        await ctx.store.sync_pool()
        ctx.pool_synced = True
        REDIS_UP.set(1)
    except RedisError as exc:  # then the first lease request syncs it
        REDIS_UP.set(0)
        log.warning("Redis unavailable at start", extra={"error": str(exc)})

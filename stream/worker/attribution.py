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
from stream.worker.tracking_store import attribute

log = logging.getLogger("stream.worker")

MAX_DELAY = 5.0  # seconds between retries while Redis is down


async def enrich(ctx: Context, ev: Any, raw: bytes, msg: Any) -> tuple[bytes, list[bytes]]:
    """The event's bytes with the call-tracking touch filled in, once Redis answers,
    and corrections of deal events that waited for this call."""
    delay, since = 0.5, None
    while True:
        try:
            raw, result, fixes = await attribute(ctx.store, ev, raw)
        except RedisError as exc:
            if since is None:
                since = time.monotonic()
                redis_down(ctx, exc, msg)
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
        ATTRIBUTED.labels(type=ev.type, result=result).inc()
        if fixes:
            ATTRIBUTED.labels(type="deal_stage", result="corrected").inc(len(fixes))
        return raw, fixes


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

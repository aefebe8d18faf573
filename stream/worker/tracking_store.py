"""Call-tracking state in Redis (DESIGN.md section 6): the number pool, the
lease history per number, and identity links (call -> touch, visitor -> first
touch). A thin adapter; the rules are in stream/core/tracking.py.

Keys (prefix ``funnel:`` by default):
- ``pool``: sorted set, number -> time its current lease ends (0 = never
  leased), so the lowest score is the number free longest (least recently used);
- ``leases:<number>``: sorted set of lease start times, and ``lease:<number>:<start>``
  a hash of the lease (visitor, session, touch, until): the history that a
  call at time t is looked up in;
- ``session:<id>``: the number a session holds (the same session gets it back);
- ``call:<id>`` and ``visitor:<id>``: touches a later deal can inherit;
- ``waiting:<call id>``: deal events that named a call before it came (their
  original bytes), corrected and sent again when it comes.
Lease history and links expire after ``keep`` seconds (default 35 days).
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis

from stream.core.tracking import TOUCH_FIELDS, Tracking, fill, filled

# Deal events kept per call not seen yet (the newest), and how long they are kept
# once the call came (a batch read again after a crash sends them again).
WAITING_PER_CALL = 100
WAITING_AFTER_CALL_S = 600

# Leases the least recently used free number, or extends the session's own.
# KEYS: pool, session key. ARGV: now, lease seconds, record JSON, prefix, keep.
LEASE = """
local now, ttl, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
local prefix = ARGV[4]
local number, start
local held = redis.call('GET', KEYS[2])
if held then
  local ends = redis.call('ZSCORE', KEYS[1], held)
  local last = redis.call('ZREVRANGE', prefix .. 'leases:' .. held, 0, 0)
  if ends and tonumber(ends) >= now and last[1] then
    number, start = held, last[1]
  end
end
if not number then
  local free = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1)
  if #free == 0 then return false end
  number, start = free[1], ARGV[1]
  redis.call('ZADD', prefix .. 'leases:' .. number, now, start)
  redis.call('ZREMRANGEBYSCORE', prefix .. 'leases:' .. number, '-inf', now - keep)
  redis.call('EXPIRE', prefix .. 'leases:' .. number, keep)
end
local lease = prefix .. 'lease:' .. number .. ':' .. start
redis.call('HSET', lease, 'record', ARGV[3], 'start', start, 'until', now + ttl)
redis.call('EXPIRE', lease, keep)
redis.call('ZADD', KEYS[1], now + ttl, number)
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], number, 'EX', ttl) end
return {number, start}
"""


# A deal's call touch, or (the call not seen yet) the deal put on its waiting list.
# KEYS: call key, waiting key. ARGV: the deal event's bytes, list length, keep seconds.
CALL_OR_WAIT = """
local touch = redis.call('GET', KEYS[1])
if touch then return touch end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return false
"""


# The touch of the lease a number had at a time (one round trip instead of two).
# KEYS: the number's leases key. ARGV: the time, the prefix of its lease hashes.
TOUCH_AT = """
local starts = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'LIMIT', 0, 1)
if #starts == 0 then return false end
local lease = redis.call('HMGET', ARGV[2] .. starts[1], 'record', 'until')
if not lease[1] or not lease[2] or tonumber(ARGV[1]) > tonumber(lease[2]) then return false end
return lease[1]
"""

# A call's touch remembered and the deals waiting for it taken, atomically (see
# ``TrackingStore.call_came``). KEYS: call key, waiting key.
# ARGV: the touch JSON, keep seconds, seconds the waiting list is kept after.
# (EXPIRE ... LT needs Redis 7; the TTL check works on 6.)
CALL_CAME = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
local waiting = redis.call('LRANGE', KEYS[2], 0, -1)
if redis.call('TTL', KEYS[2]) > tonumber(ARGV[3]) then
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
end
return waiting
"""


class TrackingStore:
    def __init__(
        self, url: str, tracking: Tracking, prefix: str = "funnel:", keep: float = 35 * 86400
    ) -> None:
        self.redis = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.tracking = tracking
        self.prefix = prefix
        self.keep = int(keep)
        self._lease = self.redis.register_script(LEASE)
        self._call_or_wait = self.redis.register_script(CALL_OR_WAIT)
        self._touch_at = self.redis.register_script(TOUCH_AT)
        self._call_came = self.redis.register_script(CALL_CAME)

    async def close(self) -> None:
        await self.redis.aclose()

    async def sync_pool(self) -> None:
        """Make the pool hold exactly the configured numbers (new ones never leased)."""
        key = self.prefix + "pool"
        if self.tracking.pool:
            await self.redis.zadd(key, dict.fromkeys(self.tracking.pool, 0), nx=True)
        present = {n.decode() for n in await self.redis.zrange(key, 0, -1)}
        gone = present - set(self.tracking.pool)
        if gone:
            await self.redis.zrem(key, *gone)

    async def lease(self, request: dict[str, str], now: float) -> dict[str, Any]:
        """A number for a visitor's session: ``{number, kind, until}``; kind is
        ``dynamic``, or ``static`` when the pool is exhausted (or empty)."""
        session = request.get("session_id")
        record = orjson.dumps(request).decode()
        session_key = f"{self.prefix}session:{session}" if session else ""
        got = await self._lease(
            keys=[self.prefix + "pool", session_key],
            args=[repr(now), self.tracking.lease, record, self.prefix, self.keep],
        )
        visitor_key = f"{self.prefix}visitor:{request['visitor_id']}"
        touch = {k: v for k, v in request.items() if k in TOUCH_FIELDS}
        if touch:  # the visitor's first touch, for deals that carry only visitor_id
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(visitor_key, "record", orjson.dumps(touch))
                pipe.expire(visitor_key, self.keep)
                await pipe.execute()
        if got:
            number, _start = (x.decode() for x in got)
            return {"number": number, "kind": "dynamic", "until": now + self.tracking.lease}
        number = self.tracking.static_for(request.get("source"))
        return {"number": number, "kind": "static", "until": None}

    async def touch_of_number(self, number: str, at: float) -> dict[str, Any] | None:
        """What a call to ``number`` at time ``at`` is attributed to, or None."""
        if number in self.tracking.static:
            return dict(self.tracking.static[number])
        got = await self._touch_at(
            keys=[f"{self.prefix}leases:{number}"], args=[repr(at), f"{self.prefix}lease:{number}:"]
        )
        return None if not got else orjson.loads(got)

    async def call_came(self, call_id: str, touch: dict[str, Any]) -> list[bytes]:
        """Remember the call's touch and return the deal events waiting for it, in
        one Redis script: a deal of this call handled at the same moment (its
        own transaction, ``touch_of_call_or_wait``) either sees the touch or is in
        the list, never neither. The waiting events are kept a few minutes more,
        so a batch read again after a crash sends their corrections again (a
        correction is idempotent)."""
        got = await self._call_came(
            keys=[f"{self.prefix}call:{call_id}", f"{self.prefix}waiting:{call_id}"],
            args=[orjson.dumps(touch), self.keep, WAITING_AFTER_CALL_S],
        )
        return list(got)

    async def touch_of_call_or_wait(self, call_id: str, raw: bytes) -> dict[str, Any] | None:
        """The touch of a deal's call; if the call has not come yet, the deal event
        is put on its waiting list in the same script (see ``call_came``)."""
        got = await self._call_or_wait(
            keys=[f"{self.prefix}call:{call_id}", f"{self.prefix}waiting:{call_id}"],
            args=[raw, WAITING_PER_CALL, self.keep],
        )
        return None if not got else orjson.loads(got)

    async def touch_of_visitor(self, visitor_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(f"{self.prefix}visitor:{visitor_id}", "record")
        return None if raw is None else orjson.loads(raw)


async def attribute(store: TrackingStore, event: Any, raw: bytes) -> tuple[bytes, str, list[bytes]]:
    """The event as it goes to the internal topic, how it was attributed, and
    corrections of deal events sent before (to replace them, same event ids).

    A call gets the touch of the lease its number had at the call's time (or
    the static number's source): result ``lease``, ``static`` or ``none``;
    the touch is remembered for deals that name the call, and the deal events
    that named it before it came are sent again as if it had come first. A
    deal stage without a channel inherits its call's touch, else its visitor's
    first touch: ``call``, ``visitor``, ``none``; one whose call is not known
    yet waits for it (in Redis, its original bytes). One that has a channel is
    left as it is (``own``). Other events pass through (``own``). Redis errors
    propagate: the caller holds the event back and retries, never guessing.
    """
    if event.type == "call":
        touch = await store.touch_of_number(event.tracking_number, event.ts)
        result = "none" if touch is None else ("static" if "visitor_id" not in touch else "lease")
        doc = orjson.loads(raw)
        changed = fill(doc, touch)
        link = {k: doc[k] for k in (*TOUCH_FIELDS, "visitor_id") if doc.get(k)}
        fixes = []
        if link:
            fixes = [filled(deal, link) for deal in await store.call_came(event.call_id, link)]
        return (orjson.dumps(doc) if changed else raw), result, fixes
    if event.type == "deal_stage" and event.channel is None:
        touch, result = None, "none"
        if event.call_id:
            touch, result = await store.touch_of_call_or_wait(event.call_id, raw), "call"
        if touch is None and event.visitor_id:
            touch, result = await store.touch_of_visitor(event.visitor_id), "visitor"
        if touch is None:
            return raw, "none", []
        return filled(raw, touch), result, []
    return raw, "own", []

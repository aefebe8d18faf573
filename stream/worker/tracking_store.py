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

# What a batch asks of calls and their deals, in order (``calls_and_waits``).
CAME, WAIT = "came", "wait"
Ask = tuple[str, str, Any]  # (CAME, call id, touch) or (WAIT, call id, deal event bytes)

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
        return (await self.touches_of_numbers([(number, at)]))[0]

    async def call_came(self, call_id: str, touch: dict[str, Any]) -> list[bytes]:
        """Remember the call's touch and return the deal events waiting for it, in
        one Redis script: a deal of this call handled at the same moment (its
        own transaction, ``touch_of_call_or_wait``) either sees the touch or is in
        the list, never neither. The waiting events are kept a few minutes more,
        so a batch read again after a crash sends their corrections again (a
        correction is idempotent)."""
        return (await self.calls_and_waits([(CAME, call_id, touch)]))[0]

    async def touch_of_call_or_wait(self, call_id: str, raw: bytes) -> dict[str, Any] | None:
        """The touch of a deal's call; if the call has not come yet, the deal event
        is put on its waiting list in the same script (see ``call_came``)."""
        return (await self.calls_and_waits([(WAIT, call_id, raw)]))[0]

    async def touch_of_visitor(self, visitor_id: str) -> dict[str, Any] | None:
        return (await self.touches_of_visitors([visitor_id]))[0]

    # Batches: one round trip (a pipeline, not a transaction: each script is atomic
    # on its own, as when sent one by one) for all of a batch's events, in order.

    async def touches_of_numbers(self, asks: list[tuple[str, float]]) -> list[dict | None]:
        """``touch_of_number`` of each (number, time)."""
        out: list[dict | None] = [None] * len(asks)
        live = []
        for i, (number, _) in enumerate(asks):
            if number in self.tracking.static:
                out[i] = dict(self.tracking.static[number])
            else:
                live.append(i)
        if not live:
            return out
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in live:
                number, at = asks[i]
                keys = [f"{self.prefix}leases:{number}"]
                args = [repr(at), f"{self.prefix}lease:{number}:"]
                await self._touch_at(keys=keys, args=args, client=pipe)
            got = await pipe.execute()
        for i, record in zip(live, got, strict=True):
            out[i] = None if not record else orjson.loads(record)
        return out

    async def calls_and_waits(self, asks: list[Ask]) -> list[Any]:
        """In order, each ``(CAME, call id, touch)`` as ``call_came`` (the waiting
        deal events) and each ``(WAIT, call id, deal bytes)`` as
        ``touch_of_call_or_wait`` (the call's touch or None)."""
        if not asks:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for kind, call_id, what in asks:
                keys = [f"{self.prefix}call:{call_id}", f"{self.prefix}waiting:{call_id}"]
                if kind == CAME:
                    args = [orjson.dumps(what), self.keep, WAITING_AFTER_CALL_S]
                    await self._call_came(keys=keys, args=args, client=pipe)
                else:
                    args = [what, WAITING_PER_CALL, self.keep]
                    await self._call_or_wait(keys=keys, args=args, client=pipe)
            got = await pipe.execute()
        return [
            list(answer) if kind == CAME else (None if not answer else orjson.loads(answer))
            for (kind, _, _), answer in zip(asks, got, strict=True)
        ]

    async def touches_of_visitors(self, visitor_ids: list[str]) -> list[dict | None]:
        """``touch_of_visitor`` of each visitor id."""
        if not visitor_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for visitor_id in visitor_ids:
                pipe.hget(f"{self.prefix}visitor:{visitor_id}", "record")
            got = await pipe.execute()
        return [None if raw is None else orjson.loads(raw) for raw in got]


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
    return (await attribute_all(store, [(event, raw)]))[0]


async def attribute_all(
    store: TrackingStore, batch: list[tuple[Any, bytes]]
) -> list[tuple[bytes, str, list[bytes]]]:
    """``attribute`` of each (event, bytes) of a batch, exactly as one after another
    in this order, in three round trips instead of up to two per event (issue
    #22: a call's two were 6 % of a worker's time): the calls' numbers looked up;
    then, in the batch's order, each call's touch remembered (taking the deals
    that waited for it) and each deal's call asked (or the deal put to wait), so
    a deal after its call sees it and one before it waits and is corrected; then
    the visitors of the deals still without a touch."""
    out = [(raw, "own", []) for _, raw in batch]
    calls = [i for i, (ev, _) in enumerate(batch) if ev.type == "call"]
    deals = [i for i, (ev, _) in enumerate(batch) if ev.type == "deal_stage" and ev.channel is None]
    numbers = [(batch[i][0].tracking_number, batch[i][0].ts) for i in calls]
    asks: list[tuple[int, Ask]] = []
    for i, touch in zip(calls, await store.touches_of_numbers(numbers), strict=True):
        out[i], link = _call_touched(batch[i][1], touch)
        if link:
            asks.append((i, (CAME, batch[i][0].call_id, link)))
    asks += [(i, (WAIT, batch[i][0].call_id, batch[i][1])) for i in deals if batch[i][0].call_id]
    asks.sort(key=lambda ask: ask[0])  # the batch's order
    touches: dict[int, tuple[dict | None, str]] = {i: (None, "none") for i in deals}
    answers = await store.calls_and_waits([ask for _, ask in asks])
    for (i, (kind, _, link)), answer in zip(asks, answers, strict=True):
        if kind == CAME:
            out[i] = (out[i][0], out[i][1], [filled(deal, link) for deal in answer])
        else:
            touches[i] = (answer, "call")
    ask_visitor = [i for i in deals if touches[i][0] is None and batch[i][0].visitor_id]
    found = await store.touches_of_visitors([batch[i][0].visitor_id for i in ask_visitor])
    touches.update({i: (t, "visitor") for i, t in zip(ask_visitor, found, strict=True)})
    for i, (touch, result) in touches.items():
        raw = batch[i][1]
        out[i] = (raw, "none", []) if touch is None else (filled(raw, touch), result, [])
    return out


def _call_touched(raw: bytes, touch: dict | None) -> tuple[tuple[bytes, str, list], dict]:
    """A call's bytes with its number's touch filled in, how it was attributed, and
    the link its deals inherit (its touch and visitor)."""
    result = "none" if touch is None else ("static" if "visitor_id" not in touch else "lease")
    doc = orjson.loads(raw)
    changed = fill(doc, touch)
    link = {k: doc[k] for k in (*TOUCH_FIELDS, "visitor_id") if doc.get(k)}
    return ((orjson.dumps(doc) if changed else raw), result, []), link

"""The call-tracking store's Redis scripts against the real Redis: which lease a
call falls in, and a call meeting the deal events that waited for it."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from stream.core.tracking import Tracking
from stream.worker.tracking_store import WAITING_AFTER_CALL_S, TrackingStore
from tests.support import settings_for

pytestmark = pytest.mark.integration

TRACKING = Tracking(
    lease=600,
    pool=("+15555550100",),
    static={"+15555550150": {"channel": "paid", "source": "google"}},
    default_static="+15555550150",
)


def store_for(stack_env: dict[str, str]) -> TrackingStore:
    prefix = f"funnel-test-store-{uuid.uuid4().hex[:8]}:"
    return TrackingStore(settings_for(stack_env).redis_url, TRACKING, prefix=prefix)


def run(coro):
    return asyncio.run(coro)


def test_a_call_gets_the_lease_its_number_had_at_the_calls_time(stack, stack_env):
    async def scenario() -> list:
        store = store_for(stack_env)
        try:
            await store.sync_pool()
            first = {"visitor_id": "v1", "session_id": "s1", "source": "google"}
            second = {"visitor_id": "v2", "session_id": "s2", "source": "bing"}
            got1 = await store.lease(first, 1000.0)
            got2 = await store.lease(second, 2000.0)  # the first lease ended at 1600
            number = got1["number"]
            return [
                got1["number"] == got2["number"] == "+15555550100",
                await store.touch_of_number(number, 999.0),  # before any lease
                await store.touch_of_number(number, 1000.0),
                await store.touch_of_number(number, 1599.5),
                await store.touch_of_number(number, 1700.0),  # between leases
                await store.touch_of_number(number, 2000.0),
                await store.touch_of_number("+15555550150", 5.0),  # static
                await store.touch_of_number("+19999999999", 1000.0),  # never leased
            ]
        finally:
            await store.redis.delete(*await store.redis.keys(store.prefix + "*"))
            await store.close()

    same, before, start, end, gap, second, static, unknown = run(scenario())
    assert same
    assert before is None and gap is None and unknown is None
    assert start["visitor_id"] == end["visitor_id"] == "v1"
    assert second["visitor_id"] == "v2" and second["source"] == "bing"
    assert static == {"channel": "paid", "source": "google"}


def test_a_call_takes_the_deals_that_waited_for_it_and_later_deals_see_its_touch(stack, stack_env):
    async def scenario() -> tuple:
        store = store_for(stack_env)
        try:
            early = [b'{"deal_id":"d1","n":1}', b'{"deal_id":"d1","n":2}']
            waited = [await store.touch_of_call_or_wait("c1", raw) for raw in early]
            touch = {"channel": "paid", "campaign": "winter"}
            taken = await store.call_came("c1", touch)
            ttl = await store.redis.ttl(store.prefix + "waiting:c1")
            call_ttl = await store.redis.ttl(store.prefix + "call:c1")
            later = await store.touch_of_call_or_wait("c1", b'{"deal_id":"d1","n":3}')
            again = await store.call_came("c1", touch)  # a batch read again after a crash
            nothing = await store.call_came("c2", touch)
            return waited, taken, ttl, call_ttl, later, again, nothing
        finally:
            await store.redis.delete(*await store.redis.keys(store.prefix + "*"))
            await store.close()

    waited, taken, ttl, call_ttl, later, again, nothing = run(scenario())
    assert waited == [None, None]
    assert taken == [b'{"deal_id":"d1","n":1}', b'{"deal_id":"d1","n":2}']
    assert 0 < ttl <= WAITING_AFTER_CALL_S  # shortened from the keep time
    assert call_ttl > WAITING_AFTER_CALL_S  # the touch is kept the full keep time
    assert later == {"channel": "paid", "campaign": "winter"}
    assert again == taken and orjson.loads(again[0])["n"] == 1
    assert nothing == []

"""The call-tracking store's Redis scripts against the real Redis: which lease a
call falls in, a call meeting the deal events that waited for it, and a batch
of them in pipelines."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from stream.core.events import decode
from stream.core.tracking import Tracking
from stream.worker.tracking_store import (
    WAITING_AFTER_CALL_S,
    TrackingStore,
    attribute,
    attribute_all,
)
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


def test_a_batch_in_three_pipelines_attributes_as_one_event_after_another(stack, stack_env):
    """``attribute_all`` against the real Redis: a batch (a deal before its call,
    the call to a leased number, a deal after it, a deal of a call not seen
    with a leased visitor, one with its own channel, a call to a static number)
    gives, result for result, what the same events one by one give on a store
    set up the same way; the early deal is corrected and the later one sees
    the call's touch."""
    at = 1_800_000_000.0

    def event(doc: dict) -> tuple:
        raw = orjson.dumps({"occurred_at": "2027-01-15T08:00:00Z", **doc})
        return decode(raw, now=float("inf")), raw

    batch = [
        event({"event_id": "e1", "type": "deal_stage", "deal_id": "d1", "stage": "lead",
               "call_id": "c1"}),
        event({"event_id": "e2", "type": "call", "call_id": "c1",
               "tracking_number": "+15555550100"}),
        event({"event_id": "e3", "type": "deal_stage", "deal_id": "d2", "stage": "lead",
               "call_id": "c1"}),
        event({"event_id": "e4", "type": "deal_stage", "deal_id": "d3", "stage": "lead",
               "call_id": "c9", "visitor_id": "v1"}),
        event({"event_id": "e5", "type": "deal_stage", "deal_id": "d4", "stage": "lead",
               "channel": "email"}),
        event({"event_id": "e6", "type": "call", "call_id": "c2",
               "tracking_number": "+15555550150"}),
    ]  # fmt: skip
    lease = {"visitor_id": "v1", "session_id": "s1", "channel": "paid", "campaign": "winter"}

    async def attributed(batched: bool) -> list:
        store = store_for(stack_env)
        try:
            await store.sync_pool()
            await store.lease(lease, at - 60)
            timed = [(ev, raw) for ev, raw in batch]
            for ev, _ in timed:
                ev.ts = at
            if batched:
                return await attribute_all(store, timed)
            return [await attribute(store, ev, raw) for ev, raw in timed]
        finally:
            await store.redis.delete(*await store.redis.keys(store.prefix + "*"))
            await store.close()

    together, one_by_one = run(attributed(True)), run(attributed(False))
    assert together == one_by_one
    results = [result for _, result, _ in together]
    assert results == ["none", "lease", "call", "visitor", "own", "static"]
    (fix,) = together[1][2]  # the call corrects the deal that came before it
    assert orjson.loads(fix)["event_id"] == "e1" and orjson.loads(fix)["campaign"] == "winter"
    assert orjson.loads(together[2][0])["campaign"] == "winter"

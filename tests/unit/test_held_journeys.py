"""Journeys held as their only event (core/journeys.py ``packed``): the engine holds
less and loses nothing."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core import state
from stream.core.engine import Engine
from stream.core.events import decode, encode, slim
from stream.core.journeys import Held, Journey, packed, unpacked
from tests.unit.test_engine_oracle import BASE, BUCKET, FUNNELS, LATENESS, generate, to_event

SIGNUP = {"event_id": "b", "type": "signup", "visitor_id": "v", "user_id": "u"}


def state_of(journey: Journey) -> tuple:
    return tuple(getattr(journey, f.name) for f in fields(Journey))


def test_a_one_visit_visitor_is_held_as_its_event_until_a_second_event():
    engine = Engine(FUNNELS, bucket=BUCKET, lateness=LATENESS)
    visit = to_event({"event_id": "a", "type": "visit", "visitor_id": "v"}, BASE)
    engine.process(visit)
    assert engine.journeys["shop"]["v"] is visit
    signup = to_event(SIGNUP, BASE + 5)
    engine.process(signup)
    journey = engine.journeys["shop"]["v"]
    assert isinstance(journey, Journey) and journey.items == [visit, signup]
    (changed,) = engine.take_changes().journeys.values()
    assert changed.items == [visit, signup] and changed.newest == BASE + 5


def test_an_event_before_the_held_one_makes_a_whole_journey():
    engine = Engine(FUNNELS, bucket=BUCKET, lateness=LATENESS)
    later = to_event(SIGNUP, BASE + 5)
    earlier = to_event({"event_id": "a", "type": "visit", "visitor_id": "v"}, BASE)
    engine.process(later)
    engine.process(earlier)
    journey = engine.journeys["shop"]["v"]
    assert journey.items == [earlier, later] and journey.contributions is not None


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**9), n=st.integers(1, 80))
def test_packing_any_held_journey_loses_nothing(seed, n):
    """Every journey an engine holds after a random log unpacks to what it was,
    and a packed one packs to the very event it holds."""
    engine = Engine(FUNNELS, bucket=BUCKET, lateness=LATENESS, compact_at=2)
    for ev in generate(seed, n, dup_rate=0.0, late_rate=0.05):
        engine.process(ev)
        engine.advance(ev.ts)
    for by_entity in engine.journeys.values():
        for held in by_entity.values():
            journey = unpacked(held)
            assert state_of(unpacked(packed(journey))) == state_of(journey)
            if not isinstance(held, Journey):
                assert packed(journey) is held


@settings(max_examples=200, deadline=None)
@given(
    when=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    offset_min=st.integers(-14 * 60, 14 * 60),
)
def test_a_slim_event_encodes_the_same_instant(when, offset_min):
    """A held event lets go of its parsed ``occurred_at`` (``events.slim``); stored
    and decoded again it has exactly the time it came with, whatever its offset."""
    local = when.astimezone(timezone(timedelta(minutes=offset_min)))
    raw = orjson.dumps(
        {"event_id": "e", "type": "visit", "visitor_id": "v", "occurred_at": local.isoformat()}
    )
    event = decode(raw, now=float("inf"))
    slim(event)
    assert event.occurred_at is None
    again = decode(encode(event), now=float("inf"))
    assert again.ts == event.ts and again.occurred_at == local


@settings(max_examples=200, deadline=None)
@given(
    when=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    offset_min=st.integers(-14 * 60, 14 * 60),
    slimmed=st.booleans(),
)
def test_a_stored_event_gives_back_the_time_and_id_of_its_record_key(when, offset_min, slimmed):
    """A restarted worker rebuilds an event record's key from the stored event
    (``state.stored_id``; the keys are not kept): the same ``ts`` the key was
    written with, for events stored slim (now) or whole (before 92bf24c)."""
    local = when.astimezone(timezone(timedelta(minutes=offset_min)))
    raw = orjson.dumps(
        {"event_id": "e7", "type": "visit", "visitor_id": "v", "occurred_at": local.isoformat()}
    )
    event = decode(raw, now=float("inf"))
    key = state.item_key(3, "shop", "v", event)
    if slimmed:
        slim(event)
    ts, event_id = state.stored_id(state.held_copy(state.dump_item(event)))
    assert (ts, event_id) == (event.ts, "e7")
    assert state.item_key(3, "shop", "v", Held(ts, event_id)) == key

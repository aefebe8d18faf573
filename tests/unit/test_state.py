"""Engine state through the table encoding: a restored engine continues exactly."""

from __future__ import annotations

import random

import orjson

from stream.core import state
from stream.core.engine import Engine
from stream.core.events import encode
from stream.core.funnels import load_funnels
from tests.unit.test_engine_oracle import make_event, to_event

T0 = 1795460000.0


def events(n: int, seed: int) -> list:
    """The engine oracle test's generated events, 7 s apart."""
    rng = random.Random(seed)
    return [to_event(make_event(i, rng, T0 + i * 7), T0 + i * 7) for i in range(n)]


def persisted(engine: Engine, p: int = 0) -> tuple[dict, dict]:
    """What the worker writes to the journeys and counters tables (JSON round trip)."""
    journeys, counters = {}, {}
    for funnel, by_entity in engine.journeys.items():
        for entity, journey in by_entity.items():
            value = orjson.loads(orjson.dumps(state.dump_journey(journey)))
            journeys[state.journey_key(p, funnel, entity)] = value
    for key, n in engine.counters.items():
        counters[state.counter_key(p, key)] = n
    return journeys, counters


def restored(funnels, journeys: dict, counters: dict, watermark: float) -> Engine:
    engine = Engine(funnels)
    loaded = []
    for key, value in journeys.items():
        _, funnel, entity = state.parse_key(key)
        loaded.append((funnel, entity, state.load_journey(value)))
    counts = [(tuple(state.parse_key(k)[1:]), n) for k, n in counters.items()]
    engine.restore(loaded, counts, watermark)
    return engine


def test_restored_engine_continues_like_one_that_never_stopped():
    funnels = load_funnels()
    stream = events(300, seed=3)
    first, rest = stream[:180], stream[180:]
    through = Engine(funnels)
    for ev in stream:
        through.process(ev)
    before = Engine(funnels)
    for ev in first:
        before.process(ev)
    journeys, counters = persisted(before)
    # Persisted twice (the second time from the kept encodings): the same bytes.
    assert persisted(before) == (journeys, counters)
    after = restored(funnels, journeys, counters, before.watermark)
    for ev in rest:
        after.process(ev)
    assert after.counters == through.counters
    assert persisted(after) == persisted(through)


def test_stored_item_is_the_event_encoding():
    ev = to_event({"event_id": "e1", "type": "visit", "visitor_id": "v1", "channel": "email"}, T0)
    engine = Engine(load_funnels())
    engine.process(ev)
    journey = next(j for by in engine.journeys.values() for j in by.values())
    (item,) = journey.items
    assert state.dump_journey(journey)["items"][0][2] == encode(ev).decode() == item.stored
    loaded = state.load_journey(orjson.loads(orjson.dumps(state.dump_journey(journey))))
    assert loaded.items[0].stored == item.stored and loaded.items[0].event == ev

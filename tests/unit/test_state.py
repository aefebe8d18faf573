"""Engine state through the table encoding: a restored engine continues exactly."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import orjson

from stream import state
from stream.engine import Engine
from stream.events import decode, encode
from stream.funnels import load_funnels

T0 = 1795460000.0


def events(n: int, seed: int) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.choice(["visit", "signup", "cart", "deal_stage"])
        doc = {
            "event_id": f"e{seed}-{i}",
            "type": kind,
            "occurred_at": datetime.fromtimestamp(T0 + i * 7, tz=UTC).isoformat(),
            "channel": rng.choice(["search", "email"]),
        }
        if kind in ("visit", "signup", "cart"):
            doc["visitor_id"] = f"v{rng.randrange(12)}"
        if kind == "signup":
            doc["user_id"] = f"u{i}"
        if kind == "cart":
            doc["action"] = rng.choice(["add", "checkout", "purchase"])
        if kind == "deal_stage":
            doc.update(deal_id=f"d{rng.randrange(5)}", stage=rng.choice(["lead", "qualified"]))
        out.append(decode(orjson.dumps(doc), now=float("inf")))
    return out


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
    ev = events(1, seed=9)[0]
    engine = Engine(load_funnels())
    engine.process(ev)
    journey = next(j for by in engine.journeys.values() for j in by.values())
    (item,) = journey.items
    assert state.dump_journey(journey)["items"][0][2] == encode(ev).decode() == item.stored
    loaded = state.load_journey(orjson.loads(orjson.dumps(state.dump_journey(journey))))
    assert loaded.items[0].stored == item.stored and loaded.items[0].event == ev

"""Engine state through the table encoding: a restored engine continues exactly,
and no record grows with an entity's activity."""

from __future__ import annotations

import random

import orjson

from stream.core import state
from stream.core.engine import Engine
from stream.core.events import encode
from stream.core.funnels import load_funnels
from stream.core.journeys import Held, unpacked
from tests.unit.test_engine_oracle import FUNNELS, make_event, to_event

T0 = 1795460000.0


def events(n: int, seed: int, spacing: float = 7.0) -> list:
    """The engine oracle test's generated events, ``spacing`` seconds apart."""
    rng = random.Random(seed)
    return [to_event(make_event(i, rng, T0 + i * spacing), T0 + i * spacing) for i in range(n)]


def persist(engine: Engine, table: dict, counters: dict, p: int = 0) -> None:
    """What the worker writes after a batch (JSON round trip; None deletes the key);
    the raw values kept per dimension go to ``counters`` too, under their own keys."""
    changes = engine.take_changes()
    for key, value in state.journey_records(p, changes).items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = orjson.loads(orjson.dumps(value))
    values = {k: v for k, v in counters.items() if state.parse_key(k)[1] == "values"}
    values.update({state.values_key(p, f, d): kept for (f, d), kept in changes.values.items()})
    counters.clear()
    counters.update({state.counter_key(p, k): n for k, n in engine.counters.items()})
    counters.update(values)


def restored(funnels, table: dict, counters: dict, watermark: float, **kw) -> Engine:
    engine = Engine(funnels, **kw)
    journeys, orphans = state.load_journeys(table.items())
    assert orphans == 0
    keys = [(state.parse_key(k), v) for k, v in counters.items()]
    counts = [(tuple(k[1:]), n) for k, n in keys if k[1] != "values"]
    values = {(k[2], k[3]): v for k, v in keys if k[1] == "values"}
    engine.restore(state.restored_entries(journeys), counts, watermark, values)
    return engine


def run(engine: Engine, stream: list, table: dict, counters: dict, batch: int = 10) -> None:
    """Process in batches; the watermark follows the newest event; persist per batch."""
    for start in range(0, len(stream), batch):
        for ev in stream[start : start + batch]:
            engine.process(ev)
        engine.advance(max(ev.ts for ev in stream[: start + batch]))
        engine.expire()
        persist(engine, table, counters)


def test_restored_engine_continues_like_one_that_never_stopped():
    funnels = load_funnels()
    stream = events(300, seed=3)
    first, rest = stream[:180], stream[180:]
    through, t_table, t_counters = Engine(funnels), {}, {}
    run(through, stream, t_table, t_counters)
    before, table, counters = Engine(funnels), {}, {}
    run(before, first, table, counters)
    after = restored(funnels, table, counters, before.watermark)
    run(after, rest, table, counters)
    assert after.counters == through.counters
    assert (table, counters) == (t_table, t_counters)


def test_compacted_journeys_restore_and_count_like_whole_ones():
    """Six visitors, five deals and eight calls busy for a day (10- and 30-minute
    windows, events 30 s apart): compacting once a journey holds three events,
    through a restore, counts what an engine holding every event counts."""
    kw = {"bucket": 60, "lateness": 120.0}
    stream = events(3000, seed=5, spacing=30.0)
    whole, w_table, w_counters = Engine(FUNNELS, compact_at=10**9, **kw), {}, {}
    run(whole, stream, w_table, w_counters)
    first, rest = stream[:1700], stream[1700:]
    before, table, counters = Engine(FUNNELS, compact_at=2, **kw), {}, {}
    run(before, first, table, counters)
    after = restored(FUNNELS, table, counters, before.watermark, compact_at=2, **kw)
    run(after, rest, table, counters)
    assert after.counters == whole.counters
    for name in after.journeys:
        after.unstore_all(name)  # restored journeys no event touched since
    held = sum(len(unpacked(j).items) for by in after.journeys.values() for j in by.values())
    held_whole = sum(len(unpacked(j).items) for by in whole.journeys.values() for j in by.values())
    assert held < held_whole / 2
    events_held = [k for k in table if len(state.parse_key(k)) == 5]
    assert len(events_held) == held  # dropped events are deleted from the table


def test_stored_item_is_the_event_encoding():
    ev = to_event({"event_id": "e1", "type": "visit", "visitor_id": "v1", "channel": "email"}, T0)
    engine = Engine(load_funnels())
    engine.process(ev)
    table: dict = {}
    persist(engine, table, {})
    (key,) = [k for k in table if len(state.parse_key(k)) == 5]
    assert table[key] == encode(ev).decode()
    journeys, _ = state.load_journeys(table.items())
    (stored,) = journeys["shop"].values()
    assert stored.item_ids() == [(ev.ts, "e1")]
    loaded = stored.load()
    assert encode(loaded.items[0]).decode() == table[key] and loaded.items[0].ts == ev.ts
    assert loaded.items[0].occurred_at is None  # held slim: ts is the same instant


def test_no_record_grows_with_an_entity_and_capped_values_survive_a_restore():
    """A visitor buying every few minutes for a day, with more channels than the
    ingest cap keeps (top_n 1: ten raw values, the rest `other`): every stored
    record stays small, and a restored engine caps and counts as before."""
    from stream.core.funnels import parse_funnels

    funnels = parse_funnels(
        """
[[funnel]]
name = "shop"
entity = "visitor_id"
window = "1h"
breakdowns = ["channel"]
top_n = 1
steps = [
  { name = "visit",    match = { type = "visit" } },
  { name = "purchase", match = { type = "cart", action = "purchase" } },
]
"""
    )
    rng = random.Random(7)
    stream = []
    for i in range(2000):
        ts = T0 + i * 45
        kind = {"type": "visit"} if i % 2 else {"type": "cart", "action": "purchase", "value": 5}
        doc = {"event_id": f"e{i}", "visitor_id": "buyer", "channel": f"c{rng.randrange(25)}"}
        stream.append(to_event({**doc, **kind, "order_id": f"o{i}"}, ts))
    kw = {"bucket": 60, "lateness": 120.0}
    whole, w_table, w_counters = Engine(funnels, **kw), {}, {}
    run(whole, stream, w_table, w_counters)
    assert max(len(orjson.dumps(v)) for v in w_table.values()) < 16_000
    before, table, counters = Engine(funnels, **kw), {}, {}
    run(before, stream[:1000], table, counters)
    after = restored(funnels, table, counters, before.watermark, **kw)
    run(after, stream[1000:], table, counters)
    assert after.counters == whole.counters
    assert any(k[5] == "other" for k in whole.counters)  # the cap was reached


def test_by_partition_picks_partitions_keys_by_their_text() -> None:
    key = ("shop", "reached", 0, 60, "", "")
    items = [
        (state.counter_key(1, key), 5),
        (state.counter_key(10, key), 6),
        (state.journey_key(1, "shop", "v1"), {"newest": 1.0}),
        (state.journey_key(11, "shop", "v1"), {"newest": 2.0}),
        (state.values_key(1, "shop", "channel"), ["direct"]),
    ]
    got = state.by_partition((k for k, _ in items), {1, 10, 3})
    assert got[1] == [items[0][0], items[2][0], items[4][0]]
    assert got[10] == [items[1][0]] and got[3] == [] and 11 not in got
    assert [state.parse_key(k) for k in got[1]] == [
        [1, *key],
        [1, "shop", "v1"],
        [1, "values", "shop", "channel"],
    ]


def test_a_journey_record_of_the_format_that_held_its_events_still_loads():
    ev = to_event({"event_id": "e1", "type": "visit", "visitor_id": "v1", "channel": "email"}, T0)
    head = {"newest": ev.ts, "carry": None, "items": [[ev.ts, "e1", encode(ev).decode()]]}
    found, orphans = state.load_journeys([(state.journey_key(0, "shop", "v1"), head)])
    ((funnel, entity, stored),) = state.restored_entries(found)
    assert (funnel, entity, orphans) == ("shop", "v1", 0)
    assert stored.item_ids() == [(ev.ts, "e1")]
    (item,) = stored.load().items
    assert encode(item) == encode(ev) and item.ts == ev.ts and item.event_id == "e1"


def test_restored_journeys_never_touched_again_expire_as_decoded_ones_do():
    """Restored journeys stay undecoded until an event touches them; the ones
    that expire first are dropped (their records deleted) exactly as an engine
    that never stopped drops its decoded ones."""
    kw = {"bucket": 60, "lateness": 120.0}
    stream = events(1200, seed=11, spacing=30.0)  # 10 h; windows of 10 and 30 minutes
    first, rest = stream[:400], stream[400:]
    through, t_table, t_counters = Engine(FUNNELS, **kw), {}, {}
    run(through, stream, t_table, t_counters)
    before, table, counters = Engine(FUNNELS, **kw), {}, {}
    run(before, first, table, counters)
    after = restored(FUNNELS, table, counters, before.watermark, **kw)
    stored = sum(len(by) for by in after.stored.values())
    assert stored and not any(after.journeys.values())
    run(after, rest, table, counters)
    assert not any(after.stored.values())  # every one touched or expired since
    assert after.counters == through.counters
    assert (table, counters) == (t_table, t_counters)


def test_events_load_whichever_record_comes_first_and_orphans_are_counted() -> None:
    """A restored table's records come in any order; an event record whose
    journey record is missing is counted, not restored."""
    ev = to_event({"event_id": "e1", "type": "visit", "visitor_id": "v1"}, T0)
    engine = Engine(load_funnels())
    engine.process(ev)
    table: dict = {}
    persist(engine, table, {}, p=2)
    orphan = state.item_key(2, "shop", "v9", Held(T0, "e9"))
    records = [*reversed(table.items()), (orphan, encode(ev).decode())]
    found, orphans = state.load_journeys(records)
    assert orphans == 1 and "v9" not in found["shop"]
    assert found["shop"]["v1"].item_ids() == [(ev.ts, "e1")]
    assert isinstance(found["shop"]["v1"].events, bytes)  # one event: no list of one
    assert encode(found["shop"]["v1"].load().items[0]) == encode(ev)

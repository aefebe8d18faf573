"""The demo simulation: valid events of every type, realistic funnels, injected drops."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from stream.core.engine import Engine
from stream.core.events import decode
from stream.core.funnels import load_funnels
from stream.core.summary import summarise
from stream.tools.demo import Drop, Traffic, rhythm

START = 1_800_000_000.0


def simulate(minutes: float, **options) -> list:
    traffic = Traffic(seed=3, rate=40.0, start=START, **options)
    events = []
    for second in range(1, int(minutes * 60) + 1):
        events += traffic.due(START + second)
    return [decode(orjson.dumps(e), now=float("inf")) for e in events]


def doc_funnel(name: str):
    return next(f for f in load_funnels() if f.name == name)


def conversion(engine: Engine, funnel_name: str, step: str, start: float, end: float) -> float:
    funnel = next(f for f in load_funnels() if f.name == funnel_name)
    doc = summarise(funnel, engine.sums(funnel_name, start, end), "w", None, None)
    return next(s for s in doc["steps"] if s["name"] == step)["conversion"]


def run(events) -> Engine:
    engine = Engine(load_funnels(), lateness=3600)
    for ev in events:
        engine.process(ev)
    return engine


def test_all_types_valid_at_about_the_asked_rate():
    events = simulate(10)  # decode() above raises on any invalid event
    kinds = Counter(e.type for e in events)
    assert set(kinds) == {"visit", "signup", "cart", "call", "deal_stage", "spend"}
    assert kinds["spend"] == 6  # one report per budgeted channel/campaign for the day
    expected = 40 * 600 * rhythm(START, 86400)  # the asked rate at this hour of the day
    assert 0.8 * expected < len(events) - kinds["spend"] < 1.2 * expected
    assert len({e.event_id for e in events}) == len(events)
    engine = run(events)
    shop = summarise(load_funnels()[0], engine.sums("shop", 0, float("inf")), "all", None, None)
    assert all(s["reached"] > 0 for s in shop["steps"])
    assert 0 < shop["overall_conversion"] < 0.2  # like a real shop: a few percent buy
    sales = summarise(load_funnels()[1], engine.sums("sales", 0, float("inf")), "all", None, None)
    assert sales["won"] > 0 and sales["lost"] > 0 and sales["skipped"] > 0
    assert set(sales["lost_reasons"]) <= {"price", "timing", "competitor", "no budget", "no answer"}
    # Money: purchases and won deals have amounts, ads cost something, ROMI is defined.
    spend = engine.sums("_spend", 0, float("inf"))
    for doc in (shop, sales):
        doc = summarise(doc_funnel(doc["funnel"]), engine.sums(doc["funnel"], 0, float("inf")),
                        "all", None, None, "period", None, spend)  # fmt: skip
        assert doc["revenue"]["EUR"] > 0 and doc["spend"]["EUR"] > 0 and "EUR" in doc["romi"]


def test_channels_convert_differently():
    engine = run(simulate(20))
    funnel = load_funnels()[0]
    doc = summarise(
        funnel, engine.sums("shop", 0, float("inf")), "all", None, None, "period", "channel"
    )
    overall = {v: d["overall_conversion"] or 0 for v, d in doc["breakdown"]["channel"].items()}
    assert overall["email"] > overall["social"]


def test_drop_makes_the_step_convert_far_worse_from_its_minute_on():
    events = simulate(24, drops=[Drop.parse("checkout=0.1@12")])
    engine = run(events)
    before = conversion(engine, "shop", "checkout", START, START + 11 * 60)
    after = conversion(engine, "shop", "checkout", START + 14 * 60, START + 24 * 60)
    assert before > 0.3 and after < before * 0.3
    # Other steps keep converting as before.
    assert conversion(engine, "shop", "cart", START + 14 * 60, START + 24 * 60) > 0.3


@pytest.mark.parametrize("text", ["checkout", "nope=0.1@3", "checkout=x@1", "checkout=-1@2"])
def test_bad_drop_options_say_what_is_wrong(text):
    with pytest.raises(ValueError, match="--drop"):
        Drop.parse(text)


def test_history_comes_first_in_time_order_and_drops_count_from_the_live_start():
    """--history: past traffic at once, in time order; the drop starts with live traffic."""
    live = START + 600
    traffic = Traffic(
        seed=3, rate=40.0, start=START, drops=[Drop.parse("checkout=0@0")], drops_from=live
    )
    history = [decode(orjson.dumps(e), now=float("inf")) for e in traffic.due(live)]
    times = [e.ts for e in history]
    assert times == sorted(times) and times[0] < START + 60 and times[-1] <= live
    assert len(history) > 5000  # 10 minutes at 40 events/s, less journeys still under way
    engine = run(history)
    assert conversion(engine, "shop", "checkout", START, live) > 0.3  # before the drop
    later = []
    for second in range(1, 601):
        later += traffic.due(live + second)
    events = history + [decode(orjson.dumps(e), now=float("inf")) for e in later]
    checkouts_after = [
        e for e in events if e.type == "cart" and e.action == "checkout" and e.ts > live + 1
    ]
    assert checkouts_after == []

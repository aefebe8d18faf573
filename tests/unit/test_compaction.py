"""An entity that never goes quiet holds only the events a new event can still
change (core/compaction.py); what it counts is checked against the oracle in
test_engine_oracle.py and through a restore in test_state.py."""

from __future__ import annotations

from collections import Counter

from stream.core.compaction import settled_cut
from stream.core.engine import Engine
from stream.core.journeys import unpacked
from tests.oracle import oracle_counts
from tests.unit.test_engine_oracle import BASE, BUCKET, FUNNELS, LATENESS, to_event

SHOP = FUNNELS[0]  # window 10 minutes


def busy_visitor(minutes: int) -> list:
    """One visitor, an event a minute: visit, signup, add, purchase, over and over."""
    kinds = [
        {"type": "visit", "channel": "email"},
        {"type": "signup", "user_id": "u"},
        {"type": "cart", "action": "add"},
        {"type": "cart", "action": "purchase", "value": 5, "order_id": "o"},
    ]
    out = []
    for i in range(minutes):
        doc = {"event_id": f"e{i}", "visitor_id": "bot", **kinds[i % 7 % 4]}
        out.append(to_event(doc, BASE + 60 * i))
    return out


def test_a_busy_visitor_holds_a_window_of_events_not_its_history():
    events = busy_visitor(2 * 24 * 60)
    engine = Engine(FUNNELS, bucket=BUCKET, lateness=LATENESS)
    held = []
    for ev in events:
        engine.process(ev)
        engine.advance(ev.ts)
        held.append(len(unpacked(engine.journeys["shop"]["bot"]).items))
    # Window + lateness is 12 events; compaction waits for 64 and runs once a bucket.
    assert max(held) <= 64 + 1 and held[-1] <= 64
    assert Counter(engine.counters) == +oracle_counts(FUNNELS, events, BUCKET, LATENESS)
    # One order id all along, with no gap of a window: one order, ever.
    assert (
        sum(n for k, n in engine.counters.items() if k[:2] == ("shop", "orders") and not k[4]) == 1
    )


def test_spend_keeps_its_newest_report_and_drops_the_rest():
    reports = [
        to_event(
            {
                "event_id": f"s{i}",
                "type": "spend",
                "channel": "search",
                "day": "2026-11-20",
                "cost": i,
                "currency": "EUR",
            },
            BASE + 60 * i,
        )
        for i in range(200)
    ]
    engine = Engine(FUNNELS, bucket=BUCKET, lateness=LATENESS)
    for ev in reversed(reports):  # newest first: the older ones change nothing
        engine.process(ev)
    (journey,) = engine.journeys["_spend"].values()
    assert len(journey.items) <= 64 and journey.items[-1].event_id == "s199"
    assert Counter(engine.counters) == +oracle_counts(FUNNELS, reports, BUCKET, LATENESS)


def test_an_attempt_still_open_at_the_late_bound_is_kept_whole():
    visit, signup = (
        to_event({"event_id": "a", "type": "visit", "visitor_id": "v"}, BASE),
        to_event({"event_id": "b", "type": "signup", "visitor_id": "v", "user_id": "u"}, BASE + 60),
    )
    items = [visit, signup]
    # An event at BASE + 300 can still reach step 3 of the attempt begun at BASE.
    assert settled_cut(SHOP, items, BASE + 300) == 0
    # Past its window (10 minutes) the attempt is settled: both events can go.
    assert settled_cut(SHOP, items, BASE + 601) == 2


def test_an_event_at_the_same_second_as_an_order_is_recounted_whole():
    """A visit in the same second as a purchase sorts after it (by event_id) yet
    opens the attempt the purchase belongs to: recomputing only from the last
    attempt would have kept the purchase's own channel (found by the property
    test of interleaved sources)."""
    purchase = to_event(
        {
            "event_id": "a",
            "type": "cart",
            "action": "purchase",
            "visitor_id": "v",
            "channel": "social",
            "value": 250,
        },
        BASE,
    )
    visit = to_event(
        {"event_id": "b", "type": "visit", "visitor_id": "v", "channel": "email"}, BASE
    )
    engine = Engine(FUNNELS, bucket=BUCKET, lateness=LATENESS, tail_at=0)
    for ev in (purchase, visit):
        engine.process(ev)
    assert Counter(engine.counters) == +oracle_counts(FUNNELS, [purchase, visit], BUCKET, LATENESS)
    assert engine.counters[("shop", "orders", 3, BASE // 60 * 60, "channel", "email")] == 1

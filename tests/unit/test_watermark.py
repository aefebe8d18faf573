"""The stream's watermark over input sources, and what runs behind it (DESIGN.md s. 4)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from stream.core.engine import EXPIRE_STEPS, Engine
from stream.core.events import decode
from stream.core.funnels import load_funnels
from stream.core.watermark import SourceMarks

DAY = 86400.0
T0 = 1_800_000_000.0
FUNNELS = load_funnels()  # shop: 7-day window; sales: 90 days
SHOP_WINDOW = next(f.window for f in FUNNELS if f.name == "shop")


def visit(i: int, ts: float, visitor: str = "v") -> object:
    doc = {
        "event_id": f"e{i}",
        "type": "visit",
        "occurred_at": datetime.fromtimestamp(ts, tz=UTC).isoformat(),
        "visitor_id": visitor,
    }
    return decode(orjson.dumps(doc), now=float("inf"))


def test_a_source_that_delivered_nothing_holds_the_watermark_back() -> None:
    marks = SourceMarks()
    marks.deliver("shop.cart:0", T0 + DAY)
    assert marks.advance(["shop.cart:0", "shop.visits:0"], {}) == float("-inf")


def test_the_watermark_is_the_lowest_mark_of_the_sources_still_read() -> None:
    marks = SourceMarks()
    marks.deliver("shop.cart:0", T0 + 10 * DAY)
    marks.deliver("shop.visits:0", T0 + DAY)
    sources = ["shop.cart:0", "shop.visits:0", "ads.spend:0"]
    assert marks.advance(sources, {"ads.spend:0": 0}) == T0 + DAY  # empty spend: done


def test_a_done_source_does_not_hold_it_back_and_it_never_moves_back() -> None:
    marks = SourceMarks()
    marks.deliver("a", T0 + 10 * DAY, offset=50)
    marks.deliver("b", T0 + DAY, offset=7)
    assert marks.advance(["a", "b"], {"b": 7}) == T0 + 10 * DAY
    assert marks.advance(["a", "b"], {}) == T0 + 10 * DAY  # b read again: no step back
    assert not marks.deliver("a", T0, offset=50)  # an older event does not move a mark


def test_a_source_read_to_its_end_still_holds_back_until_its_events_arrived() -> None:
    # The group has read b to offset 9, but this counting partition has b's mark
    # only up to offset 7: b's events between may still be on their way here.
    marks = SourceMarks()
    marks.deliver("a", T0 + 10 * DAY, offset=50)
    marks.deliver("b", T0 + DAY, offset=7)
    assert marks.advance(["a", "b"], {"a": 50, "b": 9}) == T0 + DAY
    marks.deliver("b", None, offset=9)  # a batch of b with no valid event still reports
    assert marks.advance(["a", "b"], {"a": 50, "b": 9}) == T0 + 10 * DAY


def test_every_source_done_gives_the_newest_mark() -> None:
    marks = SourceMarks({"a": T0, "b": T0 + 5}, offsets={"a": 3, "b": 4})
    assert marks.advance(["a", "b"], {"a": 3, "b": 4}) == T0 + 5


def test_an_event_is_late_only_past_its_funnels_window_and_the_lateness() -> None:
    engine = Engine(FUNNELS, lateness=600)
    engine.advance(T0 + 30 * DAY)
    inside = visit(1, T0 + 30 * DAY - SHOP_WINDOW - 60)  # within window + lateness
    late = visit(2, T0 + 30 * DAY - SHOP_WINDOW - 601 - 60)
    assert engine.process(inside)
    assert not engine.process(late)
    assert engine.late["shop"] == 1


def test_journeys_expire_two_windows_behind_the_watermark_not_before() -> None:
    engine = Engine(FUNNELS, lateness=600)
    engine.process(visit(1, T0, "old"))
    engine.advance(T0 + 2 * SHOP_WINDOW + 600)  # exactly at the horizon: kept
    engine.expire()
    assert "old" in engine.journeys["shop"]
    engine.advance(T0 + 2 * SHOP_WINDOW + 601)
    engine.expire()  # behind the horizon, but expiry scans at most once a step
    assert "old" in engine.journeys["shop"]
    engine.advance(T0 + 2 * SHOP_WINDOW + 600 + SHOP_WINDOW / EXPIRE_STEPS)
    engine.expire()
    assert "old" not in engine.journeys["shop"]


def test_without_a_watermark_nothing_is_late_and_nothing_expires() -> None:
    engine = Engine(FUNNELS, lateness=600)
    assert engine.process(visit(1, T0 + 90 * DAY, "new"))
    assert engine.process(visit(2, T0, "old"))  # a backlog read unevenly: not late
    assert engine.expire() == 0
    assert {"new", "old"} <= set(engine.journeys["shop"])

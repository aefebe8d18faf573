"""Funnel gauges and histograms from engine counters, and counter retention."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config import Settings
from stream.core.engine import Engine
from stream.core.events import decode
from stream.core.summary import summarise
from stream.worker.metrics import funnel_families
from tests.unit.test_engine_oracle import FUNNELS, generate, run_engine

WINDOWS = Settings().metric_window_seconds  # the default 5m, 1h, 24h


def samples(families, name):
    """{labels tuple: value} of one sample name."""
    out = {}
    for family in families:
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def reader(engine: Engine):
    return lambda funnel, start, end: engine.sums(funnel, start, end, "period")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**9), n=st.integers(5, 120))
def test_gauges_equal_the_api_summary_per_window_and_breakdown(seed, n):
    events = generate(seed, n, 0.1, 0.0)
    engine = run_engine(events)
    now = max(e.ts for e in events) + 1
    families = funnel_families(FUNNELS, reader(engine), {}, now, WINDOWS)
    reached = samples(families, "funnel_step_reached")
    for f in FUNNELS:
        for window, span in WINDOWS.items():
            doc = summarise(f, engine.sums(f.name, now - span, float("inf")), window, None, None)
            names = [st["name"] for st in doc["steps"]]
            for i, step in enumerate(doc["steps"]):
                key = (
                    ("breakdown", ""),
                    ("funnel", f.name),
                    (
                        "position",
                        "first" if i == 0 else "last" if i == len(names) - 1 else "middle",
                    ),
                    ("previous", names[max(i - 1, 0)]),
                    ("step", step["name"]),
                    ("value", ""),
                    ("window", window),
                )
                assert reached[key] == step["reached"]
            for dim in f.breakdowns:
                by_value = defaultdict(int)
                for labels, v in reached.items():
                    d = dict(labels)
                    if d["funnel"] == f.name and d["window"] == window and d["breakdown"] == dim:
                        by_value[d["step"]] += v
                        assert d["value"] != "" and d["value"] in _allowed(
                            f, engine, now - span, dim
                        )
                # Capped values still add up to the total, step by step.
                for step in doc["steps"]:
                    assert by_value[step["name"]] == step["reached"]


def _allowed(funnel, engine, start, dim):
    doc = summarise(
        funnel, engine.sums(funnel.name, start, float("inf")), "w", None, None, breakdown=dim
    )
    return set(doc["breakdown"][dim])


def test_time_to_convert_histogram_and_lag():
    base = 1_800_000_000.0
    events = generate(7, 0, 0.0, 0.0)  # no events: an empty engine exports zeros
    engine = run_engine(events)
    docs = [("v1", "visit", 0), ("v1", "signup", 30), ("v2", "visit", 100), ("v2", "signup", 700)]
    for i, (visitor, kind, offset) in enumerate(docs):
        engine.process(event(f"e{i}", kind, base + offset, visitor))
    newest = {"shop.visits": base + 690}
    families = funnel_families(FUNNELS, reader(engine), newest, base + 700, WINDOWS)
    buckets = samples(families, "funnel_time_to_convert_seconds_bucket")
    signup = {dict(k)["le"]: v for k, v in buckets.items() if dict(k)["step"] == "signup"}
    # One signup 30 s after its visit, one 600 s after: cumulative bins.
    assert signup["60.0"] == 1 and signup["300.0"] == 1 and signup["900.0"] == 2
    assert signup["+Inf"] == 2
    total = samples(families, "funnel_time_to_convert_seconds_sum")
    assert total[(("funnel", "shop"), ("step", "signup"))] == 630.0
    assert samples(families, "funnel_event_lag_seconds")[(("topic", "shop.visits"),)] == 10.0


def event(event_id: str, kind: str, ts: float, visitor: str):
    doc = {
        "event_id": event_id,
        "type": kind,
        "occurred_at": datetime.fromtimestamp(ts, tz=UTC).isoformat(),
        "visitor_id": visitor,
    }
    if kind == "signup":
        doc["user_id"] = "u-" + visitor
    return decode(orjson.dumps(doc), now=float("inf"))


def test_buckets_older_than_retention_are_dropped_and_never_go_negative():
    engine = Engine(FUNNELS, bucket=60, lateness=600, retention=3600)
    base = 1_800_000_000.0

    def visit(i: int, offset: float, visitor: str) -> None:
        engine.process(event(f"r{i}", "visit", base + offset, visitor))

    visit(0, 0, "a")
    visit(1, 7200, "b")
    engine.advance(base + 7200)  # the watermark two hours later: the first bucket is past retention
    engine.expire()
    buckets = {k[3] for k in engine.counters}
    assert engine.bucket_of(base) not in buckets and engine.bucket_of(base + 7200) in buckets
    changed = engine.take_changes().counters
    assert any(k[3] == engine.bucket_of(base) and v == 0 for k, v in changed.items())
    assert all(n > 0 for n in engine.counters.values())


def test_expire_before_any_event_is_a_no_op():
    # A partition whose first batch held only duplicates or late events has no
    # watermark yet; expiring must not fail (it crashed the worker once).
    engine = Engine(FUNNELS)
    assert engine.expire() == 0
    changes = engine.take_changes()
    assert (changes.journeys, changes.counters, changes.added, changes.dropped) == ({}, {}, [], [])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**9), n=st.integers(5, 120))
def test_money_gauges_equal_the_api_documents(seed, n):
    from stream.core import money

    events = generate(seed, n, 0.1, 0.0)
    engine = run_engine(events)
    now = max(e.ts for e in events) + 1
    families = funnel_families(FUNNELS, reader(engine), {}, now, WINDOWS)
    revenue = samples(families, "funnel_revenue")
    spend = samples(families, "funnel_ad_spend")
    calls = samples(families, "funnel_calls")
    for window, span in WINDOWS.items():
        paid = money.spend_in(lambda a, b: engine.sums("_spend", a, b), now - span, now)
        for f in FUNNELS:
            sums = engine.sums(f.name, now - span, float("inf"))
            doc = summarise(f, sums, window, None, None, "period", "channel", paid)
            for cur, amount in doc["revenue"].items():
                key = (("breakdown", ""), ("currency", cur), ("funnel", f.name), ("value", ""))
                assert revenue[(*key, ("window", window))] == amount
            for value, figures in doc["breakdown"]["channel"].items():
                for cur, amount in figures["revenue"].items():
                    key = (("breakdown", "channel"), ("currency", cur), ("funnel", f.name))
                    assert revenue[(*key, ("value", value), ("window", window))] == amount
        for cur, amount in money.amounts(paid, "spend").items():
            key = (("breakdown", ""), ("currency", cur), ("value", ""), ("window", window))
            assert spend[key] == amount
        ledger = engine.sums("_calls", now - span, float("inf"))
        key = (("breakdown", ""), ("kind", "calls"), ("value", ""), ("window", window))
        assert calls.get(key, 0) == money.total(ledger, "calls")


def test_no_id_hash_or_session_ever_becomes_a_metric_label():
    """DESIGN.md section 3: nothing personal becomes a label. The demo's events carry
    visitor, user, session, call, deal and order ids and caller hashes; none may
    appear among the label values the worker exports."""
    from stream.core.funnels import load_funnels
    from stream.tools.demo import Traffic

    start = 1_800_000_000.0
    traffic = Traffic(seed=4, rate=60.0, start=start)
    docs = []
    for second in range(1, 601):
        docs += traffic.due(start + second)
    personal = {
        d[k]
        for d in docs
        for k in ("visitor_id", "user_id", "session_id", "call_id", "deal_id", "order_id")
        + ("caller_hash", "cart_id")
        if d.get(k)
    }
    assert len(personal) > 1000
    funnels = load_funnels()
    engine = Engine(funnels, lateness=3600)
    for d in docs:
        engine.process(decode(orjson.dumps(d), now=float("inf")))
    families = funnel_families(funnels, reader(engine), {}, start + 601, WINDOWS)
    labels = {v for family in families for s in family.samples for v in s.labels.values()}
    assert len(labels) > 50
    assert labels.isdisjoint(personal), sorted(labels & personal)[:5]

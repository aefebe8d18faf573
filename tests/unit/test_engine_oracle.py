"""Engine == oracle on generated event logs: shuffled within lateness, duplicated,
late, re-entries, backward deal moves, skipped and unknown stages, and
interleavings of per-source streams with days of skew between the sources."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.core.engine import COMPACT_AT, TAIL_AT, Engine
from stream.core.events import decode
from stream.core.funnels import parse_funnels
from stream.core.summary import summarise
from stream.core.watermark import SourceMarks
from tests.oracle import accepted_events, oracle_counts

FUNNELS = parse_funnels(
    """
[[funnel]]
name = "shop"
entity = "visitor_id"
window = "10m"
breakdowns = ["channel", "device"]
top_n = 3
steps = [
  { name = "visit",    match = { type = "visit" } },
  { name = "signup",   match = { type = "signup" } },
  { name = "cart",     match = { type = "cart", action = "add" } },
  { name = "purchase", match = { type = "cart", action = ["purchase", "checkout"] } },
]

[[funnel]]
name = "sales"
mode = "pipeline"
window = "30m"
breakdowns = ["manager"]
stages = ["lead", "contacted", "qualified", "proposal", "won"]
"""
)
BUCKET = 60
LATENESS = 120.0
BASE = 1_795_000_000.0
STAGES = ["lead", "contacted", "qualified", "proposal", "won", "brand-new-stage"]


def make_event(i: int, rng: random.Random, ts: float):
    kind = rng.choice(
        ["visit", "visit", "signup", "cart", "cart", "deal_stage", "deal_stage", "call", "spend"]
    )
    doc = {
        "event_id": f"e{i}",
        "type": kind,
        "occurred_at": f"@{ts}",
        "channel": rng.choice(["search", "social", "email", "direct", "paid", None]),
        "device": rng.choice(["mobile", "desktop"]),
    }
    if kind in ("visit", "signup", "cart"):
        doc["visitor_id"] = f"v{rng.randrange(6)}"
    if kind == "signup":
        doc["user_id"] = f"u{i}"
    if kind == "cart":
        doc["action"] = rng.choice(["add", "remove", "checkout", "purchase"])
        doc["value"] = rng.choice([None, 0, 19.99, 250])
        doc["currency"] = rng.choice([None, None, "EUR"])
        doc["order_id"] = rng.choice([None, None, f"o{rng.randrange(4)}"])
    if kind == "deal_stage":
        doc["deal_id"] = f"d{rng.randrange(5)}"
        doc["stage"] = rng.choice(STAGES)
        doc["manager"] = rng.choice(["ann", "bob"])
        doc["status"] = rng.choice([None, None, None, "won", "lost"])
        doc["amount"] = rng.choice([None, None, 1000, 2500.5])
        if doc["status"] == "lost":
            doc["lost_reason"] = rng.choice(["price", "timing", None])
    if kind == "call":
        call = rng.randrange(8)
        doc["call_id"] = f"c{call}"
        doc["tracking_number"] = f"+1555000{call % 3}"
        doc["deal_id"] = f"d{call}" if call < 5 else None  # one call, one deal (or none)
        doc["direction"] = rng.choice(["inbound", "outbound", None])
        doc["answered"] = rng.choice([True, False, None])
        doc["duration_s"] = rng.choice([None, 0, 42, 300.4])
        doc["manager"] = rng.choice(["ann", "bob", None])
    if kind == "spend":
        doc["channel"] = rng.choice(["search", "social"])
        doc["campaign"] = rng.choice(["spring", None])
        doc["day"] = datetime.fromtimestamp(ts - rng.choice([0, 86400]), UTC).date().isoformat()
        doc["cost"] = rng.choice([0, 10, 99.95])
        doc["currency"] = "EUR"
    return doc


def to_event(doc: dict, ts: float):
    from datetime import UTC, datetime

    import orjson

    doc = {k: v for k, v in doc.items() if v is not None}
    doc["occurred_at"] = datetime.fromtimestamp(ts, tz=UTC).isoformat()
    return decode(orjson.dumps(doc), now=float("inf"))


def generate(seed: int, n: int, dup_rate: float, late_rate: float):
    """Events in arrival order: time-ordered, shuffled within lateness, with dups and late ones."""
    rng = random.Random(seed)
    ts = BASE
    timed = []
    for i in range(n):
        ts += rng.choice([0, 1, 5, 20, 45, 90, 200, 400])
        timed.append(to_event(make_event(i, rng, ts), ts))
    # Arrival within lateness: each event arrives before anything LATENESS newer.
    arrival = sorted(timed, key=lambda e: e.ts + rng.uniform(0, LATENESS))
    out = []
    for ev in arrival:
        out.append(ev)
        if rng.random() < dup_rate:
            out.insert(rng.randrange(len(out)), ev)  # a resend, same bytes
        if rng.random() < late_rate:
            # Behind the newest event by 7 minutes (within every window: applied out of
            # order), by an hour (late for the 10m and 30m funnels, not for calls), or by
            # 40 days (past retention: late for everything).
            behind = rng.choice([3 * LATENESS + 60, 3600, 40 * 86400])
            old = to_event(make_event(10_000 + len(out), rng, ev.ts), ev.ts - behind)
            out.append(old)
    return out


def run_engine(
    events,
    expire_every: int = 0,
    sources: list[str] | None = None,
    compact_at: int = COMPACT_AT,
    tail_at: int = TAIL_AT,
) -> Engine:
    """The engine as the worker drives it: de-dup, process, then the watermark moves.

    ``sources[i]`` is event i's input source (default one); as in the stream, a
    source holds the watermark back until it has delivered its last event.
    ``compact_at=1`` drops settled events as soon as a journey holds two;
    ``tail_at=0`` recomputes only the last attempt whenever an event lands last.
    """
    engine = Engine(
        FUNNELS, bucket=BUCKET, lateness=LATENESS, compact_at=compact_at, tail_at=tail_at
    )
    sources = sources or ["all"] * len(events)
    last = {src: i for i, src in enumerate(sources)}
    marks = SourceMarks()
    seen: set[str] = set()
    for i, ev in enumerate(events):
        if ev.event_id not in seen:  # the worker's de-dup table does this
            seen.add(ev.event_id)
            engine.process(ev)
        marks.deliver(sources[i], ev.ts)
        engine.advance(marks.advance(last, {src: 0 for src, j in last.items() if j <= i}))
        if expire_every and (i + 1) % expire_every == 0:
            engine.expire()
    return engine


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10**9),
    n=st.integers(1, 120),
    dup_rate=st.sampled_from([0.0, 0.1, 0.3]),
    late_rate=st.sampled_from([0.0, 0.05]),
    expire_every=st.sampled_from([0, 1, 7]),
    compact_at=st.sampled_from([COMPACT_AT, 1]),
    tail_at=st.sampled_from([TAIL_AT, 0]),
)
def test_engine_equals_oracle(seed, n, dup_rate, late_rate, expire_every, compact_at, tail_at):
    events = generate(seed, n, dup_rate, late_rate)
    engine = run_engine(events, expire_every, compact_at=compact_at, tail_at=tail_at)
    expected = oracle_counts(FUNNELS, events, BUCKET, LATENESS)
    assert Counter(engine.counters) == +expected
    indexed = [(bucket, k) for bucket, keys in engine.buckets.items() for k in keys]
    assert sorted(k for _, k in indexed) == sorted(engine.counters)  # the bucket index
    assert all(k[3] == bucket for bucket, k in indexed)
    _, late = accepted_events(events, LATENESS, FUNNELS)
    late_relevant = sum(1 for ev in late for f in engine.funnels if engine._relevant(f, ev))
    assert sum(engine.late.values()) == late_relevant


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**9), n=st.integers(1, 80))
def test_arrival_order_within_lateness_does_not_matter(seed, n):
    events = generate(seed, n, 0.0, 0.0)
    in_order = sorted(events, key=lambda e: (e.ts, e.event_id))
    assert run_engine(events).counters == run_engine(in_order).counters


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10**9), n=st.integers(5, 120), view=st.sampled_from(["period", "cohort"])
)
def test_summaries_equal_for_every_window_view_and_breakdown(seed, n, view):
    events = generate(seed, n, 0.1, 0.0)
    engine = run_engine(events)
    expected = oracle_counts(FUNNELS, events, BUCKET, LATENESS)
    end = max(e.ts for e in events) + 1
    for f in FUNNELS:
        for span in (300, 3600, 86400, None):
            start = float("-inf") if span is None else end - span
            got = engine.sums(f.name, start, end, view)
            want = Counter()
            for (name, metric, step, bucket, dim, value), c in expected.items():
                if name != f.name or not start <= bucket < end:
                    continue
                if (metric == "reached" and view != "period") or (
                    metric == "cohort" and view != "cohort"
                ):
                    continue
                want[(metric, step, dim, value)] += c
            assert got == dict(+want)
            for dim in (None, *f.breakdowns):
                assert summarise(f, got, "w", None, None, view, dim) == summarise(
                    f, dict(want), "w", None, None, view, dim
                )


def per_source_log(seed: int, n: int, skew_days: float) -> tuple[list, list[str]]:
    """Per-type streams (each in time order, shuffled within lateness), each
    shifted by up to ``skew_days``, interleaved at random: a backlog read unevenly;
    every tenth event sent again right after itself (a producer's retry)."""
    rng = random.Random(seed)
    by_source: dict[str, list] = {}
    for ev in generate(seed, n, 0.0, 0.0):
        by_source.setdefault(ev.type, []).append(ev)
    lag = {src: rng.uniform(0, skew_days * 86400) for src in by_source}
    cursors = {src: 0 for src in by_source}
    events, sources = [], []
    while cursors:
        # The source read next: the one whose next event is earliest after its lag,
        # or any source at random (arbitrary interleaving).
        if rng.random() < 0.5:
            src = rng.choice(sorted(cursors))
        else:
            src = min(cursors, key=lambda s: by_source[s][cursors[s]].ts + lag[s])
        events.append(by_source[src][cursors[src]])
        sources.append(src)
        if rng.random() < 0.1:
            events.append(events[-1])
            sources.append(src)
        cursors[src] += 1
        if cursors[src] == len(by_source[src]):
            del cursors[src]
    return events, sources


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10**9),
    n=st.integers(1, 150),
    skew_days=st.sampled_from([0.0, 0.5, 3.0]),
    expire_every=st.sampled_from([0, 1, 5]),
    compact_at=st.sampled_from([COMPACT_AT, 1]),
    tail_at=st.sampled_from([TAIL_AT, 0]),
)
def test_interleaved_sources_with_skew_count_like_the_sorted_log(
    seed, n, skew_days, expire_every, compact_at, tail_at
):
    """However far one source is read ahead of another, nothing is late and the
    counts equal the oracle's over the same events in time order."""
    events, sources = per_source_log(seed, n, skew_days)
    engine = run_engine(events, expire_every, sources, compact_at, tail_at)
    assert sum(engine.late.values()) == 0
    in_order = sorted(events, key=lambda e: (e.ts, e.event_id))
    expected = oracle_counts(FUNNELS, in_order, BUCKET, LATENESS)
    assert Counter(engine.counters) == +expected
    assert +expected == oracle_counts(FUNNELS, events, BUCKET, LATENESS, sources)

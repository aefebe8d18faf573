"""A corrected event (same event_id, fields filled in later: a deal re-attributed
once its call is known) counts exactly as if it had come corrected in the first
place, whenever it arrives within the lateness, and survives a restore."""

from __future__ import annotations

import random
from collections import Counter

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.core.engine import Engine
from tests.oracle import oracle_counts
from tests.unit.test_engine_oracle import BUCKET, FUNNELS, LATENESS, generate
from tests.unit.test_state import persist, restored


def corrected(ev, rng: random.Random):
    """The event with other attribution, as the call's touch would fill it."""
    return msgspec.structs.replace(
        ev,
        channel=rng.choice(["paid", "search", "referral"]),
        campaign=rng.choice(["winter", "brand", None]),
        manager=rng.choice(["ann", "bob", "cem"]) if ev.manager else None,
    )


def with_corrections(seed: int, n: int):
    """(arrival log of (event, is_correction), the log as if corrected at once)."""
    rng = random.Random(seed)
    events = generate(seed, n, 0.0, 0.0)
    final = list(events)
    arrival = [(ev, False) for ev in events]
    for i, ev in enumerate(events):
        if rng.random() >= 0.3 or ev.type == "spend":  # spend's entity is its channel
            continue
        fixed = corrected(ev, rng)
        final[i] = fixed
        # Later, but before anything more than the lateness newer than the event.
        newest, j = ev.ts, arrival.index((ev, False))
        candidates = []
        for k in range(j + 1, len(arrival) + 1):
            candidates.append(k)
            if k < len(arrival):
                newest = max(newest, arrival[k][0].ts)
                if newest > ev.ts + LATENESS:
                    break
        arrival.insert(rng.choice(candidates), (fixed, True))
    return arrival, final


def run(arrival, engine: Engine, persist_every: int = 0, table=None, counters=None) -> Engine:
    seen: set[str] = set()
    newest = float("-inf")
    for i, (ev, correction) in enumerate(arrival):
        if correction or ev.event_id not in seen:  # corrections pass the de-dup
            seen.add(ev.event_id)
            assert engine.process(ev, replace=correction)
        newest = max(newest, ev.ts)
        engine.advance(newest)
        if persist_every and (i + 1) % persist_every == 0:
            engine.expire()
            persist(engine, table, counters)
            engine = restored(FUNNELS, table, counters, engine.watermark, bucket=BUCKET,
                              lateness=LATENESS)  # fmt: skip
    return engine


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**9), n=st.integers(1, 80), persist_every=st.sampled_from([0, 7]))
def test_a_correction_counts_as_if_the_event_had_come_corrected(seed, n, persist_every):
    arrival, final = with_corrections(seed, n)
    engine = Engine(FUNNELS, bucket=BUCKET, lateness=LATENESS)
    engine = run(arrival, engine, persist_every, {}, {})
    assert Counter(engine.counters) == +oracle_counts(FUNNELS, final, BUCKET, LATENESS)


def test_a_correction_of_an_unseen_event_is_just_the_event():
    (ev, _), *_ = with_corrections(1, 5)[0]
    engine = Engine(FUNNELS, bucket=BUCKET, lateness=LATENESS)
    assert engine.process(ev, replace=True)
    assert Counter(engine.counters) == +oracle_counts(FUNNELS, [ev], BUCKET, LATENESS)

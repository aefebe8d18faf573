"""ExpiryIndex (core/dedup.py) against the rule it stands for, ``dedup.expired``:
over random histories of sightings, rebalances and purges it never forgets an
id the rule keeps, and leaves none the rule forgets for more than a minute."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core import dedup

HORIZON = 100.0

sighting = st.tuples(st.integers(0, 2), st.integers(0, 15), st.floats(0, 1000))
step = st.one_of(
    st.tuples(st.just("seen"), st.lists(sighting, max_size=8)),
    st.tuples(st.just("rebalance"), st.none()),
    st.tuples(
        st.just("purge"),
        st.dictionaries(st.integers(0, 2), st.floats(0, 1200), max_size=3),
    ),
)


def whole_minute_past(ts: float, mark: float) -> bool:
    width = dedup.ExpiryIndex.WIDTH
    return (ts // width + 1) * width <= mark - HORIZON


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=25))
def test_the_index_forgets_what_the_rule_forgets_and_nothing_else(steps):
    seen: dict[str, float] = {}
    index = dedup.ExpiryIndex()
    for kind, arg in steps:
        if kind == "seen":
            batch: dict[int, dict[str, float]] = {}
            for p, n, ts in arg:
                key = f"{p}|e{n}"
                if dedup.is_duplicate(seen.get(key), ts, HORIZON):
                    continue
                batch.setdefault(p, {})[key] = seen[key] = ts
            for p, ids in batch.items():
                index.add(p, ids)
        elif kind == "rebalance":
            index.forget()
        else:
            rule = dedup.expired(list(seen.items()), arg, HORIZON)
            due = index.due(seen, arg, HORIZON)
            for p, keys in due.items():
                assert set(keys) <= set(rule.get(p, [])), "forgot an id the rule keeps"
                assert len(keys) == len(set(keys))
                for key in keys:
                    del seen[key]
            for key, ts in seen.items():
                mark = arg.get(dedup.partition_of(key))
                if mark is not None:
                    assert not whole_minute_past(ts, mark), f"kept {key} at {ts}, mark {mark}"


def test_an_id_seen_again_lives_on_with_its_later_sighting():
    index = dedup.ExpiryIndex()
    seen = {"0|a": 10.0}
    assert index.due(seen, {0: 20.0}, HORIZON) == {}  # builds the index from the table
    seen["0|a"] = 500.0  # seen again past the horizon: counted again, kept from then
    index.add(0, {"0|a": 500.0})
    assert index.due(seen, {0: 400.0}, HORIZON) == {}
    assert index.due(seen, {0: 700.0}, HORIZON) == {0: ["0|a"]}


def test_a_partition_without_a_watermark_or_at_minus_infinity_keeps_its_ids():
    index = dedup.ExpiryIndex()
    seen = {"0|a": 1.0, "1|b": 1.0}
    assert index.due(seen, {1: float("-inf")}, HORIZON) == {}
    assert index.due(seen, {0: 10_000.0}, HORIZON) == {0: ["0|a"]}

"""SeenIds (core/dedup.py) against the rule it stands for, ``dedup.expired``:
over random histories of sightings, rebalances and purges it never forgets an
id the rule keeps, and leaves none the rule forgets for more than a minute;
and what it holds is what the ``seen-events`` table would hold."""

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
    width = dedup.SeenIds.WIDTH
    return (ts // width + 1) * width <= mark - HORIZON


def reloaded(table: dict[str, float]) -> dict[int, dedup.SeenIds]:
    """What a worker loads after a rebalance: each partition's ids from the table."""
    keys = dedup.by_partition(table, {0, 1, 2})
    return {p: dedup.restored(p, own, table) for p, own in keys.items()}


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=25))
def test_seen_ids_forget_what_the_rule_forgets_and_nothing_else(steps):
    table: dict[str, float] = {}  # the seen-events table, as its changelog has it
    held = reloaded(table)
    for kind, arg in steps:
        if kind == "seen":
            batch: dict[int, dict[str, float]] = {}
            for p, n, ts in arg:
                event_id = f"e{n}"
                prior = batch.get(p, {}).get(event_id, held[p].get(event_id))
                if dedup.is_duplicate(prior, ts, HORIZON):
                    continue
                batch.setdefault(p, {})[event_id] = ts
            for p, ids in batch.items():
                held[p].add(ids)
                table.update({dedup.table_key(p, i): ts for i, ts in ids.items()})
        elif kind == "rebalance":
            held = reloaded(table)
        else:
            rule = dedup.expired(list(table.items()), arg, HORIZON)
            for p, mark in arg.items():
                old = held[p].expire(mark, HORIZON)
                keys = [dedup.table_key(p, i) for i in old]
                assert set(keys) <= set(rule.get(p, [])), "forgot an id the rule keeps"
                assert len(keys) == len(set(keys))
                for key in keys:
                    del table[key]
            for key, ts in table.items():
                mark = arg.get(dedup.partition_of(key))
                if mark is not None:
                    assert not whole_minute_past(ts, mark), f"kept {key} at {ts}, mark {mark}"
        for p in held:
            own = {dedup.table_key(p, i): ts for i, ts in held[p].ids.items()}
            assert own == {k: v for k, v in table.items() if dedup.partition_of(k) == p}


def test_an_id_seen_again_lives_on_with_its_later_sighting():
    seen = dedup.SeenIds({"a": 10.0})
    assert seen.expire(20.0, HORIZON) == []  # lists the ids by minute
    seen.add({"a": 500.0})  # seen again past the horizon: counted again, kept from then
    assert seen.expire(400.0, HORIZON) == []
    assert seen.expire(700.0, HORIZON) == ["a"]
    assert seen.get("a") is None


def test_a_watermark_at_minus_infinity_keeps_every_id():
    seen = dedup.SeenIds({"a": 1.0})
    assert seen.expire(float("-inf"), HORIZON) == []
    assert seen.expire(10_000.0, HORIZON) == ["a"]


def test_a_held_event_shares_its_id_and_time_with_its_entry():
    event_id, ts = "".join(["evt-", "42"]), 1_700_000_000.5  # made at run time, not interned
    seen = dedup.SeenIds()
    seen.add({event_id: ts})
    ((key, value),) = seen.ids.items()
    assert key is event_id and value is ts


def test_restored_ids_drop_their_partition_prefix_and_tombstones():
    table = {"1|a": 5.0, "1|b": None, "12|c": 6.0}
    keys = dedup.by_partition(table, {1, 12})
    assert keys == {1: ["1|a", "1|b"], 12: ["12|c"]}
    assert dedup.restored(1, keys[1], table).ids == {"a": 5.0}
    assert dedup.restored(12, keys[12], table).ids == {"c": 6.0}

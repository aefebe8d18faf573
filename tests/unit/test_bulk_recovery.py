"""The bulk changelog reader's pure parts against Faust's own decoding and store."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust
from faust.serializers import codecs
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.faust_fixes import bulk_recovery, recovery_seek
from stream.faust_fixes.bulk_recovery import BulkRecovery, applies_in_bulk, apply, plan, store_batch


def json_table(app: faust.App, name: str = "t") -> faust.Table:
    schema = faust.Schema(key_serializer="json", value_serializer="json")
    return app.Table(name, default=None, partitions=2, schema=schema)


def test_plan_reads_from_after_the_last_applied_offset_to_the_highwater() -> None:
    offsets = {"new": None, "empty": None, "half": 41, "done": 99, "unset": -1}
    highwaters = {"new": 9, "empty": -1, "half": 99, "done": 99, "unset": 0}
    assert plan(offsets, offsets, highwaters) == {"new": (0, 9), "half": (42, 99), "unset": (0, 0)}


KEYS = [
    '[0,"shop","v\\u00e9",1.5,"e1"]',
    '[3,"shop","reached",2,1700000000,"",""]',
    "0|next",
    "2|sources",
    "k",
]
VALUES = [
    '{"type":"visit","visitor_id":"v\u00e9"}',
    17,
    0,
    {"shop.visits:0": [1.5, 7]},
    ["direct", "paid"],
    0.25,
    None,  # a tombstone
]


def faust_events(app: faust.App, partition: int, pairs: list) -> list[SimpleNamespace]:
    """Changelog records as Faust's recovery hands them to the store: its own decoding."""
    ser, out = app.serializers, []
    for raw_key, raw_value in pairs:
        value = None if raw_value is None else ser.loads_value(None, raw_value, serializer="json")
        message = SimpleNamespace(value=raw_value, partition=partition)
        key = ser.loads_key(None, raw_key, serializer="json")
        out.append(SimpleNamespace(key=key, value=value, message=message))
    return out


@given(
    st.lists(
        st.tuples(st.sampled_from(KEYS), st.sampled_from(range(len(VALUES))), st.integers(0, 2)),
        max_size=40,
    )
)
@settings(max_examples=200, deadline=None)
def test_a_bulk_batch_leaves_the_store_as_fausts_own_apply_does(writes: list) -> None:
    """Random batches of sets, tombstones and falsy values, over several partitions."""
    app = faust.App("bulk-apply-test", store="memory://")
    ours, theirs = json_table(app, "ours"), json_table(app, "theirs")
    ser = app.serializers
    batches: dict[int, list] = {}
    for key, value, partition in writes:
        raw = (
            None
            if VALUES[value] is None
            else ser.dumps_value(None, VALUES[value], serializer="json")
        )
        batches.setdefault(partition, []).append((ser.dumps_key(None, key, serializer="json"), raw))
    for partition, pairs in batches.items():
        for half in (pairs[: len(pairs) // 2], pairs[len(pairs) // 2 :]):
            store_batch(ours, half)
            theirs.apply_changelog_batch(faust_events(app, partition, half))
    assert dict(ours.data) == dict(theirs.data)
    assert not ours.data._key_partition  # not kept: no standbys (store_batch)


def test_records_past_the_highwater_are_left_and_the_offset_moves_to_the_last_applied() -> None:
    app = faust.App("bulk-offsets-test", store="memory://")
    table = json_table(app)
    assert applies_in_bulk(table)
    tp = TP("t-changelog", 1)
    recovery = SimpleNamespace(tp_to_table={tp: table})

    def rec(offset: int, key: str, value: object) -> SimpleNamespace:
        raw = None if value is None else codecs.dumps("json", value)
        return SimpleNamespace(offset=offset, key=codecs.dumps("json", key), value=raw)

    offsets = {tp: -1}
    records = [rec(0, "a", 1), rec(1, "b", 2), rec(3, "a", None), rec(4, "b", None)]
    records += [rec(5, "b", 3), rec(9, "c", 4)]
    assert apply(recovery, tp, records, 5, offsets) == 5
    assert dict(table.data) == {"b": 3}
    assert offsets[tp] == 5
    assert apply(recovery, tp, [rec(9, "c", 4)], 5, offsets) == 0 and offsets[tp] == 5


def test_tables_of_other_serializers_are_left_to_faust() -> None:
    app = faust.App("bulk-other-test", store="memory://")

    class Point(faust.Record):
        x: int

    typed = app.Table("typed", default=None, partitions=1, value_type=Point)
    assert not applies_in_bulk(typed)  # Faust decodes its values into models


def test_the_hook_reads_only_active_partitions_of_an_app_that_turned_it_on() -> None:
    calls = []

    class Bulk:
        async def read(self, recovery, tps, offsets):  # noqa: ANN001, ANN202
            calls.append(set(tps))

    actives, standbys = {"a": 1}, {"s": 1}
    recovery = SimpleNamespace(
        app=SimpleNamespace(funnel_bulk_recovery=Bulk()), active_offsets=actives
    )
    asyncio.run(bulk_recovery.read_ahead(recovery, {"a"}, actives, "active"))
    asyncio.run(bulk_recovery.read_ahead(recovery, {"s"}, standbys, "standby"))
    assert calls == [{"a"}]
    off = SimpleNamespace(app=SimpleNamespace(), active_offsets=actives)
    asyncio.run(bulk_recovery.read_ahead(off, {"a"}, actives, "active"))  # not turned on
    assert calls == [{"a"}]


def test_the_seek_runs_the_bulk_reader_first_and_seeks_to_what_it_applied() -> None:
    class Consumer:
        async def seek_wait(self, offsets):  # noqa: ANN001, ANN202
            self.sought = dict(offsets)

    class Bulk:
        async def read(self, recovery, tps, offsets):  # noqa: ANN001, ANN202
            offsets["a"] = 41

    actives = {"a": None}
    recovery = SimpleNamespace(
        app=SimpleNamespace(funnel_bulk_recovery=Bulk()), active_offsets=actives
    )
    consumer = Consumer()
    asyncio.run(recovery_seek._seek_offsets(recovery, consumer, {"a"}, actives, "active"))
    assert consumer.sought == {"a": 41}


def test_a_zero_limit_reads_nothing() -> None:
    app = faust.App("bulk-zero-test", store="memory://")
    table = json_table(app)
    tp = TP("t-changelog", 0)
    recovery = SimpleNamespace(tp_to_table={tp: table}, active_highwaters={tp: 10})
    offsets = {tp: None}
    left = asyncio.run(
        BulkRecovery({"bootstrap_servers": "127.0.0.1:1"}, 0).read(recovery, [tp], offsets)
    )
    assert left == [tp] and offsets == {tp: None}  # all left to Faust's reader

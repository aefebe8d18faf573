"""The bulk changelog reader's pure parts against Faust's own decoding and store."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust
from faust.types import TP

from stream.faust_fixes import bulk_recovery, recovery_seek
from stream.faust_fixes.bulk_recovery import BulkRecovery, applies_in_bulk, apply, decode, plan


def json_table(app: faust.App, name: str = "t") -> faust.Table:
    schema = faust.Schema(key_serializer="json", value_serializer="json")
    return app.Table(name, default=None, partitions=2, schema=schema)


def test_plan_reads_from_after_the_last_applied_offset_to_the_highwater() -> None:
    offsets = {"new": None, "empty": None, "half": 41, "done": 99, "unset": -1}
    highwaters = {"new": 9, "empty": -1, "half": 99, "done": 99, "unset": 0}
    assert plan(offsets, offsets, highwaters) == {"new": (0, 9), "half": (42, 99), "unset": (0, 0)}


def test_records_decode_as_faust_decodes_its_json_changelogs() -> None:
    app = faust.App("bulk-decode-test", store="memory://")
    ser = app.serializers
    for key, value in (
        ('[0,"shop","v\\u00e9",1.5,"e1"]', '{"type":"visit","visitor_id":"v\u00e9"}'),
        ('[3,"shop","reached",2,1700000000,"",""]', 17),
        ("0|next", 1234),
        ("2|sources", {"shop.visits:0": [1.5, 7]}),
        ('[1,"values","shop","channel"]', ["direct", "paid"]),
        ("[0,1700000040]", 0.25),
    ):
        raw_key = ser.dumps_key(None, key, serializer="json")
        raw_value = ser.dumps_value(None, value, serializer="json")
        got = decode(1, raw_key, raw_value)
        assert got.key == ser.loads_key(None, raw_key, serializer="json") == key
        assert got.value == ser.loads_value(None, raw_value, serializer="json") == value
        assert got.message.partition == 1 and got.message.value == raw_value
    tombstone = decode(0, ser.dumps_key(None, "k", serializer="json"), None)
    assert tombstone.value is None and tombstone.message.value is None


def test_applied_records_keep_the_memory_stores_semantics() -> None:
    """A tombstone deletes, a key set again after its tombstone stays, and records
    past the highwater are left alone; the offset moves to the last one applied."""
    app = faust.App("bulk-apply-test", store="memory://")
    table = json_table(app)
    assert applies_in_bulk(table)
    tp = TP("t-changelog", 1)
    recovery = SimpleNamespace(tp_to_table={tp: table})

    def rec(offset: int, key: str, value: object) -> SimpleNamespace:
        raw = None if value is None else faust.serializers.codecs.dumps("json", value)
        return SimpleNamespace(
            offset=offset, key=faust.serializers.codecs.dumps("json", key), value=raw
        )

    offsets = {tp: -1}
    records = [
        rec(0, "a", 1),
        rec(1, "b", 2),
        rec(3, "a", None),
        rec(4, "b", None),
        rec(5, "b", 3),
        rec(9, "c", 4),
    ]
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

"""Bundles: many events and a mark in one events-topic record, read back exactly."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st

from stream.core import bundles
from stream.core.bundles import CORRECTION, EVENT, MARK, BadBundle, Item
from stream.kafka.partitioning import partition_for
from stream.worker.normalise import bundled
from tests.unit.test_batch_sends import MURMUR2

items = st.builds(
    Item,
    st.sampled_from(bundles.KINDS),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.binary(max_size=300),
)


@given(st.lists(items, max_size=40), st.integers(min_value=1, max_value=2000))
def test_items_come_back_in_order_whatever_the_split(sent: list[Item], limit: int) -> None:
    values = bundles.encode(sent, limit)
    assert [i for v in values for i in bundles.decode(v)] == sent
    assert all(v for v in values)  # no empty record
    for v in values[:-1]:  # a record closes at the first item that reaches the limit
        assert len(v) >= limit
        assert len(v) - 13 - len(bundles.decode(v)[-1].value) < limit


def test_no_items_no_records() -> None:
    assert bundles.encode([]) == []


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\x01\x00", "stray bytes"),
        (bundles.encode([Item(EVENT, 1, b"{}")])[0][:-1], "overruns"),
        (b"\x09" + bundles.encode([Item(EVENT, 1, b"{}")])[0][1:], "unknown item kind 9"),
    ],
)
def test_a_garbled_bundle_says_what_is_wrong(data: bytes, what: str) -> None:
    with pytest.raises(BadBundle, match=what):
        bundles.decode(data)


def test_the_partition_is_the_java_clients() -> None:
    for n in (1, 6, 7, 12):
        for key, murmur in MURMUR2.items():
            assert partition_for(key.encode(), n) == (murmur & 0x7FFFFFFF) % n


def test_a_batch_is_one_bundle_per_input_and_counting_partition_marks_last() -> None:
    ctx = SimpleNamespace(settings=SimpleNamespace(partitions=3, events_topic="ev"))
    visits, calls = TP("visits", 0), TP("calls", 2)
    routed = [
        (visits, 1, Item(EVENT, 10, b"a")),
        (visits, 1, Item(EVENT, 11, b"b")),
        (calls, 0, Item(EVENT, 7, b"c")),
        (calls, 1, Item(CORRECTION, 7, b"c2")),
    ]
    out = bundled(ctx, routed, {visits: 100.0, calls: float("-inf")}, {visits: 12, calls: 8})
    assert set(out) == {(visits, "ev"), (calls, "ev")}
    for tp in (visits, calls):
        records = out[(tp, "ev")]
        assert [p for p, *_ in records] == [0, 1, 2]  # every counting partition gets the mark
        for _, key, value, headers in records:
            assert key is None
            assert dict(headers) == {
                "bundle": b"1",
                "src": tp.topic.encode(),
                "src_partition": str(tp.partition).encode(),
            }
            *_, mark = bundles.decode(value)
            assert mark.kind == MARK
    got = {p: bundles.decode(v) for p, _, v, _ in out[(visits, "ev")]}
    assert got[1][:2] == [Item(EVENT, 10, b"a"), Item(EVENT, 11, b"b")]
    assert len(got[0]) == len(got[2]) == 1
    assert orjson.loads(got[0][0].value) == {"source": "visits:0", "ts": 100.0, "offset": 12}
    calls_marks = {p: bundles.decode(v)[-1] for p, _, v, _ in out[(calls, "ev")]}
    assert orjson.loads(calls_marks[0].value)["ts"] is None  # no event time seen yet
    assert bundles.decode(out[(calls, "ev")][1][2])[0] == Item(CORRECTION, 7, b"c2")

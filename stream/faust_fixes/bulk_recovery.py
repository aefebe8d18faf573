"""Table recovery in bulk: a restarted worker reads its changelogs with a plain
aiokafka consumer and applies them in large batches (memory store only).

Faust's recovery (faust-streaming 0.15.3, ``faust.tables.recovery``) hands
every changelog record through the app consumer's fetch loop, the conductor,
a ``faust.Event``, the changelog queue and ``Recovery._slurp_changelogs``, one
at a time: about 7,500 records/s on this 2-core machine, most of it that
machinery (``python -m bench.recovery --journeys 100000 --profile ...``: the
fetch loop 43 %, ``_slurp_changelogs`` 29 %, the table's apply 3 %), so a
worker with 1M journeys (3M records) took minutes to answer again.

``read_ahead`` runs inside ``Recovery._seek_offsets`` for the active
partitions (the hook is in recovery_seek.py), after the highwaters and start
offsets are built and before Faust's own reader would start: it reads each
active changelog partition from its start offset to its highwater
(read_committed, the same bound Faust uses), decodes the records once with
orjson and writes them to the memory store as its ``apply_changelog_batch``
would (``store_batch``: tombstones; a property test holds the data equal),
then moves ``active_offsets`` to what it applied, with no yield between the
two. Faust's ``need_recovery`` then finds nothing left, and recovery completes as for an
up-to-date table. Whatever is left when ``FUNNEL_RECOVERY_BULK_S`` runs out
(kept under Faust's 90 s step timeout, past which its recovery service stops)
Faust's reader reads on from there; a rebalance during the read cancels it
and the next recovery starts from the offsets applied, as with Faust's reader.

Delete when: Faust's recovery applies changelogs in batches without a Faust
event per record (the bench above then shows it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from stream import heap

log = logging.getLogger("stream.faust_fixes")

MAX_RECORDS = 20_000  # per getmany: amortises the call, keeps the loop responsive
FETCH_BYTES = 16 * 1024 * 1024


def plan(
    tps: Iterable[Any], offsets: Mapping[Any, int | None], highwaters: Mapping[Any, int | None]
) -> dict[Any, tuple[int, int]]:
    """Per partition with something to read, ``(first offset, last offset)``.

    Faust's offsets are the last one applied (None or -1: nothing yet), its
    highwaters the last one to read (the last stable offset less one)."""
    out = {}
    for tp in tps:
        done, last = offsets.get(tp), highwaters.get(tp)
        first = 0 if done is None or done < 0 else done + 1
        if last is not None and last >= first:
            out[tp] = (first, last)
    return out


def applies_in_bulk(table: Any) -> bool:
    """Tables whose changelog the bulk reader decodes as Faust would: plain JSON
    keys and values (no model types), no per-event callback, the memory store."""
    schema = table.changelog_topic.schema
    return (
        table.key_type is None
        and table.value_type is None
        and schema.key_serializer == "json"
        and schema.value_serializer == "json"
        and table._on_changelog_event is None
        and type(table.data).__module__ == "faust.stores.memory"
    )


@dataclass
class BulkRecovery:
    """What the worker sets on its app (``app.funnel_bulk_recovery``) to turn the
    bulk reader on: the aiokafka client options and the time it may take."""

    client_options: dict[str, Any]
    limit_s: float

    async def read(self, recovery: Any, tps: Iterable[Any], offsets: Any) -> list[Any]:
        """Read and apply; the partitions left to Faust's reader."""
        todo = {
            tp: span
            for tp, span in plan(tps, offsets, recovery.active_highwaters).items()
            if applies_in_bulk(recovery.tp_to_table[tp])
        }
        if not todo or self.limit_s <= 0:
            return list(todo)
        from aiokafka import AIOKafkaConsumer

        began = time.monotonic()
        consumer = AIOKafkaConsumer(
            **self.client_options,
            isolation_level="read_committed",
            enable_auto_commit=False,
            # A start below the log's (compacted away meanwhile) reads from its
            # first record, as Faust's reader does; aiokafka's default would
            # skip to the end and lose the state.
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES,
            fetch_max_bytes=FETCH_BYTES,
        )
        await consumer.start()
        with heap.bulk_load():
            left, applied = await self._read_all(
                recovery, consumer, todo, offsets, began + self.limit_s
            )
        log.info(
            "changelogs read in bulk",
            extra={
                "records": applied,
                "partitions": len(todo),
                "left_to_faust": [f"{t.topic}:{t.partition}" for t in left],
                "seconds": round(time.monotonic() - began, 2),
            },
        )
        return left

    async def _read_all(
        self,
        recovery: Any,
        consumer: Any,
        todo: dict[Any, tuple[int, int]],
        offsets: Any,
        deadline: float,
    ) -> tuple[list[Any], int]:
        """Until every partition is read to its highwater or the deadline passed:
        the partitions left and the records applied."""
        from aiokafka import TopicPartition

        applied = 0
        ours = {TopicPartition(tp.topic, tp.partition): tp for tp in todo}
        try:
            consumer.assign(list(ours))
            for aio_tp, tp in ours.items():
                consumer.seek(aio_tp, todo[tp][0])
            left = set(ours)
            while left and time.monotonic() < deadline:
                batches = await consumer.getmany(*left, timeout_ms=200, max_records=MAX_RECORDS)
                for aio_tp, records in batches.items():
                    tp = ours[aio_tp]
                    applied += apply(recovery, tp, records, todo[tp][1], offsets)
                for aio_tp in list(left):
                    tp = ours[aio_tp]
                    if await consumer.position(aio_tp) > todo[tp][1]:
                        offsets[tp] = todo[tp][1]  # read to the end (markers included)
                        left.discard(aio_tp)
        finally:
            await consumer.stop()
        return [ours[t] for t in left], applied


def apply(recovery: Any, tp: Any, records: list[Any], last: int, offsets: Any) -> int:
    """Apply one partition's fetched records up to ``last`` and move its offset;
    nothing yields in between, so a cancelled read leaves the two matching."""
    kept = [r for r in records if r.offset <= last]
    if not kept:
        return 0
    store_batch(recovery.tp_to_table[tp], [(r.key, r.value) for r in kept])
    offsets[tp] = kept[-1].offset
    return len(kept)


def store_batch(table: Any, pairs: list[tuple[bytes, bytes | None]]) -> None:
    """What Faust's memory store does with a changelog batch
    (``Store.apply_changelog_batch``, the test holds the data equal), without a
    Faust event per record: keys and values set in order, and a key whose last
    value is a tombstone (or falsy) deleted.

    Without Faust's key -> partition index (``Store._key_partition``): the store
    reads it only to drop standby partitions' keys once recovery completes, and
    this worker keeps no standbys and clears every table on a revoke
    (``worker/app.py``, ``rebalance_state.py``). At 1M journeys it held 3M
    recovered keys, about 120 MB at the peak of a recovery and 40 MB after."""
    store, to_key, to_value = table.data, table._to_key, table._to_value
    data = store.data
    loads = orjson.loads
    deleted = set()
    for raw_key, raw_value in pairs:
        key = to_key(None if raw_key is None else loads(raw_key))
        if raw_value is None:
            data[key] = None
            deleted.add(key)
        else:
            data[key] = to_value(loads(raw_value))
    for key in deleted:
        if not data[key]:
            del data[key]


async def read_ahead(recovery: Any, tps: Any, offsets: Any, title: str) -> None:
    """The hook in ``Recovery._seek_offsets``: read the active partitions in bulk
    when the worker turned it on."""
    bulk = getattr(recovery.app, "funnel_bulk_recovery", None)
    if bulk is not None and title == "active" and offsets is recovery.active_offsets:
        await bulk.read(recovery, tps, offsets)

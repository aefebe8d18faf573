"""After a failed chaos run: which events-topic partitions lost or doubled events.

    python -m tests.chaos.where_lost TOPIC_PREFIX APP_ID [--partitions 4]

e.g. ``python -m tests.chaos.where_lost t9a44cb5f. funnel-test-9a44cb5f`` (the
prefix and app id are in the worker log names under .run/test*/). Reads the
re-keyed ``funnel.events`` topic (bundles and single records, distinct event
ids, read_committed), the ``events-per-minute`` table's changelog and the
``journeys`` table's changelog (the last value of each key), all on the test
stack (FUNNEL_TEST_PORT_OFFSET moves it), and prints per partition the events
the topic holds that the table does not count (negative: counted twice), then
the events the topic holds that no journey holds, with their events-topic
offset and input origin: the offsets to look up in the worker's trace. If the
topic holds every event, the loss is in the counting stage's state, not in
normalising.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter, defaultdict
from datetime import datetime

import orjson

from stream.core import bundles
from stream.core.engine import Engine
from stream.core.event_counts import minute_key
from stream.core.events import decode
from stream.core.funnels import load_funnels
from tests.support import TEST_ENV


async def read_all(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, object]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[tuple[int, object]] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                out += [(tp.partition, m) for m in messages]
        return out
    finally:
        await consumer.stop()


def events_of(records: list[tuple[int, object]]) -> list[tuple[int, int, str, dict]]:
    """(partition, events offset, origin, event) of every event record or bundle item."""
    out = []
    for p, message in records:
        headers = dict(message.headers or ())
        if "mark" in headers:
            continue
        src, src_p = headers.get("src", b"?").decode(), headers.get("src_partition", b"?").decode()
        origin = f"{src}:{src_p}"
        if "bundle" in headers:
            for item in bundles.decode(message.value):
                if item.kind != bundles.MARK:
                    doc = orjson.loads(item.value)
                    out.append((p, message.offset, f"{origin}@{item.offset}", doc))
        else:
            out.append((p, message.offset, origin, orjson.loads(message.value)))
    return out


def wanted(events: list[tuple[int, int, str, dict]]) -> Counter[str]:
    """Distinct events per partition, type and minute, as the table keys them."""
    want: Counter[str] = Counter()
    seen: set[str] = set()
    for p, _, _, doc in events:
        if doc["event_id"] in seen:
            continue
        seen.add(doc["event_id"])
        ts = datetime.fromisoformat(doc["occurred_at"]).timestamp()
        want[minute_key(p, doc["type"], ts)] += 1
    return want


def last_values(records: list[tuple[int, object]]) -> dict[str, object]:
    """The last value of each key (keys are JSON strings, as Faust writes them)."""
    got: dict[str, object] = {}
    for _, message in records:
        got[orjson.loads(message.key)] = orjson.loads(message.value) if message.value else None
    return got


async def main(prefix: str, app_id: str, partitions: int) -> None:
    bootstrap = f"127.0.0.1:{TEST_ENV['FUNNEL_KAFKA_PORT']}"
    events = events_of(await read_all(bootstrap, f"{prefix}funnel.events", partitions))
    want = wanted(events)
    changelog = await read_all(bootstrap, f"{app_id}-events-per-minute-changelog", partitions)
    got = last_values(changelog)
    missing: Counter[str] = Counter()
    for key in set(want) | set(got):
        missing[key.split("|", 1)[0]] += want.get(key, 0) - (got.get(key) or 0)
    print(f"{sum(want.values())} distinct events on {prefix}funnel.events")
    print("missing from the counts, per partition:", {p: n for p, n in missing.items() if n})
    counters = last_values(
        await read_all(bootstrap, f"{app_id}-funnel-counters-changelog", partitions)
    )
    journeys = last_values(await read_all(bootstrap, f"{app_id}-journeys-changelog", partitions))
    for p in range(partitions):
        compare_state(p, [e for e in events if e[0] == p], counters, journeys)


def compare_state(p: int, events: list, counters: dict, journeys: dict) -> None:
    """Partition ``p``'s committed counters and journeys against a fresh engine fed
    the partition's events in topic order: which journeys lack which events, with
    the events-topic offset and input origin of each (the offsets to look up in
    the worker's trace)."""
    engine = Engine(load_funnels(), bucket=60, lateness=600.0)
    seen: set[str] = set()
    where: dict[str, tuple[int, str]] = {}
    for _, offset, origin, doc in events:
        if doc["event_id"] not in seen:
            seen.add(doc["event_id"])
            where[doc["event_id"]] = (offset, origin)
            engine.process(decode(orjson.dumps(doc), now=float("inf")))
    got = {tuple(k[1:]): v for k, v in map(parsed, counters.items()) if k[0] == p and v}
    want = {k: v for k, v in engine.counters.items() if v}
    wrong = [k for k in set(got) | set(want) if got.get(k, 0) != want.get(k, 0)]
    held: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for key, value in map(parsed, journeys.items()):
        if key[0] == p and len(key) == 5 and value is not None:
            held[(key[1], key[2])].add(key[4])
    lacking = []
    for name, entities in engine.journeys.items():
        for entity, journey in entities.items():
            ids = {item.event_id for item in journey.items}
            if ids - held[(name, entity)]:
                lacking.append((name, entity, sorted(ids - held[(name, entity)])))
    print(f"partition {p}: {len(wrong)} counter keys differ, {len(lacking)} journeys lack events")
    for name, entity, ids in lacking[:15]:
        print(f"  {name} {entity} lacks", [(i, *where[i]) for i in ids])


def parsed(item: tuple[str, object]) -> tuple[list, object]:
    return orjson.loads(item[0]), item[1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix")
    parser.add_argument("app_id")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.prefix, args.app_id, args.partitions))

"""After a failed chaos run: which events-topic partitions lost or doubled events.

    python -m tests.chaos.where_lost TOPIC_PREFIX APP_ID [--partitions 6]

e.g. ``python -m tests.chaos.where_lost t9a44cb5f. funnel-test-9a44cb5f`` (the
prefix and app id are in the worker log names under .run/test*/). Reads the
re-keyed ``funnel.events`` topic (distinct event ids, read_committed) and the
``events-per-minute`` table's changelog (the last value of each key), both on
the test stack (FUNNEL_TEST_PORT_OFFSET moves it), and prints per partition the
events the topic holds that the table does not count (negative: counted twice).
If the topic holds every event, the loss is in the counting stage's state, not
in normalising.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from datetime import datetime

import orjson

from stream.core.event_counts import minute_key
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


def wanted(events: list[tuple[int, object]]) -> Counter[str]:
    """Distinct events per partition, type and minute, as the table keys them."""
    want: Counter[str] = Counter()
    seen: set[str] = set()
    for p, message in events:
        if any(key == "mark" for key, _ in message.headers or ()):
            continue
        doc = orjson.loads(message.value)
        if doc["event_id"] in seen:
            continue
        seen.add(doc["event_id"])
        ts = datetime.fromisoformat(doc["occurred_at"]).timestamp()
        want[minute_key(p, doc["type"], ts)] += 1
    return want


async def main(prefix: str, app_id: str, partitions: int) -> None:
    bootstrap = f"127.0.0.1:{TEST_ENV['FUNNEL_KAFKA_PORT']}"
    events = await read_all(bootstrap, f"{prefix}funnel.events", partitions)
    want = wanted(events)
    changelog = await read_all(bootstrap, f"{app_id}-events-per-minute-changelog", partitions)
    got: dict[str, int] = {}
    for _, message in changelog:
        got[orjson.loads(message.key)] = orjson.loads(message.value) if message.value else 0
    missing: Counter[str] = Counter()
    for key in set(want) | set(got):
        missing[key.split("|", 1)[0]] += want.get(key, 0) - (got.get(key) or 0)
    print(f"{sum(want.values())} distinct events on {prefix}funnel.events")
    print("missing from the counts, per partition:", {p: n for p, n in missing.items() if n})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix")
    parser.add_argument("app_id")
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(main(args.prefix, args.app_id, args.partitions))

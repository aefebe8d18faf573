"""How engine state is stored in Faust tables (pure encode/decode, no Faust).

Every key is a JSON array string that starts with the events-topic partition,
so a key is written from one partition only (DESIGN.md section 7) and readers
can keep to the partitions they own.
"""

from __future__ import annotations

from typing import Any

import orjson

from stream.core.engine import Item, Journey, Key
from stream.core.events import decode, encode


def journey_key(partition: int, funnel: str, entity: str) -> str:
    return orjson.dumps([partition, funnel, entity]).decode()


def counter_key(partition: int, key: Key) -> str:
    return orjson.dumps([partition, *key]).decode()


def parse_key(text: str) -> list[Any]:
    return orjson.loads(text)


def _stored(item: Item) -> str:
    if item.stored is None:
        item.stored = encode(item.event).decode()
    return item.stored


def dump_journey(journey: Journey) -> dict[str, Any]:
    return {
        "items": [[i.ts, i.event_id, _stored(i)] for i in journey.items],
        # (key tuple, n) pairs: orjson writes them as [[...], n] without a Python copy.
        "contrib": list(journey.contributions.items()),
        "newest": journey.newest,
    }


def load_journey(value: dict[str, Any]) -> Journey:
    from collections import Counter

    items = []
    for ts, event_id, raw in value["items"]:
        event = decode(raw.encode(), now=float("inf"))
        items.append(Item(ts, event_id, event, raw))
    contributions = Counter({tuple(k): n for k, n in value["contrib"]})
    return Journey(items=items, contributions=contributions, newest=value["newest"])

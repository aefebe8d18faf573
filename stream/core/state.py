"""How engine state is stored in Faust tables (pure encode/decode, no Faust).

Every key is a JSON array string that starts with the events-topic partition,
so a key is written from one partition only (DESIGN.md section 7) and readers
can keep to the partitions they own.

A journey is stored as one record per event it holds, ``[p, funnel, entity,
ts, event_id] -> event``, and one small record of the rest, ``[p, funnel,
entity] -> {newest, carry}``: a change writes only what changed, and
no record grows with an entity's activity (one journey record of a busy
visitor outgrew Kafka's 1 MB message limit and stopped a worker).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import orjson

from stream.core.engine import Changes, Key
from stream.core.events import decode_stored, encode, parse_timestamp, slim
from stream.core.journeys import Carry, Item, Journey, in_order


def journey_key(partition: int, funnel: str, entity: str) -> str:
    return orjson.dumps([partition, funnel, entity]).decode()


def item_key(partition: int, funnel: str, entity: str, item: Item) -> str:
    return orjson.dumps([partition, funnel, entity, item.ts, item.event_id]).decode()


def counter_key(partition: int, key: Key) -> str:
    return orjson.dumps([partition, *key]).decode()


def parse_key(text: str) -> list[Any]:
    return orjson.loads(text)


def by_partition(keys: Iterable[str], partitions: set[int]) -> dict[int, list[str]]:
    """Each of ``partitions``' keys among a table's, in one pass.

    A key's partition is read from its text (``[p,...``, as ``orjson`` writes it)
    without parsing the key: a restarted worker's tables hold every partition
    it owns, and each partition's keys are parsed only when it is loaded. Keys
    only, no ``(key, value)`` pairs: two million pairs made at once and let go
    left holes all over a restarted worker's memory."""
    out: dict[int, list[str]] = {p: [] for p in partitions}
    for key in keys:
        held = out.get(int(key[1 : key.index(",")]))
        if held is not None:
            held.append(key)
    return out


def dump_item(item: Item) -> str:
    """The event as stored. Each is written once, when it is added, so its
    encoding is not kept (a copy of every held event was kept before, when a
    journey was rewritten whole on every change)."""
    return encode(item).decode()


def dump_journey(journey: Journey) -> dict[str, Any]:
    """Everything but the events and their contributions (recomputed after a
    restore: a customer with a thousand orders had a megabyte of them)."""
    carry = journey.carry
    return {
        "newest": journey.newest,
        "carry": None if carry is None else {**_fields(carry), "seen": sorted(carry.seen)},
    }


def journey_records(partition: int, changes: Changes) -> dict[str, Any]:
    """The journeys table's records for an engine's changes (None: delete the key)."""
    p = partition
    # Dropped first: a corrected event replaces one with the same key.
    records: dict[str, Any] = {item_key(p, f, e, item): None for f, e, item in changes.dropped}
    records.update((item_key(p, f, e, item), dump_item(item)) for f, e, item in changes.added)
    for (f, e), journey in changes.journeys.items():
        records[journey_key(p, f, e)] = None if journey is None else dump_journey(journey)
    return records


def _fields(carry: Carry) -> dict[str, Any]:
    return {f.name: getattr(carry, f.name) for f in fields(carry)}


def decode_journey(newest: float, carry: dict[str, Any] | None, raws: list[bytes]) -> Journey:
    """A journey from its record's fields and its stored events, decoded in one call
    (``events.decode_stored``)."""
    events = decode_stored(raws)
    for event in events:
        event.ts = event.occurred_at.timestamp()  # as ``events.decode`` made it
        slim(event)
    return Journey(
        items=sorted(events, key=in_order),
        contributions=None,
        newest=newest,
        carry=None if carry is None else Carry(**{**carry, "seen": set(carry["seen"])}),
    )


def stored_id(raw: bytes) -> tuple[float, str]:
    """``(ts, event_id)`` of a stored event, the two that vary in its record's key:
    ``ts`` from its ``occurred_at`` as ``events.decode`` makes it (the stored time
    is that instant: ``events.encode``)."""
    doc = orjson.loads(raw)
    return parse_timestamp(doc["occurred_at"]), doc["event_id"]


def next_offset_key(partition: int) -> str:
    """Marks-table key of the partition's next events offset (committed with its state)."""
    return f"{partition}|next"


def sources_key(partition: int) -> str:
    """Marks-table key of the partition's source marks."""
    return f"{partition}|sources"


def values_key(partition: int, funnel: str, dim: str) -> str:
    """Key (in the watermarks table) of the raw values a funnel keeps for a dimension."""
    return orjson.dumps([partition, "values", funnel, dim]).decode()


@dataclass(slots=True)
class StoredJourney:
    """A restored journey as its records hold it, decoded when the engine first
    needs it (``Engine.restore``): a restarted worker answers from its counters
    at once, and most journeys are never touched again before they expire
    (decoding a million of them took longer than reading the changelogs).

    Its events are held as their stored JSON, parsed when needed: a tuple, a
    float and an id made per restored event took a fifth of a restarted
    worker's memory, and the small objects made beside them to parse the
    records left it full of holes (issue #22: 1.6x the memory of the
    worker that wrote the state). Their record keys (``[p, funnel, entity, ts,
    event_id]``) are not kept either: what varies in them is in the event
    (``stored_id``), and the key strings were ~100 of a restarted worker's
    ~1 kB per journey."""

    newest: float | None  # None until its journey record is read
    carry: dict[str, Any] | None
    # A journey of one event (most are) holds it bare, not in a list of one
    # (``settle``). Bytes, copied from the recovered strings (``held_copy``).
    events: list[bytes] | bytes

    def load(self) -> Journey:
        return decode_journey(self.newest, self.carry, listed(self.events))

    def item_ids(self) -> list[tuple[float, str]]:
        """``(ts, event_id)`` of its events: enough to delete their records."""
        return [stored_id(raw) for raw in listed(self.events)]

    def settle(self) -> None:
        """All its records are read: a single event is held bare."""
        if isinstance(self.events, list) and len(self.events) == 1:
            self.events = self.events[0]

    def take_head(self, head: dict[str, Any]) -> None:
        """Its journey record."""
        self.newest, self.carry = head["newest"] + 0.0, head.get("carry")  # a copy: held_copy
        for _, _, raw in head.get("items", ()):  # a version that kept them here
            self.events.append(held_copy(raw))


Restored = dict[str, dict[str, StoredJourney]]  # funnel -> entity -> journey


def load_journeys(records: Iterable[tuple[str, Any]]) -> tuple[Restored, int]:
    """Journeys from their records ``(key text, value)`` of one partition, parsed one
    at a time, and how many event records had no journey record (none expected:
    both are written together)."""
    found: Restored = {}
    for text, value in records:
        if value is None:
            continue
        key = parse_key(text)
        by_entity = found.get(key[1])
        if by_entity is None:
            by_entity = found[key[1]] = {}
        journey = by_entity.get(key[2])
        if journey is None:
            journey = by_entity[key[2]] = StoredJourney(None, None, [])
        if len(key) == 3:
            journey.take_head(value)
        else:
            journey.events.append(held_copy(value))
    orphans = 0
    for by_entity in found.values():
        for entity in [e for e, j in by_entity.items() if j.newest is None]:
            orphans += len(listed(by_entity.pop(entity).events))
        for journey in by_entity.values():
            journey.settle()
    return found, orphans


def listed(held: list[bytes] | bytes) -> list[bytes]:
    """A stored journey's events as a list (one is held bare)."""
    return [held] if isinstance(held, bytes) else held


def held_copy(text: str) -> bytes:
    """A recovered event string as the bytes a restored journey holds.

    A copy on purpose: the recovered string sits in memory among the record
    keys and journey records that the engine load lets go, and kept there it
    kept the whole of that memory from being returned (a restarted worker
    held 1.9x the state of the worker that wrote it); bytes are also 16
    bytes smaller than the string."""
    return text.encode()


def restored_entries(found: Restored) -> Iterator[tuple[str, str, StoredJourney]]:
    """``(funnel, entity, journey)`` of every restored journey, for ``Engine.restore``."""
    for funnel, by_entity in found.items():
        for entity, journey in by_entity.items():
            yield funnel, entity, journey

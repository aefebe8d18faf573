"""POST /v1/batch: what a batch body means, event by event (DESIGN.md section 9).

Pure: the body in, for each event either a record ready for its input topic or
a rejection with the event's index, so one bad event never sinks the batch.
Each event is checked by the worker's own decoder, so an event accepted here is
never dead-lettered by the worker for its shape.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from stream.collector.touch import with_touch
from stream.collector.write_keys import Source
from stream.core.events import Rejection, decode, entity_of
from stream.kafka.producer import complete

MAX_REQUEST = 500 * 1024  # bytes of one request body (Segment's batch limit)
MAX_EVENT = 32 * 1024  # bytes of one event in it
MAX_EVENTS = 2000  # events in one request


class BadRequest(Exception):
    """A request that cannot be read at all: ``status`` 400 or 413."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Forbidden(Exception):
    """The write key may not send an event of this type (403)."""


@dataclass(frozen=True)
class Record:
    """An accepted event, ready for Kafka."""

    index: int
    topic: str
    key: bytes
    value: bytes
    type: str


@dataclass(frozen=True)
class Rejected:
    index: int
    reason: str
    message: str
    value: bytes  # the event as sent, for the dead-letter topic

    def answer(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason, "message": self.message}


def events_of(raw: bytes) -> list[Any]:
    """The events of a body ``{"batch": [...]}`` (a bare list is taken too)."""
    if len(raw) > MAX_REQUEST:
        raise BadRequest(
            413, f"request body over 500 KB ({MAX_REQUEST} bytes); send smaller batches"
        )
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, f"request body is not JSON: {exc}") from None
    events = doc.get("batch") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        raise BadRequest(400, 'request body must be {"batch": [event, ...]}')
    if len(events) > MAX_EVENTS:
        raise BadRequest(413, f"{len(events)} events in one request; at most {MAX_EVENTS}")
    return events


def completed(event: dict[str, Any], source: Source) -> dict[str, Any]:
    """``event_id`` and ``occurred_at`` filled when absent, as the producer fills
    them (``complete``). An event with its own time but no id gets an id derived
    from its content, so resending the same batch after a 503 counts it once;
    one with neither can only get a new id."""
    out = with_touch({k: v for k, v in event.items() if v is not None})
    if "event_id" not in out and "occurred_at" in out:
        canonical = orjson.dumps(out, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(source.name.encode() + b"\0" + canonical).hexdigest()
        out["event_id"] = f"c-{digest[:32]}"
    return complete(out)


def prepare(
    event: Any, index: int, source: Source, topics: dict[str, str], now: float | None = None
) -> Record | Rejected:
    """One event of a batch: a Record, or why not. Raises Forbidden for a type
    the source may not write."""
    if not isinstance(event, dict):
        value = orjson.dumps(event)
        return Rejected(index, "not_object", "an event must be a JSON object", value)
    kind = event.get("type")
    if isinstance(kind, str) and kind in topics and kind not in source.types:
        raise Forbidden(
            f"event {index}: write key of source {source.name!r} may not send {kind!r} events "
            f"(allowed: {', '.join(sorted(source.types))})"
        )
    value = orjson.dumps(completed(event, source))
    if len(value) > MAX_EVENT:
        message = f"event is {len(value)} bytes; at most {MAX_EVENT}"
        return Rejected(index, "oversize", message, value)
    try:
        decoded = decode(value, now=now)
    except Rejection as exc:
        return Rejected(index, exc.reason, exc.message, value)
    topic = topics[decoded.type]
    return Record(index, topic, entity_of(decoded).encode(), value, decoded.type)


def prepare_all(
    events: list[Any], source: Source, topics: dict[str, str], now: float | None = None
) -> tuple[list[Record], list[Rejected]]:
    records: list[Record] = []
    rejected: list[Rejected] = []
    for index, event in enumerate(events):
        got = prepare(event, index, source, topics, now)
        (records if isinstance(got, Record) else rejected).append(got)
    return records, rejected


def dead_letter_headers(rejected: Rejected, endpoint: str, source: str) -> list[tuple[str, bytes]]:
    """Dead-letter headers of a rejected request event: the worker's names, with
    the endpoint for topic and the event's index in the request for offset."""
    return [
        ("reason", rejected.reason.encode()),
        ("message", rejected.message.encode()[:1024]),
        ("topic", endpoint.encode()),
        ("partition", b"-"),
        ("offset", str(rejected.index).encode()),
        ("write_source", source.encode()),
    ]

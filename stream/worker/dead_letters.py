"""Dead-letter headers: why a message was rejected and where it stood on its input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stream.core.events import Rejection

SOURCE_HEADER = "src"  # the input topic of a re-keyed event on the events topic
MARK_HEADER = "mark"  # an input partition's progress on the events topic, not an event
# An event sent again with fields filled in (a deal once its call came): it replaces
# the one with its event_id instead of being dropped as a duplicate.
CORRECTION_HEADER = "correction"
# Many events and marks of one input partition in one record (core/bundles.py).
BUNDLE_HEADER = "bundle"


def header(msg: Any, name: str) -> str | None:
    for key, value in msg.headers or ():
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


def dead_letter_headers(
    rejection: Rejection, topic: str, partition: object, offset: object
) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: why, and where the message stood on its input topic."""
    return [
        ("reason", rejection.reason.encode()),
        ("message", rejection.message.encode()[:1024]),
        ("topic", topic.encode()),
        ("partition", str(partition).encode()),
        ("offset", str(offset).encode()),
    ]


def bundle_headers(tp: Any) -> list[tuple[str, bytes]]:
    """Headers of a bundle (core/bundles.py): the input partition its items came from;
    each item carries its own input offset."""
    return [
        (BUNDLE_HEADER, b"1"),
        (SOURCE_HEADER, tp.topic.encode()),
        ("src_partition", str(tp.partition).encode()),
    ]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an event on the events topic stood on its input topic."""

    topic: str
    partition: object
    offset: object


def origin_of(msg: Any, offset: object = None) -> Origin:
    """The input position of an events-topic record, from its headers (a record
    without them, from another producer: its own position); ``offset`` is a bundle
    item's input offset."""
    if offset is None:
        offset = header(msg, "src_offset") or msg.offset
    return Origin(
        header(msg, SOURCE_HEADER) or msg.topic,
        header(msg, "src_partition") or msg.partition,
        offset,
    )


def late_headers(origin: Origin, rejection: Rejection) -> list[tuple[str, bytes]]:
    """Dead-letter headers of a late event: where it came from on its input topic."""
    return dead_letter_headers(rejection, origin.topic, origin.partition, origin.offset)

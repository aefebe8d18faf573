"""Bundles: the events one input partition sends to one counting partition in a
batch, and its mark, as one record of the events topic.

One record per event made the counting stage pay Faust's per-message cost
(fetch, delivery, ack, offset bookkeeping) for every event and again for every
mark (one per input partition and counting partition per batch): at 100,000
bench events about 120,000 records, and that per-message cost, not the engine,
bounded the worker (issue #22). A bundle keeps what the record and its
headers said per item: the input offset, whether it is an event, a
correction, or a mark, and its bytes, in order.

The format (big-endian), item after item: kind (1 byte), input offset (8
bytes, signed), length (4 bytes), then that many bytes. Pure functions; the
worker adds the record's headers (``bundle``, the input topic and partition).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

EVENT, CORRECTION, MARK = 1, 2, 3
KINDS = (EVENT, CORRECTION, MARK)
_HEAD = struct.Struct(">BqI")
# A bundle closes once it holds this many bytes; the next item starts another.
# The counting stage takes up to COUNT_BATCH records at a time and runs a batch
# in one go, so this bounds a batch: about 4 MiB, some 10,000 events (items
# are at most 64 KiB, core/events.MAX_BYTES). At 64 KiB a backlog read one input
# partition at a time made bundles of ~200 events and counting batches of
# ~200,000: the worker's event loop stood still for up to 60 s (`make run` on a
# two-partition stack: "Timer livelock is overlapping ... runtime=63.7"), as
# long as the broker's transaction timeout. A dozen events per record already
# makes the per-record cost small (the bench's bundles hold about six).
MAX_BUNDLE_BYTES = 4 * 1024
COUNT_BATCH = 1000


class BadBundle(ValueError):
    """A record that claims to be a bundle and is not one."""


@dataclass(frozen=True, slots=True)
class Item:
    kind: int  # EVENT, CORRECTION or MARK
    offset: int  # the input offset it came from (a mark: the next input offset)
    value: bytes


def encode(items: Iterable[Item], limit: int = MAX_BUNDLE_BYTES) -> list[bytes]:
    """Items -> record values, in order, each closed once it reaches ``limit`` bytes."""
    out: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for item in items:
        parts.append(_HEAD.pack(item.kind, item.offset, len(item.value)))
        parts.append(item.value)
        size += _HEAD.size + len(item.value)
        if size >= limit:
            out.append(b"".join(parts))
            parts, size = [], 0
    if parts:
        out.append(b"".join(parts))
    return out


def decode(data: bytes) -> list[Item]:
    """A record value -> its items, in order; BadBundle if it is cut or garbled
    (all or nothing: a bad bundle applies no item)."""
    items: list[Item] = []
    at, end = 0, len(data)
    while at < end:
        if end - at < _HEAD.size:
            raise BadBundle(f"{end - at} stray bytes at byte {at} of a {end}-byte bundle")
        kind, offset, length = _HEAD.unpack_from(data, at)
        at += _HEAD.size
        if kind not in KINDS:
            raise BadBundle(f"unknown item kind {kind} at byte {at - _HEAD.size}")
        if at + length > end:
            raise BadBundle(f"item of {length} bytes at byte {at} overruns a {end}-byte bundle")
        items.append(Item(kind, offset, data[at : at + length]))
        at += length
    return items

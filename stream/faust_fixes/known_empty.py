"""Offsets the fetcher has seen hold no record: holes that need no read back.

Serves ``missing_offsets`` (the agents' own offset continuity): every offset
between the next one expected and a batch's highest that Faust did not
deliver is a hole, read back from the broker before the batch is applied.
Nearly all of them are transaction markers: each transaction of the
normalising stage leaves one in every ``funnel.events`` partition it wrote,
so nearly every counting batch read a few holes back, one broker round trip
each with the agent waiting (5 % of a worker's samples, and its loop idle
meanwhile: `python -m bench.scale --events 100000 --workers 1 --profile`,
2026-12-01).

aiokafka's fetcher (``PartitionRecords._unpack_records``, aiokafka 0.14.0)
steps over control batches (the markers) and, read_committed, over aborted
batches without yielding anything for them. Patched here to note each
offset range it stepped over between the records it yielded (and up to where
a fully read fetch ends) in ``EMPTY``: those offsets hold nothing for a
read_committed reader, which is exactly what reading them back would return.
An offset whose record the fetcher yielded is never noted, so a record that
Faust fetched and did not deliver is still a hole read back. Offsets are
immutable, so a note stays true; only the number kept is bounded.

Upstream: the holes are the delivery side of faust-streaming/faust#221 (see
``missing_offsets``); aiokafka exposes no record of the offsets it skipped.

Delete when: ``missing_offsets`` goes (its delete condition); shown against the
real broker in tests/integration/test_continuity.py.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from typing import Any

from stream.faust_fixes.patching import install

KEEP_PER_PARTITION = 4096  # ranges kept per partition; the oldest half goes beyond


class EmptyRanges:
    """Per (topic, partition), offset ranges known to hold no record. Noted from
    the consumer thread, read from the event loop: hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ranges: dict[tuple[str, int], tuple[list[int], list[int]]] = {}

    def note(self, topic: str, partition: int, first: int, last: int) -> None:
        """``first..last`` holds no record: kept merged with the ranges it touches,
        so the ranges stay sorted and apart."""
        with self._lock:
            starts, ends = self._ranges.setdefault((topic, partition), ([], []))
            i = bisect.bisect_left(starts, first)
            if i and ends[i - 1] >= first - 1:
                i -= 1
                first, last = starts[i], max(last, ends[i])
            j = i
            while j < len(starts) and starts[j] <= last + 1:
                last = max(last, ends[j])
                j += 1
            starts[i:j], ends[i:j] = [first], [last]
            if len(starts) > KEEP_PER_PARTITION:
                del starts[: KEEP_PER_PARTITION // 2], ends[: KEEP_PER_PARTITION // 2]

    def unknown(self, topic: str, partition: int, first: int, last: int) -> list[tuple[int, int]]:
        """The parts of ``first..last`` (inclusive) not known to be empty."""
        with self._lock:
            starts, ends = self._ranges.get((topic, partition), ([], []))
            out, cursor = [], first
            i = max(bisect.bisect_right(starts, first) - 1, 0)
            while i < len(starts) and starts[i] <= last and cursor <= last:
                if ends[i] >= cursor:
                    if starts[i] > cursor:
                        out.append((cursor, starts[i] - 1))
                    cursor = max(cursor, ends[i] + 1)
                i += 1
            if cursor <= last:
                out.append((cursor, last))
            return out


EMPTY = EmptyRanges()


def unpack_noting_empty(self: Any) -> Iterator[Any]:
    """``PartitionRecords._unpack_records``, noting the offsets it steps over."""
    tp = self._tp
    cursor = self.next_fetch_offset  # the fetch's first offset: nothing unpacked yet
    for record in unpack_noting_empty.upstream(self):
        if record.offset > cursor:
            EMPTY.note(tp.topic, tp.partition, cursor, record.offset - 1)
        cursor = max(cursor, record.offset + 1)
        yield record
    # Read to its end: the fetch's trailing batches (a marker) were stepped over too.
    if self.next_fetch_offset > cursor:
        EMPTY.note(tp.topic, tp.partition, cursor, self.next_fetch_offset - 1)


def fix_known_empty() -> None:
    from aiokafka.consumer.fetcher import PartitionRecords

    install(PartitionRecords, "_unpack_records", unpack_noting_empty)

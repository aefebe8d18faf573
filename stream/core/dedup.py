"""De-duplication by event_id within a horizon of event time (pure logic).

The worker keeps ``"{partition}|{event_id}" -> event_ts`` in a Faust table on
the entity's partition, so it commits atomically with the offsets. An id is a
duplicate while its first sighting is within ``horizon`` seconds of event
time; ids older than the partition's newest event time minus the horizon are
forgotten, which bounds the state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def is_duplicate(prior_ts: float | None, ts: float, horizon: float) -> bool:
    return prior_ts is not None and abs(ts - prior_ts) <= horizon


def partition_of(key: str) -> int:
    return int(key.split("|", 1)[0])


def expired(
    seen: Iterable[tuple[str, float]], watermarks: Mapping[int, float], horizon: float
) -> dict[int, list[str]]:
    """Keys, per partition, older than that partition's watermark minus the horizon.

    Partitions without a watermark (not owned, or no event yet) are left alone.
    """
    out: dict[int, list[str]] = {}
    for key, ts in seen:
        partition = partition_of(key)
        mark = watermarks.get(partition)
        if mark is not None and ts < mark - horizon:
            out.setdefault(partition, []).append(key)
    return out

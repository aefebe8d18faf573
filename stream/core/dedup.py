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
    The rule, by a scan of every id; the worker finds them with ``ExpiryIndex``.
    """
    out: dict[int, list[str]] = {}
    for key, ts in seen:
        partition = partition_of(key)
        mark = watermarks.get(partition)
        if mark is not None and ts < mark - horizon:
            out.setdefault(partition, []).append(key)
    return out


def older(ts: float | None, cutoff: float) -> bool:
    return ts is not None and ts < cutoff


class ExpiryIndex:
    """The ids held, by partition and minute of event time, so that forgetting
    old ids visits only the minutes past the horizon, not every id held (a full
    scan took about 1 s per 1M ids, once a minute, with the event loop held).

    A superset: an id seen again later (past the horizon of its first sighting)
    is in two minutes, and an id already forgotten may still be listed; ``due``
    checks each against what the table holds now. Ids go at most one minute
    after the horizon (their whole minute must be past it). Not built from the
    table until first used, and forgotten on a rebalance (the table's ids then
    come from a recovery).
    """

    WIDTH = 60.0

    def __init__(self) -> None:
        self.minutes: dict[int, dict[int, list[str]]] = {}
        self.built = False

    def forget(self) -> None:
        self.minutes, self.built = {}, False

    def add(self, partition: int, ids: Mapping[str, float]) -> None:
        if not self.built:
            return  # the first ``due`` builds it from the table, these included
        for key, ts in ids.items():
            self._file(partition, key, ts)

    def _file(self, partition: int, key: str, ts: float | None) -> None:
        if ts is not None:
            minutes = self.minutes.setdefault(partition, {})
            minutes.setdefault(int(ts // self.WIDTH), []).append(key)

    def due(
        self, seen: Mapping[str, float], watermarks: Mapping[int, float], horizon: float
    ) -> dict[int, list[str]]:
        """Keys, per partition, whose whole minute is older than that partition's
        watermark minus the horizon, and whose time in ``seen`` is too; they are
        taken out of the index."""
        if not self.built:
            self.built = True
            for key, ts in seen.items():
                self._file(partition_of(key), key, ts)
        out: dict[int, list[str]] = {}
        for partition, mark in watermarks.items():
            minutes = self.minutes.get(partition)
            if not minutes or mark is None or mark == float("-inf"):
                continue
            before = (mark - horizon) // self.WIDTH  # minutes ending at or before the cutoff
            keys: dict[str, None] = {}  # an id seen again may be in two of them
            for minute in [m for m in minutes if m + 1 <= before]:
                keys.update(dict.fromkeys(minutes.pop(minute)))
            old = [key for key in keys if older(seen.get(key), mark - horizon)]
            if old:
                out[partition] = old
        return out

"""De-duplication by event_id within a horizon of event time (pure logic).

The worker writes ``"{partition}|{event_id}" -> event_ts`` to a Faust table on
the entity's partition, so it commits atomically with the offsets, and holds
each partition's ids itself (``SeenIds``). An id is a duplicate while its
first sighting is within ``horizon`` seconds of event time; ids older than
the partition's watermark minus the horizon are forgotten, which bounds the
state.
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
    The rule, by a scan of every id; the worker finds them with ``SeenIds.expire``.
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


class SeenIds:
    """One counting partition's de-dup ids: event_id -> event time of its first
    sighting, held by the worker (the ``seen-events`` table keeps only the
    changelog, with the memory store).

    Keyed by the event's own id string, so an event that its journey holds
    shares its id and time with its entry here: the table's ``"p|event_id"``
    key and a time of its own were about 80 of the ~600 bytes a worker held
    per one-visit journey (issue #22).

    Ids are also listed by minute of event time, so that forgetting old ids
    visits only the minutes past the horizon, not every id held (a full scan
    took about 1 s per 1M ids, once a minute, with the event loop held). The
    lists are a superset: an id seen again later (past the horizon of its
    first sighting) is in two minutes; ``expire`` checks each against the
    time held now. Ids go at most one minute after the horizon (their whole
    minute must be past it). The lists are built on the first ``expire``.
    """

    WIDTH = 60.0

    def __init__(self, ids: dict[str, float] | None = None) -> None:
        self.ids: dict[str, float] = ids if ids is not None else {}
        self.minutes: dict[int, list[str]] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, event_id: str) -> float | None:
        return self.ids.get(event_id)

    def add(self, ids: Mapping[str, float]) -> None:
        self.ids.update(ids)
        if self.minutes is not None:
            for event_id, ts in ids.items():
                self._file(event_id, ts)

    def _file(self, event_id: str, ts: float) -> None:
        self.minutes.setdefault(int(ts // self.WIDTH), []).append(event_id)

    def expire(self, watermark: float, horizon: float) -> list[str]:
        """Forget the ids whose whole minute, and whose time held, are older than
        ``watermark - horizon``; the ids forgotten (each once)."""
        if watermark == float("-inf"):
            return []
        if self.minutes is None:
            self.minutes = {}
            for event_id, ts in self.ids.items():
                self._file(event_id, ts)
        cutoff = watermark - horizon
        before = cutoff // self.WIDTH  # minutes ending at or before the cutoff
        due: dict[str, None] = {}  # an id seen again may be in two of them
        for minute in [m for m in self.minutes if m + 1 <= before]:
            due.update(dict.fromkeys(self.minutes.pop(minute)))
        ids = self.ids
        old = [event_id for event_id in due if older(ids.get(event_id), cutoff)]
        for event_id in old:
            del ids[event_id]
        return old


def table_key(partition: int, event_id: str) -> str:
    """The id's key in the ``seen-events`` table and its changelog."""
    return f"{partition}|{event_id}"


def by_partition(keys: Iterable[str], partitions: set[int]) -> dict[int, list[str]]:
    """Each of ``partitions``' table keys, in one pass."""
    out: dict[int, list[str]] = {p: [] for p in partitions}
    for key in keys:
        held = out.get(int(key[: key.index("|")]))
        if held is not None:
            held.append(key)
    return out


def restored(partition: int, keys: Iterable[str], table: Mapping[str, float]) -> SeenIds:
    """A partition's ids from its table keys (``"p|event_id"``) and their times.

    The times are copies (``+ 0.0`` makes a new float), like the ids: the
    recovered ones sit among the table keys the worker lets go after loading,
    and kept, they kept that memory from being returned (``state.held_copy``)."""
    cut = len(f"{partition}|")
    return SeenIds({key[cut:]: table[key] + 0.0 for key in keys if table[key] is not None})

"""Answering for all partitions from any worker (pure helpers; HTTP is in the worker).

Each worker holds the engines of the partitions it actively owns. A query to
any worker is answered by summing its own partitions and asking every other
worker, as listed in Faust's partition assignment (each member's web URL is
shared through the consumer group), for the sums of its partitions over the
same absolute time range. The answer is complete only when every partition
was answered exactly once; otherwise the caller answers 503 (rebalancing).

Why not a Redis read model: counters live in Faust tables and commit with the
offsets; copying them to Redis would add a second, not transactional, copy
that can show counts of aborted transactions after a crash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

SumKey = tuple[str, int, str, str]


def peers_of(
    metadata: Mapping[str, Mapping[str, Iterable[int]]], topic: str, own_url: str
) -> dict[str, list[int]]:
    """Other workers' URLs and the partitions of ``topic`` they actively own."""
    out: dict[str, list[int]] = {}
    for url, topics in metadata.items():
        if url.rstrip("/") == own_url.rstrip("/"):
            continue
        partitions = sorted(topics.get(topic, ()))
        if partitions:
            out[url.rstrip("/")] = partitions
    return out


def encode_sums(sums: Mapping[SumKey, int]) -> list[list[Any]]:
    return [[metric, step, dim, value, n] for (metric, step, dim, value), n in sums.items()]


def decode_sums(rows: Iterable[list[Any]]) -> Counter[SumKey]:
    out: Counter[SumKey] = Counter()
    for metric, step, dim, value, n in rows:
        out[(str(metric), int(step), str(dim), str(value))] += int(n)
    return out


def missing_partitions(total: int, answered: Iterable[Iterable[int]]) -> list[int]:
    """Partitions not answered exactly once (absent or answered twice mid-rebalance)."""
    seen: Counter[int] = Counter()
    for partitions in answered:
        seen.update(partitions)
    return [p for p in range(total) if seen[p] != 1]

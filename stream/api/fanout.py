"""Answering for all partitions from any worker: the one fan-out module.

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

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp

log = logging.getLogger("stream.api")

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


PEER_TIMEOUT = 5.0  # seconds a peer worker gets to answer a partial query


class Fanout:
    """Any worker answers for all partitions: its own sums plus every peer's.

    ``owned``: this worker's partitions; ``owned_sums``: its sums for a range;
    ``peers``: the other workers' URLs (from Faust's assignment); ``get_json``:
    one GET that returns a peer's JSON answer or raises. Plain callables, so
    the merge rules are tested without a Faust app or a network.
    """

    def __init__(
        self,
        partitions: int,
        owned: Callable[[], set[int]],
        owned_sums: Callable[[str, float, float, str], Counter],
        peers: Callable[[], Iterable[str]],
        get_json: Callable[[str, dict[str, str]], Awaitable[dict]],
    ) -> None:
        self.partitions = partitions
        self.owned = owned
        self.owned_sums = owned_sums
        self.peers = peers
        self.get_json = get_json

    async def peer_answers(self, path: str, params: dict[str, str]) -> tuple[list[list[int]], list]:
        """Ask every other worker ``path``; the partitions each answered for (own
        first) and their JSON answers."""
        urls = list(self.peers())
        answered, answers = [sorted(self.owned())], []
        results = await asyncio.gather(
            *(self.get_json(f"{url}{path}", params) for url in urls), return_exceptions=True
        )
        for url, result in zip(urls, results, strict=True):
            if isinstance(result, BaseException):
                log.info("peer did not answer", extra={"peer": url, "error": str(result)})
                continue
            answered.append(result["partitions"])
            answers.append(result)
        return answered, answers

    async def cluster_sums(
        self, name: str, start: float, end: float, view: str
    ) -> tuple[Counter, list[int]]:
        """Sums over all partitions, and the partitions not answered exactly once."""
        sums = self.owned_sums(name, start, end, view)
        params = {"start": repr(start), "end": repr(end), "view": view}
        answered, answers = await self.peer_answers(f"/api/partials/{name}", params)
        for answer in answers:
            sums.update(decode_sums(answer["sums"]))
        return sums, missing_partitions(self.partitions, answered)

    def missing(self, answered: Iterable[Iterable[int]]) -> list[int]:
        return missing_partitions(self.partitions, answered)


async def http_get_json(session: Any, url: str, params: dict[str, str], token: str = "") -> dict:
    """A peer's JSON answer over HTTP (with the API token, where one is set: some
    answers are private); any status but 200 is an error."""
    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, params=params, timeout=timeout, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}")
        return await resp.json()

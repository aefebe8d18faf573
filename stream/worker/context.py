"""What the agents, the state readers and the HTTP views of one worker share.

A small explicit object instead of a closure: the agents (worker/normalise.py,
worker/count.py) and the readers (worker/partitions.py) are module-level
functions of it, so each can be read, and tested, on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import faust
from faust.types import TP

from stream.config import Settings
from stream.core.dedup import SeenIds
from stream.core.engine import Engine
from stream.core.funnels import Funnel
from stream.core.tracking import Tracking
from stream.core.watermark import SourceMarks
from stream.faust_fixes.missing_offsets import Refetcher
from stream.faust_fixes.stalled_tails import TailWatch
from stream.logs import RejectLog
from stream.worker.sources import SourceCatalog
from stream.worker.tracking_store import TrackingStore


@dataclass
class Tables:
    """The worker's Faust tables; every key starts with its events-topic partition."""

    seen: faust.Table  # "{p}|{event_id}" -> event time (de-dup)
    events_per_minute: faust.Table  # "{p}|{type}|{minute}" -> distinct events
    journeys: faust.Table  # [p, funnel, entity] -> encoded journey
    counters: faust.Table  # [p, metric, ...] -> count
    # "{p}" -> watermark, "{p}|sources" -> {source: newest event time},
    # "{p}|next" -> next events offset
    marks: faust.Table


@dataclass
class Context:
    app: faust.App
    settings: Settings
    funnels: list[Funnel]
    tables: Tables
    topic_type: dict[str, str]  # input topic -> event type
    tracking: Tracking
    store: TrackingStore
    refetcher: Refetcher
    reject_log: RejectLog
    catalog: SourceCatalog
    # With the memory store the engines hold the journeys; the table keeps only
    # what a recovery brought back until its engine is loaded.
    memory_store: bool = True
    engines: dict[int, Engine] = field(default_factory=dict)
    # Next input offset per source partition for normalise, valid within one
    # assignment; after a rebalance it restarts from the group's committed offset.
    source_next: dict[TP, int] = field(default_factory=dict)
    newest_event: dict[str, float] = field(default_factory=dict)  # source topic -> event time
    # Per owned events partition: its sources' marks and watermark (loaded with the engine).
    marks: dict[int, SourceMarks] = field(default_factory=dict)
    # Per input partition: the newest event time normalise has announced to the
    # counting partitions (valid within one assignment, like source_next).
    sent_marks: dict[TP, float] = field(default_factory=dict)
    pool_synced: bool = False  # the Redis number pool matches the configuration
    last_purge: float = field(default_factory=time.monotonic)
    # Per owned events partition: its de-dup ids (loaded with the engine).
    seen: dict[int, SeenIds] = field(default_factory=dict)
    # Per assigned partition: when its agent last got a batch of it (monotonic),
    # since the assignment; when the worker was first seen ready after it; and
    # the stalled tails already read again.
    last_batch: dict[TP, float] = field(default_factory=dict)
    ready_since: float | None = None
    tails: TailWatch = field(default_factory=TailWatch)

    def delivered(self, batch: list) -> None:
        """Note the partitions of a batch the agent got (worker/tails.py)."""
        now = time.monotonic()
        for event in batch:
            self.last_batch[event.message.tp] = now

    @property
    def by_name(self) -> dict[str, Funnel]:
        return {f.name: f for f in self.funnels}

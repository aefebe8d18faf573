"""The Faust worker: thin adapters from Kafka topics to the plain-Python logic.

Two agents, each processing batches with commits held off (stream/worker/transactions.py):

- ``normalise`` reads the five input topics, decodes and validates every
  message (stream/core/events.py), sends rejects with their original bytes to the
  dead-letter topic, and re-keys valid events by entity into the internal
  events topic, all inside the source partition's transaction;
- ``count`` reads the events topic, drops duplicate event ids (table
  ``seen-events``) and runs the funnel engine (stream/core/engine.py), one engine
  per owned partition, persisting its changed journeys, counters and
  watermark (tables ``journeys``, ``funnel-counters``, ``watermarks``) in the
  same transaction as the offsets; late events go to the dead-letter topic.
  It also keeps unique visits per event-time minute (the walking skeleton).

Engines are rebuilt from the tables after every rebalance, once recovery is
done; until then the API answers 503 and /metrics leaves the funnel gauges out.

Every table key starts with the events-topic partition it belongs to
(DESIGN.md section 7), and readers only look at partitions this worker
actively owns.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import os
import sys
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import aiohttp
import faust
import orjson
from aiokafka.errors import IllegalOperation, ProducerFenced
from faust.types import TP
from faust.web import View
from redis.exceptions import RedisError

from stream import logs
from stream.api import assets as page
from stream.api import fanout as cluster
from stream.api import query as api
from stream.config import Settings
from stream.core import dedup, money, state
from stream.core.chart import funnel_svg
from stream.core.engine import LEDGERS, Engine
from stream.core.events import Rejection, decode, entity_of
from stream.core.funnels import load_funnels
from stream.core.summary import flag_drops, ratio, summarise
from stream.core.tracking import lease_request, load_tracking
from stream.faust_fixes import missing_offsets as continuity
from stream.faust_fixes.fast_paths import speed_up_faust
from stream.faust_fixes.missing_offsets import Refetcher
from stream.kafka.client import client_options, create_topics, faust_credentials
from stream.logs import RejectLog
from stream.worker.metrics import (
    ATTRIBUTED,
    DUPLICATES,
    EVENTS,
    FUNNEL_STATE,
    HELD,
    LATE_TOTAL,
    LEASES,
    POOL_EXHAUSTED,
    REDELIVERED,
    REDIS_UP,
    REFETCHED,
    REJECTED,
    exposition,
)
from stream.worker.tracking_store import TrackingStore, attribute
from stream.worker.transactions import (
    Revoked,
    ack_all,
    batch_is_stale,
    begin_batch,
    commits_held,
    drop_keys,
    fix_read_offset_race,
    fix_recovery_highwaters,
    fix_stop_commit,
    new_generation,
    send_in_transaction,
    write_state,
)

log = logging.getLogger("stream.worker")

BATCH_SIZE = 1000
BATCH_WITHIN = 0.2
PURGE_EVERY_S = 60.0
MAX_BODY = 4096  # bytes of a write request's JSON body
LEDGER_NAMES = {ledger.name for ledger in LEDGERS}
PEER_TIMEOUT = 5.0  # seconds a peer worker gets to answer a partial query
SOURCE_HEADER = "src"


def trace_batch(agent: str, batch: list, **extra: Any) -> None:
    """Debug aid: a batch's offset range and size per topic partition."""
    ranges: dict[str, list[int]] = defaultdict(list)
    for event in batch:
        ranges[f"{event.message.topic}:{event.message.partition}"].append(event.message.offset)
    summary = {tp: [min(o), max(o), len(o)] for tp, o in ranges.items()}
    log.warning("batch", extra={"agent": agent, "ranges": summary, **extra})


def stop_worker_on_error(app: faust.App, name: str) -> Callable:
    """An agent that fails stops the whole worker (exit status 1) instead of idling.

    Faust logs a crashed agent and keeps the worker up with that agent dead, so
    its partitions stop counting while health checks stay green. Stopping lets
    the supervisor restart the worker, which resumes from committed state.
    """

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        async def agent(stream: faust.StreamT) -> None:
            try:
                await fn(stream)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.critical(f"agent {name} failed; stopping the worker", exc_info=True)
                asyncio.get_running_loop().call_later(15, os._exit, 1)  # if stopping hangs
                await app.crash(exc)
                raise

        return agent

    return wrap


def refetched_message(record: Any) -> Any:
    """An aiokafka record read back by the Refetcher, shaped like a Faust message."""
    from types import SimpleNamespace

    return SimpleNamespace(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=list(record.headers or ()),
        tp=TP(record.topic, record.partition),
    )


def minute_bucket(ts: float) -> str:
    """Event-time minute (UTC, ISO) of epoch seconds."""
    return datetime.fromtimestamp(int(ts) // 60 * 60, tz=UTC).isoformat()


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


def late_headers(msg: Any, rejection: Rejection) -> list[tuple[str, bytes]]:
    """Dead-letter headers of a late event: where it came from on its input topic."""
    return dead_letter_headers(
        rejection,
        header(msg, SOURCE_HEADER) or msg.topic,
        header(msg, "src_partition") or msg.partition,
        header(msg, "src_offset") or msg.offset,
    )


def redacted_url(url: str) -> str:
    """A URL fit for logs: any password replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def header(msg: Any, name: str) -> str | None:
    for key, value in msg.headers or ():
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


def create_app(settings: Settings, web_port: int | None = None) -> faust.App:
    fix_recovery_highwaters()
    fix_read_offset_race()
    fix_stop_commit()
    speed_up_faust()
    trace = settings.trace_offsets
    if trace:
        from stream.worker.transactions import trace_offsets

        trace_offsets()
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),
        datadir=str(settings.data_dir / "{conf.id}"),
        store=settings.store,
        processing_guarantee="exactly_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_commit_interval=settings.commit_interval,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(1.0, settings.session_timeout / 10),
        web_enabled=True,
        web_bind=settings.web_bind,
        web_port=web_port or settings.web_port,
        web_host=settings.web_advertise,
        value_serializer="raw",
        key_serializer="raw",
    )
    topic_type = {topic: kind for kind, topic in settings.topics.items()}
    crm_types = ("call", "deal_stage")
    shop_sources = app.topic(
        *(t for k, t in settings.topics.items() if k not in crm_types),
        value_type=bytes,
        key_type=bytes,
    )
    # Calls and deal stages are attributed from Redis: their own agent, so a
    # Redis outage holds back only them.
    crm_sources = app.topic(
        *(settings.topics[k] for k in crm_types), value_type=bytes, key_type=bytes
    )
    events_topic = app.topic(
        settings.events_topic,
        partitions=settings.partitions,
        internal=True,
        value_type=bytes,
        key_type=bytes,
    )
    table_options = {
        "partitions": settings.partitions,
        "schema": faust.Schema(key_serializer="json", value_serializer="json"),
    }
    seen = app.Table("seen-events", default=None, **table_options)
    # Distinct events counted per partition, type and minute: exact like the
    # funnel counters, so a batch recompute can check the stream event by event.
    events_per_minute = app.Table("events-per-minute", default=int, **table_options)
    journeys_table = app.Table("journeys", default=None, **table_options)
    counters_table = app.Table("funnel-counters", default=int, **table_options)
    marks_table = app.Table("watermarks", default=None, **table_options)
    funnels = load_funnels(settings.funnels or None)
    by_name = {f.name: f for f in funnels}
    engines: dict[int, Engine] = {}

    # With the memory store the engines hold the journeys; the table keeps only
    # what a recovery brought back until its engine is loaded (a journey held
    # twice was a third of a worker's memory). Every rebalance replays the
    # changelogs from the start (forget_uncommitted_state), so nothing is lost.
    memory_store = settings.store.startswith("memory")

    def engine_for(p: int) -> Engine:
        """The partition's engine, loaded from its tables after each (re)assignment."""
        engine = engines.get(p)
        if engine is None:
            engine = Engine(
                funnels,
                bucket=settings.bucket,
                lateness=settings.lateness,
                retention=settings.retention,
            )
            restored, loaded_keys = [], []
            for key, value in list(journeys_table.data.items()):
                part, funnel_name, entity = state.parse_key(key)
                if part == p and value is not None:
                    restored.append((funnel_name, entity, state.load_journey(value)))
                    loaded_keys.append(key)
            if memory_store:
                drop_keys(journeys_table, loaded_keys)
            counts = []
            for key, value in list(counters_table.data.items()):
                part, *rest = state.parse_key(key)
                if part == p and value:
                    counts.append((tuple(rest), value))
            mark = marks_table.data.get(str(p))
            engine.restore(restored, counts, mark if mark is not None else float("-inf"))
            engines[p] = engine
            log.info(
                "partition engine loaded",
                extra={
                    "partition": p,
                    "journeys": len(restored),
                    "counters": len(counts),
                    "next_offset": marks_table.data.get(f"{p}|next"),
                    "rebalancing": app.rebalancing,
                    "in_recovery": app.tables.recovery.in_recovery,
                    "changelogs": sorted(
                        f"{tp.topic.rsplit('-', 2)[-2]}:{tp.partition}"
                        f"@{app.tables.recovery.active_highwaters.get(tp)}"
                        for tp in app.assignor.assigned_actives()
                        if tp.topic.endswith("-changelog") and tp.partition == p
                    ),
                },
            )
        return engine

    @app.on_partitions_revoked.connect
    async def commit_on_revoke(sender, revoked, **kwargs):  # noqa: ANN001
        """Commit what was processed before the rebalance moves the read positions.

        Faust only flushes here; the open transactions of partitions it keeps
        stay open while the consumer rewinds to the last committed offsets, so
        events were read twice against state that already held them. Committing
        first makes the rewind a no-op. Engines reload from the tables after.
        """
        new_generation()  # batches still running stop writing (eos.check_not_revoked)
        if app.consumer.assignment():
            try:
                await app.consumer.commit()
            except Exception:  # noqa: BLE001 - the rebalance must go on; state stays consistent
                log.warning("commit on revoke failed", exc_info=True)
        had_engines = bool(engines)
        engines.clear()
        source_next.clear()
        if memory_store:
            forget_uncommitted_state(app, had_engines)

    # Next input offset per source partition for normalise, valid within one
    # assignment; after a rebalance it restarts from the group's committed offset.
    source_next: dict[TP, int] = {}

    @app.on_partitions_assigned.connect
    async def reload_on_assign(sender, assigned, **kwargs):  # noqa: ANN001
        engines.clear()  # rebuilt from the recovered tables on first use
        source_next.clear()

    def ready() -> bool:
        """Joined the group, tables recovered, no rebalance under way: engines may be built.

        Before its first assignment a worker is neither rebalancing nor recovering,
        yet owns nothing: it is not ready until its first recovery completed.
        """
        recovery = app.tables.recovery
        return recovery.completed.is_set() and not app.rebalancing and not recovery.in_recovery

    def owned_sums(funnel: str, start: float, end: float, view: str = "period") -> Counter:
        """Sums over this worker's partitions; ranges are whole buckets, from the one
        holding ``start`` (so a 1m window with 1m buckets never shrinks to the current one)."""
        if start != float("-inf"):
            start = start // settings.bucket * settings.bucket
        sums: Counter = Counter()
        for p in owned_partitions():
            for key, n in engine_for(p).sums(funnel, start, end, view).items():
                sums[key] += n
        return sums

    newest_event: dict[str, float] = {}
    metric_windows = settings.metric_window_seconds

    def funnel_state() -> dict | None:
        if not ready():
            return None
        return {
            "funnels": funnels,
            "sums": owned_sums,
            "newest": dict(newest_event),
            "windows": metric_windows,
        }

    def consumer_state() -> dict:
        consumer, monitor = app.consumer, app.monitor
        lag = {}
        for tp in app.assignor.assigned_actives():
            if tp.topic.endswith("-changelog"):
                continue  # read only during recovery; its lag means nothing after
            try:
                end = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - not (or no longer) assigned in the client
                continue
            if end is not None:
                lag[(tp.topic, tp.partition)] = end - monitor.tp_committed_offsets.get(tp, 0)
        return {
            "lag": lag,
            "commit_latency": list(monitor.commit_latency),
            "rebalances": app.rebalancing_count,
        }

    FUNNEL_STATE.source = funnel_state
    FUNNEL_STATE.consumer = consumer_state

    reject_log = RejectLog(log)
    last_purge = [time.monotonic()]

    def owned_partitions() -> set[int]:
        return {
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic == settings.events_topic
        }

    async def normalise_batch(stream: faust.StreamT, batch: list, enrich: Callable | None) -> None:
        """Validate a batch of input messages; rejects to the dead-letter topic, valid
        events (attributed by ``enrich`` where given) re-keyed to the events topic."""
        now = time.time()
        out = []
        messages, next_offsets, holes = await continuous(batch, source_next.get)
        for msg in messages:
            raw = msg.value if msg.value is not None else b""
            try:
                ev = decode(raw, topic_type[msg.topic], now)
            except Rejection as rejection:
                REJECTED.labels(topic=msg.topic, reason=rejection.reason).inc()
                reject_log.rejected(msg.topic, msg.partition, msg.offset, rejection)
                headers = dead_letter_headers(rejection, msg.topic, msg.partition, msg.offset)
                out.append((msg.tp, settings.dead_letter_topic, msg.key, raw, headers))
                continue
            if enrich is not None:
                raw = await enrich(ev, raw, msg)
            key = entity_of(ev).encode()
            headers = [
                (SOURCE_HEADER, msg.topic.encode()),
                ("src_partition", str(msg.partition).encode()),
                ("src_offset", str(msg.offset).encode()),
            ]
            out.append((msg.tp, settings.events_topic, key, raw, headers))
        async with commits_held(app):
            for source, topic, key, value, headers in out:
                await send_in_transaction(app, source, topic, key, value, headers)
            await mark_handled(holes)
            await ack_all(stream, batch)
        source_next.update(next_offsets)  # committed with this batch's transaction
        if trace:
            trace_batch("normalise", batch)

    async def unless_revoked(agent: str, batch: list, handle: Coroutine) -> None:
        """Run one batch; drop it if its partitions are revoked while it writes.

        Its offsets were not committed, so it is read again by the partitions'
        next owner. Any other failure propagates (and stops the worker).
        """
        begin_batch()
        try:
            await handle
        except (Revoked, IllegalOperation, ProducerFenced) as exc:
            if not isinstance(exc, Revoked) and not (batch_is_stale() or app.rebalancing):
                raise
            log.warning(
                "batch dropped: partitions revoked while it was written; it is read again",
                extra={"agent": agent, "events": len(batch), "error": repr(exc)},
            )

    @app.agent(shop_sources)
    @stop_worker_on_error(app, "normalise")
    async def normalise(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            await unless_revoked("normalise", batch, normalise_batch(stream, batch, None))

    tracking = load_tracking(settings.tracking or None)
    store = TrackingStore(
        settings.redis_url, tracking, prefix=settings.redis_prefix, keep=settings.retention
    )
    pool_synced: list[bool] = []  # non-empty once the pool matches the configuration

    async def enrich(ev: Any, raw: bytes, msg: Any) -> bytes:
        """Attribute a call or deal from Redis; while Redis is down, wait and retry:
        the CRM events are held back (the shop topics go on), never guessed."""
        delay, since = 0.5, None
        while True:
            try:
                raw, result = await attribute(store, ev, raw)
            except RedisError as exc:
                if since is None:
                    since = time.monotonic()
                    REDIS_UP.set(0)
                    log.warning(
                        "Redis unavailable: holding call and deal events until it is back",
                        extra={
                            "redis": redacted_url(settings.redis_url),
                            "error": str(exc),
                            "tp": str(msg.tp),
                            "offset": msg.offset,
                        },
                    )
                HELD.set(1)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if since is not None:
                REDIS_UP.set(1)
                HELD.set(0)
                log.warning(
                    "Redis is back: attributing held events",
                    extra={"held_s": round(time.monotonic() - since, 1)},
                )
            ATTRIBUTED.labels(type=ev.type, result=result).inc()
            return raw

    @app.agent(crm_sources)
    @stop_worker_on_error(app, "attribute")
    async def attribute_crm(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            await unless_revoked("attribute", batch, normalise_batch(stream, batch, enrich))

    @app.task
    async def sync_number_pool() -> None:
        try:
            await store.sync_pool()
            pool_synced.append(True)
            REDIS_UP.set(1)
        except RedisError as exc:  # then the first lease request syncs it
            REDIS_UP.set(0)
            log.warning("Redis unavailable at start", extra={"error": str(exc)})

    @app.agent(events_topic)
    @stop_worker_on_error(app, "count")
    async def count(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            await unless_revoked("count", batch, count_batch(stream, batch))

    async def count_batch(stream: faust.StreamT, batch: list) -> None:
        horizon = settings.dedup_horizon
        first_seen: dict[int, dict[str, float]] = defaultdict(dict)
        minutes: dict[int, Counter[str]] = defaultdict(Counter)
        tps: dict[int, TP] = {}
        counted: Counter[tuple[str, str]] = Counter()
        duplicates: Counter[str] = Counter()
        late_letters = []
        messages, next_offsets, holes = await continuous(
            batch, lambda tp: marks_table.data.get(f"{tp.partition}|next")
        )
        for msg in messages:
            p = msg.partition
            tps[p] = msg.tp
            source = header(msg, SOURCE_HEADER) or "unknown"
            try:
                ev = decode(msg.value, now=float("inf"))
            except Rejection as rejection:  # validated upstream; never expected
                REJECTED.labels(topic=source, reason=rejection.reason).inc()
                reject_log.rejected(msg.topic, p, msg.offset, rejection)
                continue
            key = f"{p}|{ev.event_id}"
            prior = first_seen[p].get(key)
            if prior is None:
                prior = seen.data.get(key)
            if dedup.is_duplicate(prior, ev.ts, horizon):
                duplicates[source] += 1
                continue
            first_seen[p][key] = ev.ts
            engine = engine_for(p)
            if not engine.process(ev):
                for name in engine.relevant_funnels(ev):
                    LATE_TOTAL.labels(funnel=name).inc()
                late = Rejection(
                    "late",
                    f"field `occurred_at`: {ev.occurred_at.isoformat()} is more than "
                    f"{settings.lateness:g}s behind the newest event of its partition",
                    "occurred_at",
                )
                late_letters.append((msg.tp, msg.key, msg.value, late_headers(msg, late)))
                continue
            counted[(source, ev.type)] += 1
            newest_event[source] = max(newest_event.get(source, ev.ts), ev.ts)
            minutes[p][f"{p}|{ev.type}|{minute_bucket(ev.ts)}"] += 1
        async with commits_held(app):
            for p, ids in first_seen.items():
                await write_state(app, seen, tps[p], ids)
            for p, counts in minutes.items():
                data = events_per_minute.data
                updates = {k: data.get(k, 0) + n for k, n in counts.items()}
                await write_state(app, events_per_minute, tps[p], updates)
            for p in tps:
                await persist_engine(p, tps[p])
            for tp, offset in next_offsets.items():
                key = f"{tp.partition}|next"
                if marks_table.data.get(key) != offset:
                    await write_state(app, marks_table, tp, {key: offset})
            for source_tp, key, value, headers in late_letters:
                await send_in_transaction(
                    app, source_tp, settings.dead_letter_topic, key, value, headers
                )
            if time.monotonic() - last_purge[0] > PURGE_EVERY_S:
                last_purge[0] = time.monotonic()
                await purge_seen(horizon)
            await mark_handled(holes)
            await ack_all(stream, batch)
        if trace:
            trace_batch("count", batch, dups=sum(duplicates.values()))
        for (source, kind), n in counted.items():
            EVENTS.labels(topic=source, type=kind).inc(n)
        for source, n in duplicates.items():
            DUPLICATES.labels(topic=source).inc(n)

    # A side consumer, opened on the first hole; it lives as long as the process.
    refetcher = Refetcher(client_options(settings), group_id=settings.app_id)

    async def continuous(
        batch: list, known: Callable[[TP], int | None]
    ) -> tuple[list, dict[TP, int], list[tuple[TP, int, int]]]:
        """The batch's messages to apply: each offset once, holes read back.

        ``known(tp)`` is the next offset expected for a partition, or None where
        there is no history (then: where the consumer group resumes). Also
        returns the holes, for ``mark_handled`` once the batch is written.
        """
        by_tp: dict[TP, list] = defaultdict(list)
        for event in batch:
            by_tp[event.message.tp].append(event.message)
        out, next_offsets, holes = [], {}, []
        for tp, msgs in by_tp.items():
            expected = known(tp)
            if expected is None:
                expected = await refetcher.start(tp.topic, tp.partition)
            plan = continuity.plan([m.offset for m in msgs], expected)
            out += [m for m in msgs if m.offset in plan.fresh]
            if plan.redelivered:
                REDELIVERED.labels(topic=tp.topic).inc(len(plan.redelivered))
            for first, last in plan.holes:
                records = await refetcher.read(tp.topic, tp.partition, first, last)
                out += [refetched_message(record) for record in records]
                holes.append((tp, first, last))
                if records:
                    REFETCHED.labels(topic=tp.topic).inc(len(records))
                    log.warning(
                        "events re-read that Faust did not deliver",
                        extra={"tp": str(tp), "from": first, "to": last, "count": len(records)},
                    )
            if plan.next_expected is not None:
                next_offsets[tp] = plan.next_expected
        # Fresh messages could repeat within a batch: keep one of each offset.
        unique = {(m.topic, m.partition, m.offset): m for m in out}
        ordered = sorted(unique.values(), key=lambda m: (m.topic, m.partition, m.offset))
        return ordered, next_offsets, holes

    async def mark_handled(holes: list[tuple[TP, int, int]]) -> None:
        """Let Faust's committed offsets move past holes whose records this batch applied.

        Called with commits held, after the batch's writes: a commit can then only
        carry the hole together with the records read back from it.
        """
        for tp, first, last in holes:
            await app.consumer._add_gap(tp, first, last)

    async def persist_engine(p: int, tp: TP) -> None:
        engine = engine_for(p)
        engine.expire()
        changed_journeys, changed_counters = engine.take_changes()
        await write_state(
            app,
            journeys_table,
            tp,
            {
                state.journey_key(p, f, e): None if j is None else state.dump_journey(j)
                for (f, e), j in changed_journeys.items()
            },
            keep=not memory_store,
        )
        await write_state(
            app,
            counters_table,
            tp,
            {state.counter_key(p, k): (n or None) for k, n in changed_counters.items()},
        )
        if marks_table.data.get(str(p)) != engine.watermark and engine.watermark > 0:
            await write_state(app, marks_table, tp, {str(p): engine.watermark})

    async def purge_seen(horizon: float) -> None:
        """Forget ids older than the horizon behind their partition's newest event."""
        # The engine's watermark is the partition's newest event time (restored from
        # the watermarks table after a rebalance); -inf (no event yet) expires nothing.
        marks = {p: engine_for(p).watermark for p in owned_partitions()}
        old = dedup.expired(list(seen.data.items()), marks, horizon)
        for p, keys in old.items():
            tp = TP(settings.events_topic, p)
            await write_state(app, seen, tp, dict.fromkeys(keys))
        if old:
            log.info("dedup ids expired", extra={"count": sum(map(len, old.values()))})

    @app.page("/")
    async def index(web, request):  # noqa: ANN001 - Faust view signature
        body, _ = page.asset("index.html")
        return web.html(body.decode())

    @app.page("/metrics")
    async def metrics(web, request):  # noqa: ANN001
        body, content_type = exposition()
        return web.bytes(body, content_type=content_type.split(";")[0])

    @app.page("/health/live")
    async def live(web, request):  # noqa: ANN001
        return web.json({"status": "live"})

    @app.page("/health/ready")
    async def readiness(web, request):  # noqa: ANN001
        ok = ready()
        return web.json({"ready": ok}, status=200 if ok else 503)

    @app.page("/api/funnels")
    async def list_funnels(web, request):  # noqa: ANN001
        return web.json(
            {
                "funnels": [
                    {
                        "name": f.name,
                        "mode": f.mode,
                        "steps": f.step_names,
                        "breakdowns": list(f.breakdowns),
                        "window": f.window,
                    }
                    for f in funnels
                ],
                "windows": list(api.WINDOWS),
            }
        )

    def unknown_funnel(name: str) -> dict:
        return {"error": f"unknown funnel {name!r}", "parameter": "name", "known": sorted(by_name)}

    async def funnel_doc(funnel, params: dict[str, str]) -> tuple[dict, int]:  # noqa: ANN001
        """The section-5 document for a query, or an error body; with its HTTP status.

        ``flags=1`` adds each step's baseline conversion and a ``flagged`` mark
        (stream/core/summary.py ``flag_drops``), as the live page shows them.
        """
        try:
            query = api.parse_query(params, funnel, time.time())
        except api.BadQuery as exc:
            return {"error": str(exc), "parameter": exc.parameter}, 400
        if not ready():
            return {"error": "worker catching up: rebalancing or recovering tables; retry"}, 503
        sums, missing = await cluster_sums(funnel.name, query.start, query.end, query.view)
        if missing:
            return {
                "error": f"partitions {missing} are not answered by any worker yet "
                "(rebalancing or a worker is down); retry",
            }, 503
        now = time.time()
        spend, missing = await money.spend_sums(
            ledger_reader("_spend"), query.start, min(query.end, now)
        )
        if missing:
            return {"error": f"partitions {missing} are not answered yet; retry"}, 503
        args = (query.window, query.start_text, query.end_text, query.view, query.breakdown)
        doc = summarise(funnel, dict(sums), *args, spend)
        if params.get("flags") in ("1", "true"):
            start, end = api.baseline_range(query, settings.alert_long_window_seconds)
            base, missing = await cluster_sums(funnel.name, start, end, query.view)
            if missing:
                return {"error": f"partitions {missing} are not answered yet; retry"}, 503
            baseline = summarise(funnel, dict(base), *args)
            flag_drops(doc, baseline, settings.alert_drop, settings.alert_min_volume)
        if funnel.mode == "pipeline" and params.get("forecast") in ("1", "true"):
            cohort, missing = await cluster_sums(funnel.name, now - funnel.window, now, "cohort")
            days = money.FORECAST_DAYS * 86400
            recent, missing2 = await cluster_sums(funnel.name, now - days, now, "period")
            if missing or missing2:
                return {"error": "partitions not answered yet; retry"}, 503
            window_name = f"{funnel.window // 86400}d"
            doc["forecast"] = money.forecast(funnel, dict(cohort), dict(recent), window_name)
        return doc, 200

    def ledger_reader(name: str) -> Callable:
        async def read(start: float, end: float) -> tuple[Counter, list[int]]:
            return await cluster_sums(name, start, end, "period")

        return read

    def authorised(request: Any) -> bool:
        if not settings.api_token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {settings.api_token}".encode())

    @app.page("/api/tracking-numbers")
    class TrackingNumbers(View):
        """POST {visitor_id, session_id, channel, source, campaign, keyword}: a
        tracking number for the visitor's page (DESIGN.md section 6)."""

        async def post(self, request: Any) -> Any:
            if not authorised(request):
                return self.json(
                    {"error": "missing or wrong bearer token (FUNNEL_API_TOKEN)"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            raw = await request.content.read(MAX_BODY + 1)
            if len(raw) > MAX_BODY:
                return self.json({"error": f"body over {MAX_BODY} bytes"}, status=413)
            try:
                lease = lease_request(orjson.loads(raw or b"null"))
            except (ValueError, orjson.JSONDecodeError) as exc:
                return self.json({"error": f"tracking number request: {exc}"}, status=400)
            try:
                if not pool_synced:
                    await store.sync_pool()
                    pool_synced.append(True)
                got = await store.lease(lease, time.time())
            except RedisError as exc:
                REDIS_UP.set(0)
                return self.json(
                    {"error": f"call tracking store (Redis) unavailable: {exc}; retry"},
                    status=503,
                    headers={"Retry-After": "1"},
                )
            REDIS_UP.set(1)
            LEASES.labels(kind=got["kind"]).inc()
            if got["kind"] == "static":
                # The page sends any text as source: only configured ones become labels.
                source = lease.get("source") or "unknown"
                known = {t.get("source") for t in tracking.static.values()}
                POOL_EXHAUSTED.labels(source=source if source in known else "other").inc()
            return self.json(got)

    @app.page("/api/managers")
    async def managers(web, request):  # noqa: ANN001
        """Per manager: calls, missed inbound, talk time, lead response, deals,
        closing rate and revenue (``funnel``: a pipeline; default the first)."""
        params = dict(request.query)
        pipelines = [f for f in funnels if f.mode == "pipeline" and "manager" in f.breakdowns]
        try:
            funnel = api.pick_funnel(params, pipelines, "a pipeline broken down by manager")
            query = api.parse_query(params, funnel, time.time())
        except api.BadQuery as exc:
            return web.json({"error": str(exc), "parameter": exc.parameter}, status=400)
        if not ready():
            return answer(web, {"error": "worker catching up; retry"}, 503)
        calls, missing = await cluster_sums("_calls", query.start, query.end, "period")
        deals, missing2 = await cluster_sums(funnel.name, query.start, query.end, "period")
        if missing or missing2:
            return answer(web, {"error": "partitions not answered yet; retry"}, 503)
        rows = money.manager_rows(dict(calls), dict(deals), funnel)
        return web.json({"funnel": funnel.name, "window": query.window, "managers": rows})

    def answer(web, body: dict, status: int):  # noqa: ANN001, ANN202
        headers = {"Retry-After": "1"} if status == 503 else None
        return web.json(body, status=status, headers=headers)

    @app.page("/api/funnels/{name}")
    async def funnel_report(web, request, name):  # noqa: ANN001
        funnel = by_name.get(name)
        if funnel is None:
            return web.json(unknown_funnel(name), status=404)
        return answer(web, *await funnel_doc(funnel, dict(request.query)))

    @app.page("/api/funnels/{name}/chart.svg")
    async def funnel_chart(web, request, name):  # noqa: ANN001
        """The funnel as an SVG picture (the page's download); ``channel=V`` for one channel."""
        funnel = by_name.get(name)
        if funnel is None:
            return web.json(unknown_funnel(name), status=404)
        params = dict(request.query)
        channel = params.pop("channel", "")
        if channel:
            params["breakdown"] = "channel"
        doc, status = await funnel_doc(funnel, params)
        if status != 200:
            return answer(web, doc, status)
        title = None
        if channel:
            figures = doc.get("breakdown", {}).get("channel", {}).get(channel)
            if figures is None:
                body = {"error": f"no channel {channel!r} in this window", "parameter": "channel"}
                return web.json(body, status=404)
            doc = {**doc, **figures}
            title = f"Funnel {name}, channel {channel} — last {doc['window']}, {doc['view']} view"
        return web.bytes(funnel_svg(doc, title).encode(), content_type="image/svg+xml")

    @app.page("/api/funnels/{name}/trend")
    async def funnel_trend(web, request, name):  # noqa: ANN001
        """Overall conversion per interval over the last hours (the page's trend line)."""
        funnel = by_name.get(name)
        if funnel is None:
            return web.json(unknown_funnel(name), status=404)
        params = dict(request.query)
        try:
            view = api.parse_view(params)
            ranges = api.trend_ranges(params, time.time(), settings.bucket)
        except api.BadQuery as exc:
            return web.json({"error": str(exc), "parameter": exc.parameter}, status=400)
        if not ready():
            return answer(web, {"error": "worker catching up; retry"}, 503)
        last = len(funnel.step_names) - 1
        metric = "reached" if view == "period" else "cohort"
        points = []
        results = await asyncio.gather(*(cluster_sums(name, a, b, view) for a, b in ranges))
        for (start, end), (sums, missing) in zip(ranges, results, strict=True):
            if missing:
                return answer(web, {"error": f"partitions {missing} not answered; retry"}, 503)
            entered = sums.get((metric, 0, "", ""), 0)
            completed = sums.get((metric, last, "", ""), 0)
            points.append(
                {
                    "from": api.iso(start),
                    "to": api.iso(end),
                    "entered": entered,
                    "completed": completed,
                    "overall_conversion": ratio(completed, entered),
                }
            )
        return web.json({"funnel": name, "view": view, "points": points})

    @app.page("/static/{name}")
    async def static(web, request, name):  # noqa: ANN001
        found = page.asset(name)
        if found is None:
            return web.json({"error": f"no static file {name!r}"}, status=404)
        body, content_type = found
        return web.bytes(body, content_type=content_type)

    counters_topic = counters_table.changelog_topic.get_topic_name()

    async def peer_answers(path: str, params: dict[str, str]) -> tuple[list[list[int]], list]:
        """Ask every other worker ``path``; the partitions each answered for (own
        first) and their JSON answers (stream/api/fanout.py)."""
        metadata = app.router.table_metadata(counters_table.name)
        peers = cluster.peers_of(metadata, counters_topic, str(app.conf.canonical_url))

        async def ask(url: str) -> dict:
            async with app.http_client.get(
                f"{url}{path}", params=params, timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT)
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{url} answered {resp.status}")
                return await resp.json()

        answered, answers = [sorted(owned_partitions())], []
        results = await asyncio.gather(*(ask(u) for u in peers), return_exceptions=True)
        for url, result in zip(peers, results, strict=True):
            if isinstance(result, BaseException):
                log.info("peer did not answer", extra={"peer": url, "error": str(result)})
                continue
            answered.append(result["partitions"])
            answers.append(result)
        return answered, answers

    async def cluster_sums(
        name: str, start: float, end: float, view: str
    ) -> tuple[Counter, list[int]]:
        """Sums over all partitions: this worker's own plus every peer's (stream/api/fanout.py)."""
        sums = owned_sums(name, start, end, view)
        params = {"start": repr(start), "end": repr(end), "view": view}
        answered, answers = await peer_answers(f"/api/partials/{name}", params)
        for answer_ in answers:
            sums.update(cluster.decode_sums(answer_["sums"]))
        return sums, cluster.missing_partitions(settings.partitions, answered)

    def owned_carts(funnel: Any, since: float, limit: int) -> list[dict]:
        step = money.cart_step(funnel)
        carts = []
        for p in owned_partitions():
            carts += engine_for(p).abandoned_carts(funnel, step, since, limit)
        return carts

    @app.page("/api/carts/abandoned")
    async def abandoned_carts(web, request):  # noqa: ANN001
        """Carts added in the last ``hours`` and not bought, newest first: for remarketing."""
        params = dict(request.query)
        shops = [f for f in funnels if f.mode == "sequence" and money.cart_step(f) is not None]
        try:
            funnel = api.pick_funnel(params, shops, "a sequence funnel with a cart add step")
            hours, limit = api.parse_cart_query(params)
        except api.BadQuery as exc:
            return web.json({"error": str(exc), "parameter": exc.parameter}, status=400)
        if not ready():
            return answer(web, {"error": "worker catching up; retry"}, 503)
        since = time.time() - hours * 3600
        carts = owned_carts(funnel, since, limit)
        q = {"funnel": funnel.name, "since": repr(since), "limit": str(limit)}
        answered, answers = await peer_answers("/api/partials-carts", q)
        missing = cluster.missing_partitions(settings.partitions, answered)
        if missing:
            return answer(web, {"error": f"partitions {missing} not answered yet; retry"}, 503)
        for answer_ in answers:
            carts += answer_["carts"]
        carts.sort(key=lambda c: (-c["added_at"], c["entity"]))
        for cart in carts[:limit]:
            cart["added_at"] = api.iso(cart["added_at"])
            cart["last_event_at"] = api.iso(cart["last_event_at"])
        body = {"funnel": funnel.name, "hours": hours, "entity": funnel.entity}
        return web.json({**body, "count": len(carts), "carts": carts[:limit]})

    @app.page("/api/partials-carts")
    async def partial_carts(web, request):  # noqa: ANN001
        """Abandoned carts of this worker's own partitions, for a peer's query."""
        funnel = by_name.get(request.query.get("funnel", ""))
        try:
            since = float(request.query.get("since", "")[: api.MAX_PARAM])
            limit = int(request.query.get("limit", "100")[: api.MAX_PARAM])
        except ValueError:
            return web.json(
                {"error": "since/limit must be numbers", "parameter": "since"}, status=400
            )
        if funnel is None or money.cart_step(funnel) is None:
            return web.json({"error": "unknown funnel", "parameter": "funnel"}, status=404)
        if not ready():
            return web.json({"error": "worker catching up"}, status=503)
        carts = owned_carts(funnel, since, min(limit, api.MAX_CARTS))
        return web.json({"partitions": sorted(owned_partitions()), "carts": carts})

    @app.page("/api/partials/{name}")
    async def partials(web, request, name):  # noqa: ANN001
        """Sums of this worker's own partitions, for a peer answering a query."""
        if name not in by_name and name not in LEDGER_NAMES:
            return web.json({"error": f"unknown funnel {name!r}", "parameter": "name"}, status=404)
        try:
            start = float(request.query.get("start", "-inf")[: api.MAX_PARAM])
            end = float(request.query.get("end", "inf")[: api.MAX_PARAM])
        except ValueError:
            return web.json(
                {"error": "start/end must be numbers", "parameter": "start"}, status=400
            )
        try:
            view = api.parse_view(dict(request.query))
        except api.BadQuery as exc:
            return web.json({"error": str(exc), "parameter": exc.parameter}, status=400)
        if not ready():
            return web.json({"error": "worker catching up"}, status=503)
        return web.json(
            {
                "partitions": sorted(owned_partitions()),
                "sums": cluster.encode_sums(owned_sums(name, start, end, view)),
            }
        )

    def owned_events_per_minute() -> dict[str, dict[str, int]]:
        owned = owned_partitions()
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for key, value in list(events_per_minute.data.items()):
            partition, kind, minute = key.split("|", 2)
            if int(partition) in owned:
                out[kind][minute] = out[kind].get(minute, 0) + value
        return {kind: dict(sorted(m.items())) for kind, m in sorted(out.items())}

    @app.page("/api/events-per-minute")
    async def events_counted(web, request):  # noqa: ANN001
        """Distinct events counted per type and minute, from the partitions this
        worker owns (sum the workers for the whole group): the event-level check
        of exactness that the chaos suite compares with its input."""
        return web.json(owned_events_per_minute())

    @app.page("/api/visits-per-minute")
    async def per_minute(web, request):  # noqa: ANN001
        """Unique visits per minute from the partitions this worker owns (skeleton)."""
        return web.json(owned_events_per_minute().get("visit", {}))

    return app


def forget_uncommitted_state(app: faust.App, had_engines: bool = True) -> None:
    """Drop every in-memory table and make the coming recovery read each changelog
    of the new assignment from its start (read_committed: committed state only).

    Under load a rebalance can leave a transaction of a partition this worker
    keeps open (Faust logs "Invalid state transition IN_TRANSACTION ->
    IN_TRANSACTION", faust-streaming issue 323); it is aborted, but its writes
    stay in the in-memory tables, and Faust's recovery resumes a kept
    partition from where the memory left off. Memory and committed state then
    diverge: the chaos suite's join/leave scenario lost 238 to 3,784 of 20,004
    events that way. Costs a full changelog replay per rebalance. A worker with
    no engine and all tables empty (starting up) has nothing to forget and is
    left alone; engines count, as they hold journeys the tables do not.
    """
    if not had_engines and not any(len(table.data) for table in app.tables.values()):
        return
    for table in app.tables.values():
        store = table.data
        store.data.clear()
        store._key_partition.clear()
    recovery = app.tables.recovery
    recovery.active_offsets.clear()
    recovery.standby_offsets.clear()


def run_worker(settings: Settings, web_port: int | None = None) -> int:
    from faust.worker import Worker

    from stream.ops.stack import port_open

    port = web_port or settings.web_port
    if port_open(settings.host, port):
        print(
            f"funnel worker: web port {settings.host}:{port} is already in use; "
            "stop the other worker or set FUNNEL_WEB_PORT",
            file=sys.stderr,
        )
        return 1
    app = create_app(settings, web_port)
    # Every topic the group reads must exist before its first assignment: Faust's
    # assignor skips a missing topic, so workers starting together on a new app id
    # were assigned none of funnel.events or of a changelog (no answers, tables
    # not recovered after a later rebalance) until a metadata refresh, minutes later.
    changelogs = [t.changelog_topic.get_topic_name() for t in app.tables.values()]
    compact = {"cleanup.policy": "compact"}
    asyncio.run(
        create_topics(
            settings,
            [settings.events_topic, settings.dead_letter_topic, *changelogs],
            configs=dict.fromkeys(changelogs, compact),
        )
    )
    worker = Worker(
        app,
        loglevel=settings.log_level,
        logging_config=logs.logging_config(settings.log_level),
        quiet=True,
        redirect_stdouts=False,
    )
    log.info("worker starting", extra={"web_port": port, "broker": settings.kafka_bootstrap})
    worker.execute_from_commandline()
    return 0

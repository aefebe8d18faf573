"""The Faust worker: thin adapters from Kafka topics to the plain-Python logic.

Two agents, each processing batches with commits held off (stream/eos.py):

- ``normalise`` reads the five input topics, decodes and validates every
  message (stream/events.py), sends rejects with their original bytes to the
  dead-letter topic, and re-keys valid events by entity into the internal
  events topic, all inside the source partition's transaction;
- ``count`` reads the events topic, drops duplicate event ids (table
  ``seen-events``) and counts. For now it keeps unique visits per event-time
  minute (the walking skeleton); the funnel engine plugs in here.

Every table key starts with the events-topic partition it belongs to
(DESIGN.md section 7), and readers only look at partitions this worker
actively owns.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import TP

from stream import dedup, logs
from stream.config import Settings
from stream.eos import (
    ack_all,
    commits_held,
    fix_read_offset_race,
    fix_recovery_highwaters,
    send_in_transaction,
    write_state,
)
from stream.events import Rejection, decode, entity_of
from stream.logs import RejectLog
from stream.metrics import DUPLICATES, EVENTS, REJECTED, exposition

log = logging.getLogger("stream.worker")

INDEX_HTML = """<!doctype html><meta charset="utf-8"><title>funnel stream</title>
<h1>funnel stream worker</h1>
<ul><li><a href="/metrics">/metrics</a></li>
<li><a href="/api/visits-per-minute">/api/visits-per-minute</a></li>
<li><a href="/health/ready">/health/ready</a></li></ul>"""

BATCH_SIZE = 1000
BATCH_WITHIN = 0.2
PURGE_EVERY_S = 60.0
SOURCE_HEADER = "src"


def minute_bucket(ts: float) -> str:
    """Event-time minute (UTC, ISO) of epoch seconds."""
    return datetime.fromtimestamp(int(ts) // 60 * 60, tz=UTC).isoformat()


def dead_letter_headers(msg: Any, rejection: Rejection) -> list[tuple[str, bytes]]:
    return [
        ("reason", rejection.reason.encode()),
        ("message", rejection.message.encode()[:1024]),
        ("topic", msg.topic.encode()),
        ("partition", str(msg.partition).encode()),
        ("offset", str(msg.offset).encode()),
    ]


def header(msg: Any, name: str) -> str | None:
    for key, value in msg.headers or ():
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


def create_app(settings: Settings, web_port: int | None = None) -> faust.App:
    fix_recovery_highwaters()
    fix_read_offset_race()
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.store,
        processing_guarantee="exactly_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        broker_commit_interval=settings.commit_interval,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(1.0, settings.session_timeout / 10),
        web_enabled=True,
        web_bind=settings.host,
        web_port=web_port or settings.web_port,
        web_host=settings.host,
        value_serializer="raw",
        key_serializer="raw",
    )
    topic_type = {topic: kind for kind, topic in settings.topics.items()}
    sources = app.topic(*settings.topics.values(), value_type=bytes, key_type=bytes)
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
    visits_per_minute = app.Table("visits-per-minute", default=int, **table_options)
    reject_log = RejectLog(log)
    watermarks: dict[int, float] = {}
    last_purge = [time.monotonic()]

    def owned_partitions() -> set[int]:
        return {
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic == settings.events_topic
        }

    @app.agent(sources)
    async def normalise(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            now = time.time()
            out = []
            for event in batch:
                msg = event.message
                raw = msg.value if msg.value is not None else b""
                try:
                    ev = decode(raw, topic_type[msg.topic], now)
                except Rejection as rejection:
                    REJECTED.labels(topic=msg.topic, reason=rejection.reason).inc()
                    reject_log.rejected(msg.topic, msg.partition, msg.offset, rejection)
                    headers = dead_letter_headers(msg, rejection)
                    out.append((msg.tp, settings.dead_letter_topic, msg.key, raw, headers))
                    continue
                key = entity_of(ev).encode()
                headers = [(SOURCE_HEADER, msg.topic.encode())]
                out.append((msg.tp, settings.events_topic, key, raw, headers))
            async with commits_held(app):
                for source, topic, key, value, headers in out:
                    await send_in_transaction(app, source, topic, key, value, headers)
                await ack_all(stream, batch)

    @app.agent(events_topic)
    async def count(stream: faust.StreamT) -> None:
        horizon = settings.dedup_horizon
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            first_seen: dict[int, dict[str, float]] = defaultdict(dict)
            minutes: dict[int, Counter[str]] = defaultdict(Counter)
            tps: dict[int, TP] = {}
            counted: Counter[tuple[str, str]] = Counter()
            duplicates: Counter[str] = Counter()
            for event in batch:
                msg = event.message
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
                watermarks[p] = max(watermarks.get(p, ev.ts), ev.ts)
                counted[(source, ev.type)] += 1
                if ev.type == "visit":
                    minutes[p][f"{p}|{minute_bucket(ev.ts)}"] += 1
            async with commits_held(app):
                for p, ids in first_seen.items():
                    await write_state(app, seen, tps[p], ids)
                for p, counts in minutes.items():
                    data = visits_per_minute.data
                    updates = {k: data.get(k, 0) + n for k, n in counts.items()}
                    await write_state(app, visits_per_minute, tps[p], updates)
                if time.monotonic() - last_purge[0] > PURGE_EVERY_S:
                    last_purge[0] = time.monotonic()
                    await purge_seen(horizon)
                await ack_all(stream, batch)
            for (source, kind), n in counted.items():
                EVENTS.labels(topic=source, type=kind).inc(n)
            for source, n in duplicates.items():
                DUPLICATES.labels(topic=source).inc(n)

    async def purge_seen(horizon: float) -> None:
        """Forget ids older than the horizon behind their partition's newest event."""
        owned = owned_partitions()
        marks = {p: m for p, m in watermarks.items() if p in owned}
        old = dedup.expired(list(seen.data.items()), marks, horizon)
        for p, keys in old.items():
            tp = TP(settings.events_topic, p)
            await write_state(app, seen, tp, dict.fromkeys(keys))
        if old:
            log.info("dedup ids expired", extra={"count": sum(map(len, old.values()))})

    @app.page("/")
    async def index(web, request):  # noqa: ANN001 - Faust view signature
        return web.html(INDEX_HTML)

    @app.page("/metrics")
    async def metrics(web, request):  # noqa: ANN001
        body, content_type = exposition()
        return web.bytes(body, content_type=content_type.split(";")[0])

    @app.page("/health/live")
    async def live(web, request):  # noqa: ANN001
        return web.json({"status": "live"})

    @app.page("/health/ready")
    async def ready(web, request):  # noqa: ANN001
        ok = not app.rebalancing and not app.tables.recovery.in_recovery
        return web.json({"ready": ok}, status=200 if ok else 503)

    @app.page("/api/visits-per-minute")
    async def per_minute(web, request):  # noqa: ANN001
        """Unique visits per minute from the partitions this worker owns (skeleton)."""
        owned = owned_partitions()
        out: dict[str, int] = {}
        for key, value in list(visits_per_minute.data.items()):
            partition, minute = key.split("|", 1)
            if int(partition) in owned:
                out[minute] = out.get(minute, 0) + value
        return web.json(dict(sorted(out.items())))

    return app


def run_worker(settings: Settings, web_port: int | None = None) -> int:
    from faust.worker import Worker

    from stream.stack import port_open

    port = web_port or settings.web_port
    if port_open(settings.host, port):
        print(
            f"funnel worker: web port {settings.host}:{port} is already in use; "
            "stop the other worker or set FUNNEL_WEB_PORT",
            file=sys.stderr,
        )
        return 1
    app = create_app(settings, web_port)
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

"""The Faust worker: thin adapters from Kafka topics to the plain-Python logic.

Walking skeleton: consumes the visit topic in batches, counts visits per
event-time minute in a table keyed with the partition (DESIGN.md section 7:
a key written from several partitions is overwritten on recovery), and serves
``/metrics`` and health endpoints on the web port.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime

import faust
import orjson
from prometheus_client import Counter as PromCounter

from stream import logs
from stream.config import Settings
from stream.eos import ack_all, commits_held, write_state
from stream.metrics import EVENTS, exposition

log = logging.getLogger("stream.worker")

REJECTED = PromCounter(
    "funnel_events_rejected",
    "Input messages rejected, by source topic and reason.",
    ["topic", "reason"],
)

INDEX_HTML = """<!doctype html><meta charset="utf-8"><title>funnel stream</title>
<h1>funnel stream worker</h1>
<ul><li><a href="/metrics">/metrics</a></li>
<li><a href="/api/visits-per-minute">/api/visits-per-minute</a></li>
<li><a href="/health/ready">/health/ready</a></li></ul>"""

BATCH_SIZE = 1000
BATCH_WITHIN = 0.2


def minute_bucket(occurred_at: str) -> str:
    """Event-time minute (UTC, ISO) of an RFC 3339 timestamp."""
    ts = datetime.fromisoformat(occurred_at.replace("Z", "+00:00"))
    return datetime.fromtimestamp(int(ts.timestamp()) // 60 * 60, tz=UTC).isoformat()


def create_app(settings: Settings, web_port: int | None = None) -> faust.App:
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
    visit_topic = settings.topics["visit"]
    visits = app.topic(visit_topic, value_type=bytes, key_type=bytes)
    visits_per_minute = app.Table("visits-per-minute", default=int, partitions=settings.partitions)
    events_ok = EVENTS.labels(topic=visit_topic, type="visit")

    @app.agent(visits)
    async def count_visits(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN):
            deltas: dict[int, Counter[str]] = defaultdict(Counter)
            for event in batch:
                msg = event.message
                try:
                    data = orjson.loads(event.value)
                    minute = minute_bucket(data["occurred_at"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    REJECTED.labels(topic=msg.topic, reason="invalid").inc()
                    log.warning(
                        "rejected message",
                        extra={
                            "topic": msg.topic,
                            "partition": msg.partition,
                            "offset": msg.offset,
                            "reason": repr(exc),
                        },
                    )
                    continue
                # The partition is in the key (DESIGN.md section 7).
                deltas[msg.partition][f"{msg.partition}|{minute}"] += 1
            async with commits_held(app):
                for partition, counts in deltas.items():
                    updates = {k: visits_per_minute.data.get(k, 0) + n for k, n in counts.items()}
                    await write_state(visits_per_minute, partition, updates)
                await ack_all(stream, batch)
            for counts in deltas.values():
                events_ok.inc(sum(counts.values()))

    @app.page("/metrics")
    async def metrics(web, request):  # noqa: ANN001 - Faust view signature
        body, content_type = exposition()
        return web.bytes(body, content_type=content_type.split(";")[0])

    @app.page("/")
    async def index(web, request):  # noqa: ANN001
        return web.html(INDEX_HTML)

    @app.page("/health/live")
    async def live(web, request):  # noqa: ANN001
        return web.json({"status": "live"})

    @app.page("/health/ready")
    async def ready(web, request):  # noqa: ANN001
        recovery = app.tables.recovery
        ok = not app.rebalancing and not recovery.in_recovery
        return web.json({"ready": ok}, status=200 if ok else 503)

    @app.page("/api/visits-per-minute")
    async def per_minute(web, request):  # noqa: ANN001
        """Counts from the partitions this worker owns (skeleton only)."""
        out: dict[str, int] = {}
        for key, value in visits_per_minute.items():
            minute = key.split("|", 1)[1]
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
    log.info(
        "worker starting", extra={"web_port": app.conf.web_port, "broker": settings.kafka_bootstrap}
    )
    worker.execute_from_commandline()
    return 0

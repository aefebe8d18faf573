"""The Faust app: assembly of topics, tables, agents and routes; ``run_worker``.

Three agents, each a thin adapter over a module of its own:

- ``normalise`` (worker/normalise.py) reads the shop input topics, validates,
  dead-letters rejects and re-keys valid events by entity to the events topic;
- ``attribute_crm`` does the same for calls and deal stages, attributed from
  Redis first (worker/attribution.py), so a Redis outage holds back only them;
- ``count`` (worker/count.py) reads the events topic into the funnel engines.

Every table key starts with the events-topic partition it belongs to
(DESIGN.md section 7). The HTTP routes are api/routes.py over
worker/api_source.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys

import faust

from stream import faust_fixes, heap, logs
from stream.api import routes
from stream.config import Settings
from stream.core.funnels import load_funnels
from stream.core.tracking import load_tracking
from stream.faust_fixes.bulk_recovery import BulkRecovery
from stream.faust_fixes.fenced_transactions import on_fenced
from stream.faust_fixes.missing_offsets import Refetcher
from stream.faust_fixes.raw_schema import RawSchema
from stream.kafka.client import (
    MissingTopics,
    client_options,
    create_topics,
    faust_credentials,
    input_topics,
    missing_topics,
)
from stream.logs import RejectLog
from stream.net import is_loopback, port_open
from stream.worker import attribution, count, fencing, normalise, partitions, tails
from stream.worker.api_source import WorkerSource
from stream.worker.context import Context, Tables
from stream.worker.metrics import FUNNEL_STATE
from stream.worker.sources import SourceCatalog
from stream.worker.supervision import stop_worker_on_error
from stream.worker.tracking_store import TrackingStore

log = logging.getLogger("stream.worker")

CRM_TYPES = ("call", "deal_stage")
# The bulk reader's share of Faust's recovery step timeout (past it Faust stops
# its recovery service): faust_fixes/bulk_recovery.py.
BULK_SHARE = 0.75


def build_app(settings: Settings, web_port: int | None = None) -> faust.App:
    """The Faust app with exactly-once processing and raw bytes keys and values."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),
        datadir=str(settings.data_dir / "{conf.id}"),
        store=settings.store,
        processing_guarantee="exactly_once",
        # No standby copies of other workers' tables: every rebalance clears table
        # memory and replays the changelogs (faust_fixes/rebalance_state.py), so a
        # standby's copy was thrown away unread, after costing its worker the
        # CPU to apply every peer's changelog records and the memory to hold
        # them (two workers: a third of their CPU, twice the state each; issue #22).
        table_standby_replicas=0,
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


def build_tables(app: faust.App, settings: Settings) -> Tables:
    options = {
        "partitions": settings.partitions,
        "schema": faust.Schema(key_serializer="json", value_serializer="json"),
    }
    return Tables(
        seen=app.Table("seen-events", default=None, **options),
        events_per_minute=app.Table("events-per-minute", default=int, **options),
        journeys=app.Table("journeys", default=None, **options),
        counters=app.Table("funnel-counters", default=int, **options),
        marks=app.Table("watermarks", default=None, **options),
    )


def build_context(app: faust.App, settings: Settings) -> Context:
    tracking = load_tracking(settings.tracking or None)
    store = TrackingStore(
        settings.redis_url, tracking, prefix=settings.redis_prefix, keep=settings.retention
    )
    return Context(
        app=app,
        settings=settings,
        funnels=load_funnels(settings.funnels or None),
        tables=build_tables(app, settings),
        topic_type={topic: kind for kind, topic in settings.topics.items()},
        tracking=tracking,
        store=store,
        # A side consumer, opened on the first hole; it lives as long as the process.
        refetcher=Refetcher(client_options(settings), group_id=settings.app_id),
        reject_log=RejectLog(log),
        catalog=SourceCatalog(
            client_options(settings),
            settings.app_id,
            list(settings.topics.values()),
            settings.idle_timeout,
        ),
        memory_store=settings.store.startswith("memory"),
    )


def create_app(settings: Settings, web_port: int | None = None) -> faust.App:
    faust_fixes.apply_all()
    if settings.trace_offsets:
        from stream.worker.trace import trace_offsets

        trace_offsets()
    app = build_app(settings, web_port)
    if settings.store.startswith("memory") and settings.recovery_bulk_s > 0:
        limit = min(settings.recovery_bulk_s, BULK_SHARE * app.conf.broker_request_timeout)
        app.funnel_bulk_recovery = BulkRecovery(client_options(settings), limit)
    ctx = build_context(app, settings)
    add_agents(app, ctx)
    add_rebalance_handlers(app, ctx)
    on_fenced(functools.partial(fencing.handle_fence, ctx))
    FUNNEL_STATE.source = lambda: partitions.funnel_state(ctx)
    FUNNEL_STATE.consumer = lambda: partitions.consumer_state(ctx)
    routes.register(app, WorkerSource(ctx))
    return app


def add_agents(app: faust.App, ctx: Context) -> None:
    """The three agents, in this order (it numbers the transactional ids' topic groups)."""
    settings = ctx.settings
    raw = {"schema": RawSchema()}  # faust_fixes/raw_schema.py
    shop = app.topic(*(t for k, t in settings.topics.items() if k not in CRM_TYPES), **raw)
    crm = app.topic(*(settings.topics[k] for k in CRM_TYPES), **raw)
    events = app.topic(settings.events_topic, partitions=settings.partitions, internal=True, **raw)

    @app.agent(shop)
    @stop_worker_on_error(app, "normalise")
    async def normalise_agent(stream: faust.StreamT) -> None:
        await normalise.run(ctx, stream, "normalise", None)

    @app.agent(crm)
    @stop_worker_on_error(app, "attribute")
    async def attribute_crm(stream: faust.StreamT) -> None:
        await normalise.run(ctx, stream, "attribute", attribution.enrich)

    @app.task
    async def sync_number_pool() -> None:
        await attribution.sync_number_pool(ctx)

    @app.task
    async def watch_sources() -> None:
        await ctx.catalog.run(settings.idle_check, lambda: count.advance_loaded(ctx))

    @app.task
    async def watch_tails() -> None:
        await tails.watch(ctx)

    @app.agent(events)
    @stop_worker_on_error(app, "count")
    async def count_agent(stream: faust.StreamT) -> None:
        await count.run(ctx, stream)


def add_rebalance_handlers(app: faust.App, ctx: Context) -> None:
    @app.on_partitions_revoked.connect
    async def commit_on_revoke(sender, revoked, **kwargs):  # noqa: ANN001, ANN202
        await partitions.on_revoked(ctx)

    @app.on_partitions_assigned.connect
    async def reload_on_assign(sender, assigned, **kwargs):  # noqa: ANN001, ANN202
        partitions.on_assigned(ctx)


def run_worker(settings: Settings, web_port: int | None = None) -> int:
    from faust.worker import Worker

    port = web_port or settings.web_port
    if not is_loopback(settings.web_bind) and not settings.api_token:
        print(
            f"funnel worker: FUNNEL_WEB_BIND={settings.web_bind} is reachable from other "
            "machines and FUNNEL_API_TOKEN is unset: anyone could lease tracking numbers "
            "(POST /api/tracking-numbers); set a token, or bind 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    if port_open(settings.host, port):
        print(
            f"funnel worker: web port {settings.host}:{port} is already in use; "
            "stop the other worker or set FUNNEL_WEB_PORT",
            file=sys.stderr,
        )
        return 1
    app = create_app(settings, web_port)
    heap.freeze_when_slow(settings.gc_freeze_ms / 1000)
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
    missing = asyncio.run(missing_topics(settings, input_topics(settings)))
    if missing:
        print(f"funnel worker: {MissingTopics(settings.kafka_bootstrap, missing)}", file=sys.stderr)
        return 2
    worker = Worker(
        app,
        loglevel=settings.log_level,
        logging_config=logs.logging_config(settings.log_level, settings.trace_offsets),
        quiet=True,
        redirect_stdouts=False,
    )
    log.info("worker starting", extra={"web_port": port, "broker": settings.kafka_bootstrap})
    worker.execute_from_commandline()
    return 0

"""What the HTTP API reads of a worker: its partitions' state and its peers.

Implements api/views.py's ``StateSource`` over the worker's context, so the
views stay plain functions and the worker stays the only place that knows
Faust's assignment, tables and HTTP client.
"""

from __future__ import annotations

from collections import Counter

from redis.exceptions import RedisError

from stream.api import fanout
from stream.api.fanout import Fanout
from stream.api.tracking_numbers import LeaseLimits, LeaseUnavailable
from stream.api.views import Response
from stream.core.funnels import Funnel
from stream.worker import partitions
from stream.worker.context import Context
from stream.worker.metrics import LEASES, LEASES_LIMITED, POOL_EXHAUSTED, REDIS_UP, exposition


class WorkerSource:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.funnels = ctx.funnels
        self.limits = LeaseLimits(ctx.settings.leases_per_session, ctx.settings.leases_per_client)
        self.fanout = Fanout(
            ctx.settings.partitions,
            self.owned_partitions,
            self.owned_sums,
            self.peers,
            self.get_json,
        )

    def ready(self) -> bool:
        return partitions.ready(self.ctx)

    def state(self) -> str:
        return partitions.phase(self.ctx)

    def owned_partitions(self) -> set[int]:
        return partitions.owned_partitions(self.ctx)

    def owned_sums(self, name: str, start: float, end: float, view: str) -> Counter:
        return partitions.owned_sums(self.ctx, name, start, end, view)

    def owned_carts(self, funnel: Funnel, since: float, limit: int) -> list[dict]:
        return partitions.owned_carts(self.ctx, funnel, since, limit)

    def owned_events_per_minute(self) -> dict[str, dict[str, int]]:
        return partitions.owned_events_per_minute(self.ctx)

    def peers(self) -> list[str]:
        """Other workers' URLs, from the partition assignment of the counters table."""
        app, counters = self.ctx.app, self.ctx.tables.counters
        metadata = app.router.table_metadata(counters.name)
        topic = counters.changelog_topic.get_topic_name()
        return list(fanout.peers_of(metadata, topic, str(app.conf.canonical_url)))

    async def get_json(self, url: str, params: dict[str, str]) -> dict:
        client, token = self.ctx.app.http_client, self.settings.api_token
        return await fanout.http_get_json(client, url, params, token)

    def metrics(self) -> Response:
        body, content_type = exposition()
        return Response(raw=body, content_type=content_type.split(";")[0])

    async def lease(self, request: dict, now: float) -> dict:
        """A tracking number from the Redis pool (synced on first use)."""
        ctx = self.ctx
        try:
            if not ctx.pool_synced:
                await ctx.store.sync_pool()
                ctx.pool_synced = True
            got = await ctx.store.lease(request, now)
        except RedisError as exc:
            REDIS_UP.set(0)
            raise LeaseUnavailable(str(exc)) from exc
        REDIS_UP.set(1)
        LEASES.labels(kind=got["kind"]).inc()
        if got["kind"] == "static":
            # The page sends any text as source: only configured ones become labels.
            source = request.get("source") or "unknown"
            known = {t.get("source") for t in ctx.tracking.static.values()}
            POOL_EXHAUSTED.labels(source=source if source in known else "other").inc()
        return got

    def lease_limited(self, by: str) -> None:
        LEASES_LIMITED.labels(by=by).inc()

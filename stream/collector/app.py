"""`funnel collector`: the aiohttp process of the ingestion edge (DESIGN.md section 9).

Thin: reads each request into ``endpoints.Request``, hands it to the
``Collector`` and writes its ``Answer``; serves the tracker script and, for
`make run`, the sample shop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import unquote

from aiohttp import ClientSession, ClientTimeout, web

from stream.collector.batch import MAX_REQUEST
from stream.collector.endpoints import Answer, Collector, Request
from stream.collector.sender import Sender
from stream.collector.webhook_config import load_webhooks
from stream.collector.write_keys import load_write_keys
from stream.config import Settings
from stream.core.funnels import load_funnels
from stream.net import is_loopback, read_body
from stream.static_files import static_file

log = logging.getLogger("funnel.collector")
MAX_WEBHOOK = 1024 * 1024
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "86400",
}


async def read(request: web.Request, limit: int) -> Request:
    body = await read_body(request.content, limit)
    return Request(
        body=body,
        headers=dict(request.headers),
        query=dict(request.query),
        method=request.method,
        url=unquote(str(request.url)),
        client=request.remote or "",
    )


def respond(answer: Answer, cors: bool = False) -> web.Response:
    headers = {**(answer.headers or {}), **(CORS if cors else {})}
    return web.json_response(answer.body, status=answer.status, headers=headers)


def routes(collector: Collector, settings: Settings) -> web.RouteTableDef:
    table = web.RouteTableDef()
    metrics = collector.metrics

    def timed(endpoint: str, answer: Answer, started: float) -> None:
        metrics.requests.labels(endpoint, str(answer.status)).inc()
        metrics.seconds.labels(endpoint).observe(time.perf_counter() - started)

    @table.post("/v1/batch")
    async def batch(request: web.Request) -> web.Response:
        started = time.perf_counter()
        answer = await collector.batch(await read(request, MAX_REQUEST))
        timed("/v1/batch", answer, started)
        return respond(answer, cors=True)

    @table.post("/v1/webhooks/{name}")
    async def webhook(request: web.Request) -> web.Response:
        started = time.perf_counter()
        answer = await collector.webhook(
            request.match_info["name"], await read(request, MAX_WEBHOOK)
        )
        timed("/v1/webhooks", answer, started)
        return respond(answer)

    @table.post("/v1/number")
    async def number(request: web.Request) -> web.Response:
        started = time.perf_counter()
        answer = await collector.number(await read(request, 4096))
        timed("/v1/number", answer, started)
        return respond(answer, cors=True)

    @table.options("/v1/batch")
    @table.options("/v1/number")
    async def preflight(request: web.Request) -> web.Response:
        return web.Response(status=204, headers=CORS)

    @table.get("/t.js")
    async def tracker(request: web.Request) -> web.Response:
        body, content_type = static_file("stream.collector", "web", "t.js")
        headers = {"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"}
        return web.Response(body=body, content_type=content_type, headers=headers)

    @table.get("/metrics")
    async def metrics_page(request: web.Request) -> web.Response:
        metrics.pending.set(collector.sender.pending)
        return web.Response(body=metrics.text(), content_type="text/plain")

    @table.get("/health/live")
    async def live(request: web.Request) -> web.Response:
        return web.json_response({"status": "live"})

    @table.get("/health/ready")
    async def ready(request: web.Request) -> web.Response:
        ok = collector.sender.ready
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    if settings.collector_shop:

        @table.get("/shop/{name}")
        async def shop(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            found = static_file("stream.collector", "shop", name)
            if found is None:
                return web.json_response({"error": f"no shop page {name!r}"}, status=404)
            return web.Response(body=found[0], content_type=found[1])

    return table


def bounded(limit: int) -> Any:
    """At most ``limit`` write requests at once; more get 429 at once instead of
    queueing in memory (the collector never buffers unboundedly)."""
    active = 0

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        nonlocal active
        if request.method != "POST":
            return await handler(request)
        if active >= limit:
            return respond(
                Answer(
                    {"error": f"over {limit} requests in progress; retry"},
                    429,
                    {"Retry-After": "1"},
                ),
                cors=True,
            )
        active += 1
        try:
            return await handler(request)
        finally:
            active -= 1

    return middleware


def lease_client(settings: Settings, session: ClientSession) -> Any:
    """Leases from the worker's POST /api/tracking-numbers, naming the page's address."""

    async def lease(body: bytes, client: str) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "X-Forwarded-For": client}
        if settings.api_token:
            headers["Authorization"] = f"Bearer {settings.api_token}"
        async with session.post(settings.collector_lease_url, data=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    return lease


def check_safe(settings: Settings, keys: list) -> None:
    if not is_loopback(settings.collector_bind) and not keys:
        raise SystemExit(
            f"funnel collector: FUNNEL_COLLECTOR_BIND={settings.collector_bind} is reachable "
            "from other machines but FUNNEL_COLLECTOR_KEYS is not set: anyone could write "
            "events. Set a write keys file (docs/collector.md) or bind to 127.0.0.1."
        )


async def build(settings: Settings) -> tuple[web.Application, Collector]:
    keys = load_write_keys(settings.collector_keys)
    check_safe(settings, keys)
    stages = sorted({s for f in load_funnels(settings.funnels or None) for s in f.stages})
    hooks = load_webhooks(settings.webhooks, stages)
    session = ClientSession(timeout=ClientTimeout(total=5))
    collector = Collector(settings, keys, hooks, Sender(settings), lease_client(settings, session))
    app = web.Application(
        client_max_size=MAX_REQUEST + 1,
        middlewares=[bounded(settings.collector_max_requests)],
    )
    app.add_routes(routes(collector, settings))

    async def close(_: web.Application) -> None:
        await collector.sender.stop()
        await session.close()

    app.on_cleanup.append(close)
    return app, collector


async def serve(settings: Settings) -> None:
    app, collector = await build(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.collector_bind, settings.collector_port)
    await site.start()
    log.info(
        "collector listening",
        extra={"bind": settings.collector_bind, "port": settings.collector_port},
    )
    warm = asyncio.create_task(collector.sender.warm_up())
    try:
        await asyncio.Event().wait()
    finally:
        warm.cancel()
        await runner.cleanup()


def run_collector(settings: Settings) -> int:
    from stream.logs import setup

    setup(settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
    return 0

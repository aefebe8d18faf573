"""The worker's HTTP routes: each path bound to a plain view (api/views.py).

``ROUTES`` is the whole URL map; ``register`` hands it to Faust's web server,
turning a view's ``Response`` into Faust's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.web import View

from stream.api import views
from stream.api.tracking_numbers import MAX_BODY, authorised, tracking_number, unauthorised
from stream.api.views import Response, StateSource
from stream.net import read_body


@dataclass(frozen=True)
class Route:
    path: str
    name: str
    handle: Callable[..., Any]  # (source, params, **path parameters) -> Response or awaitable
    method: str = "get"
    # Answers with visitor ids (personal data): with FUNNEL_API_TOKEN set, only
    # for its bearer (workers send it to their peers). Counts stay open.
    private: bool = False


def _now(fn: Callable) -> Callable:
    """A view that takes the wall clock last."""
    return lambda source, params, **kw: fn(source, params, now=time.time(), **kw)


def client_address(request: Any, header: str) -> str:
    """The caller's address: the peer's, or behind a proxy the last address in
    ``header`` (e.g. X-Forwarded-For), the one the proxy itself appended."""
    if header:
        forwarded = request.headers.get(header, "")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    return request.remote or ""


async def _lease(source: Any, params: dict, request: Any) -> Response:
    raw = await read_body(request.content, MAX_BODY)
    authorization = request.headers.get("Authorization", "")
    settings = source.settings
    client = client_address(request, settings.client_address_header)
    response = await tracking_number(
        raw, authorization, settings.api_token, source.lease, time.time(), client, source.limits
    )
    if response.status == 429:
        source.lease_limited(response.body["limited_by"])
    return response


ROUTES = [
    Route("/", "index", lambda source, params: views.index()),
    Route("/metrics", "metrics", lambda source, params: source.metrics()),
    Route("/health/live", "live", lambda source, params: views.live()),
    Route("/health/ready", "readiness", lambda source, params: views.readiness(source)),
    Route("/api/funnels", "list_funnels", lambda source, params: views.list_funnels(source)),
    Route("/api/tracking-numbers", "tracking_numbers", _lease, method="post"),
    Route("/api/managers", "managers", _now(views.managers)),
    Route("/api/funnels/{name}", "funnel_report", _now(views.funnel_report)),
    Route("/api/funnels/{name}/chart.svg", "funnel_chart", _now(views.funnel_chart)),
    Route("/api/funnels/{name}/trend", "funnel_trend", _now(views.funnel_trend)),
    Route("/static/{name}", "static", lambda source, params, name: views.static(name)),
    Route("/api/carts/abandoned", "abandoned_carts", _now(views.abandoned_carts), private=True),
    Route("/api/partials-carts", "partial_carts", views.partial_carts, private=True),
    Route("/api/partials/{name}", "partials", views.partials),
    Route("/api/events-per-minute", "events_per_minute", lambda s, p: views.events_per_minute(s)),
    Route("/api/visits-per-minute", "visits_per_minute", lambda s, p: views.visits_per_minute(s)),
]


def to_web(web: View, response: Response) -> Any:
    """A view's Response as Faust's (aiohttp) response."""
    if response.raw is not None:
        return web.bytes(
            response.raw,
            content_type=response.content_type,
            status=response.status,
            headers=response.headers,
        )
    return web.json(response.body, status=response.status, headers=response.headers)


async def dispatch(route: Route, source: StateSource, web: View, request: Any, **kw: Any) -> Any:
    authorization = request.headers.get("Authorization", "")
    if route.private and not authorised(source.settings.api_token, authorization):
        return to_web(web, unauthorised())
    if route.method == "post":
        result = route.handle(source, dict(request.query), request)
    else:
        result = route.handle(source, dict(request.query), **kw)
    if not isinstance(result, Response):
        result = await result
    return to_web(web, result)


def view_class(route: Route, source: StateSource) -> type[View]:
    """A Faust View whose one method serves ``route`` from ``source``."""

    async def handler(self: View, request: Any, **kw: Any) -> Any:
        return await dispatch(route, source, self, request, **kw)

    return type(route.name, (View,), {route.method: handler, "__doc__": route.handle.__doc__})


def register(app: faust.App, source: StateSource) -> None:
    for route in ROUTES:
        app.page(route.path, name=route.name)(view_class(route, source))

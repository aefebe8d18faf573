"""The JSON API and the page's files as plain functions of (query, state source).

Each view takes the query parameters (and path parameters) and a
``StateSource``: what the worker knows about its own partitions plus the
fan-out to its peers. Views return a ``Response``; api/routes.py turns it into
Faust's web response. Without Faust or a network a test can call any view with
a source of its own (tests/unit/test_views.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from stream.api import query as api
from stream.api.assets import asset
from stream.api.fanout import Fanout, encode_sums
from stream.config import Settings
from stream.core import money
from stream.core.chart import funnel_svg
from stream.core.engine import LEDGERS
from stream.core.funnels import Funnel
from stream.core.summary import flag_drops, ratio, summarise

LEDGER_NAMES = {ledger.name for ledger in LEDGERS}
RETRY = {"Retry-After": "1"}


@dataclass
class Response:
    """A view's answer: a JSON body, or raw bytes with their content type."""

    body: Any = None
    status: int = 200
    raw: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] | None = None


class StateSource(Protocol):
    settings: Settings
    funnels: list[Funnel]
    fanout: Fanout

    def ready(self) -> bool: ...
    def state(self) -> str: ...
    def owned_partitions(self) -> set[int]: ...
    def owned_sums(self, name: str, start: float, end: float, view: str) -> Counter: ...
    def owned_carts(self, funnel: Funnel, since: float, limit: int) -> list[dict]: ...
    def owned_events_per_minute(self) -> dict[str, dict[str, int]]: ...


def answer(body: dict, status: int) -> Response:
    """A JSON answer; a 503 says when to retry."""
    return Response(body, status, headers=RETRY if status == 503 else None)


def bad_query(exc: api.BadQuery) -> Response:
    return Response({"error": str(exc), "parameter": exc.parameter}, 400)


def catching_up() -> Response:
    return answer({"error": "worker catching up; retry"}, 503)


def not_answered(missing: list[int]) -> Response:
    return answer({"error": f"partitions {missing} not answered yet; retry"}, 503)


def unknown_funnel(source: StateSource, name: str) -> Response:
    known = sorted(f.name for f in source.funnels)
    body = {"error": f"unknown funnel {name!r}", "parameter": "name", "known": known}
    return Response(body, 404)


def find_funnel(source: StateSource, name: str) -> Funnel | None:
    return next((f for f in source.funnels if f.name == name), None)


def index() -> Response:
    body, _ = asset("index.html")
    return Response(raw=body, content_type="text/html")


def static(name: str) -> Response:
    found = asset(name)
    if found is None:
        return Response({"error": f"no static file {name!r}"}, 404)
    body, content_type = found
    return Response(raw=body, content_type=content_type)


def live() -> Response:
    return Response({"status": "live"})


def readiness(source: StateSource) -> Response:
    ok = source.ready()
    return Response({"ready": ok, "state": source.state()}, 200 if ok else 503)


def list_funnels(source: StateSource) -> Response:
    funnels = [
        {
            "name": f.name,
            "mode": f.mode,
            "steps": f.step_names,
            "breakdowns": list(f.breakdowns),
            "window": f.window,
        }
        for f in source.funnels
    ]
    return Response({"funnels": funnels, "windows": list(api.WINDOWS)})


async def funnel_report(source: StateSource, params: dict[str, str], name: str, now: float):
    funnel = find_funnel(source, name)
    if funnel is None:
        return unknown_funnel(source, name)
    return answer(*await funnel_doc(source, funnel, params, now))


async def funnel_doc(
    source: StateSource, funnel: Funnel, params: dict[str, str], now: float
) -> tuple[dict, int]:
    """The section-5 document for a query, or an error body; with its HTTP status.

    ``flags=1`` adds each step's baseline conversion and a ``flagged`` mark
    (core/summary.py ``flag_drops``), as the live page shows them;
    ``forecast=1`` a pipeline's forecast.
    """
    try:
        query = api.parse_query(params, funnel, now)
    except api.BadQuery as exc:
        return {"error": str(exc), "parameter": exc.parameter}, 400
    if not source.ready():
        return {"error": "worker catching up: rebalancing or recovering tables; retry"}, 503
    sums, missing = await source.fanout.cluster_sums(
        funnel.name, query.start, query.end, query.view
    )
    if missing:
        return {
            "error": f"partitions {missing} are not answered by any worker yet "
            "(rebalancing or a worker is down); retry",
        }, 503
    spend, missing = await money.spend_sums(
        ledger_reader(source, "_spend"), query.start, min(query.end, now)
    )
    if missing:
        return {"error": f"partitions {missing} are not answered yet; retry"}, 503
    args = (query.window, query.start_text, query.end_text, query.view, query.breakdown)
    doc = summarise(funnel, dict(sums), *args, spend)
    if params.get("flags") in ("1", "true"):
        error = await add_flags(source, funnel, query, doc, args)
        if error:
            return error, 503
    if funnel.mode == "pipeline" and params.get("forecast") in ("1", "true"):
        error = await add_forecast(source, funnel, doc, now)
        if error:
            return error, 503
    return doc, 200


async def add_flags(
    source: StateSource, funnel: Funnel, query: api.Query, doc: dict, args: tuple
) -> dict | None:
    """Each step's baseline conversion and drop flag; an error body if partitions are missing."""
    settings = source.settings
    start, end = api.baseline_range(query, settings.alert_long_window_seconds)
    base, missing = await source.fanout.cluster_sums(funnel.name, start, end, query.view)
    if missing:
        return {"error": f"partitions {missing} are not answered yet; retry"}
    baseline = summarise(funnel, dict(base), *args)
    flag_drops(doc, baseline, settings.alert_drop, settings.alert_min_volume)
    return None


async def add_forecast(source: StateSource, funnel: Funnel, doc: dict, now: float) -> dict | None:
    fanout = source.fanout
    cohort, missing = await fanout.cluster_sums(funnel.name, now - funnel.window, now, "cohort")
    days = money.FORECAST_DAYS * 86400
    recent, missing2 = await fanout.cluster_sums(funnel.name, now - days, now, "period")
    if missing or missing2:
        return {"error": "partitions not answered yet; retry"}
    window_name = f"{funnel.window // 86400}d"
    doc["forecast"] = money.forecast(funnel, dict(cohort), dict(recent), window_name)
    return None


def ledger_reader(source: StateSource, name: str) -> Callable:
    async def read(start: float, end: float) -> tuple[Counter, list[int]]:
        return await source.fanout.cluster_sums(name, start, end, "period")

    return read


async def funnel_chart(source: StateSource, params: dict[str, str], name: str, now: float):
    """The funnel as an SVG picture (the page's download); ``channel=V`` for one channel."""
    funnel = find_funnel(source, name)
    if funnel is None:
        return unknown_funnel(source, name)
    params = dict(params)
    channel = params.pop("channel", "")
    if channel:
        params["breakdown"] = "channel"
    doc, status = await funnel_doc(source, funnel, params, now)
    if status != 200:
        return answer(doc, status)
    title = None
    if channel:
        figures = doc.get("breakdown", {}).get("channel", {}).get(channel)
        if figures is None:
            body = {"error": f"no channel {channel!r} in this window", "parameter": "channel"}
            return Response(body, 404)
        doc = {**doc, **figures}
        title = f"Funnel {name}, channel {channel} — last {doc['window']}, {doc['view']} view"
    return Response(raw=funnel_svg(doc, title).encode(), content_type="image/svg+xml")


async def funnel_trend(source: StateSource, params: dict[str, str], name: str, now: float):
    """Overall conversion per interval over the last hours (the page's trend line)."""
    funnel = find_funnel(source, name)
    if funnel is None:
        return unknown_funnel(source, name)
    try:
        view = api.parse_view(params)
        ranges = api.trend_ranges(params, now, source.settings.bucket)
    except api.BadQuery as exc:
        return bad_query(exc)
    if not source.ready():
        return catching_up()
    last = len(funnel.step_names) - 1
    metric = "reached" if view == "period" else "cohort"
    fanout = source.fanout
    results = await asyncio.gather(*(fanout.cluster_sums(name, a, b, view) for a, b in ranges))
    points = []
    for (start, end), (sums, missing) in zip(ranges, results, strict=True):
        if missing:
            return answer({"error": f"partitions {missing} not answered; retry"}, 503)
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
    return Response({"funnel": name, "view": view, "points": points})


async def managers(source: StateSource, params: dict[str, str], now: float) -> Response:
    """Per manager: calls, missed inbound, talk time, lead response, deals,
    closing rate and revenue (``funnel``: a pipeline; default the first)."""
    pipelines = [f for f in source.funnels if f.mode == "pipeline" and "manager" in f.breakdowns]
    try:
        funnel = api.pick_funnel(params, pipelines, "a pipeline broken down by manager")
        query = api.parse_query(params, funnel, now)
    except api.BadQuery as exc:
        return bad_query(exc)
    if not source.ready():
        return catching_up()
    fanout = source.fanout
    calls, missing = await fanout.cluster_sums("_calls", query.start, query.end, "period")
    deals, missing2 = await fanout.cluster_sums(funnel.name, query.start, query.end, "period")
    if missing or missing2:
        return answer({"error": "partitions not answered yet; retry"}, 503)
    rows = money.manager_rows(dict(calls), dict(deals), funnel)
    return Response({"funnel": funnel.name, "window": query.window, "managers": rows})


async def abandoned_carts(source: StateSource, params: dict[str, str], now: float) -> Response:
    """Carts added in the last ``hours`` and not bought, newest first: for remarketing."""
    shops = [f for f in source.funnels if f.mode == "sequence" and money.cart_step(f) is not None]
    try:
        funnel = api.pick_funnel(params, shops, "a sequence funnel with a cart add step")
        hours, limit = api.parse_cart_query(params)
    except api.BadQuery as exc:
        return bad_query(exc)
    if not source.ready():
        return catching_up()
    since = now - hours * 3600
    carts = source.owned_carts(funnel, since, limit)
    q = {"funnel": funnel.name, "since": repr(since), "limit": str(limit)}
    answered, answers = await source.fanout.peer_answers("/api/partials-carts", q)
    missing = source.fanout.missing(answered)
    if missing:
        return not_answered(missing)
    for peer in answers:
        carts += peer["carts"]
    carts.sort(key=lambda c: (-c["added_at"], c["entity"]))
    for cart in carts[:limit]:
        cart["added_at"] = api.iso(cart["added_at"])
        cart["last_event_at"] = api.iso(cart["last_event_at"])
    body = {"funnel": funnel.name, "hours": hours, "entity": funnel.entity}
    return Response({**body, "count": len(carts), "carts": carts[:limit]})


def partial_carts(source: StateSource, params: dict[str, str]) -> Response:
    """Abandoned carts of this worker's own partitions, for a peer's query."""
    funnel = find_funnel(source, params.get("funnel", ""))
    try:
        since = float(params.get("since", "")[: api.MAX_PARAM])
        limit = int(params.get("limit", "100")[: api.MAX_PARAM])
    except ValueError:
        return Response({"error": "since/limit must be numbers", "parameter": "since"}, 400)
    if funnel is None or money.cart_step(funnel) is None:
        return Response({"error": "unknown funnel", "parameter": "funnel"}, 404)
    if not source.ready():
        return Response({"error": "worker catching up"}, 503)
    carts = source.owned_carts(funnel, since, min(limit, api.MAX_CARTS))
    return Response({"partitions": sorted(source.owned_partitions()), "carts": carts})


def partials(source: StateSource, params: dict[str, str], name: str) -> Response:
    """Sums of this worker's own partitions, for a peer answering a query."""
    if find_funnel(source, name) is None and name not in LEDGER_NAMES:
        return Response({"error": f"unknown funnel {name!r}", "parameter": "name"}, 404)
    try:
        start = float(params.get("start", "-inf")[: api.MAX_PARAM])
        end = float(params.get("end", "inf")[: api.MAX_PARAM])
    except ValueError:
        return Response({"error": "start/end must be numbers", "parameter": "start"}, 400)
    try:
        view = api.parse_view(params)
    except api.BadQuery as exc:
        return bad_query(exc)
    if not source.ready():
        return Response({"error": "worker catching up"}, 503)
    sums = source.owned_sums(name, start, end, view)
    return Response({"partitions": sorted(source.owned_partitions()), "sums": encode_sums(sums)})


def events_per_minute(source: StateSource) -> Response:
    """Distinct events counted per type and minute, from the partitions this
    worker owns (sum the workers for the whole group): the event-level check
    of exactness that the chaos suite compares with its input."""
    return Response(source.owned_events_per_minute())


def visits_per_minute(source: StateSource) -> Response:
    """Unique visits per minute from the partitions this worker owns (skeleton)."""
    return Response(source.owned_events_per_minute().get("visit", {}))

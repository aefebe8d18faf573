"""The HTTP views and the fan-out as plain functions: no Faust app, no network.

Two "workers" each own one partition of real engines; the local one answers
a query by asking its peer through ``Fanout`` (the peer's answer is its own
``partials`` view), as the worker does over HTTP.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import orjson

from stream.api import views
from stream.api.fanout import Fanout
from stream.api.routes import ROUTES
from stream.api.tracking_numbers import LeaseUnavailable, tracking_number
from stream.config import Settings
from stream.core.engine import Engine
from stream.core.events import decode
from stream.core.funnels import Funnel, load_funnels

FUNNELS = load_funnels()
NOW = 1_800_000_000.0


def event(i: int, kind: str, visitor: str, **extra: object) -> object:
    raw = {
        "event_id": f"e{i}",
        "type": kind,
        "occurred_at": "2027-01-15T08:00:00+00:00",
        "visitor_id": visitor,
        "channel": "google",
        **extra,
    }
    return decode(orjson.dumps(raw), now=float("inf"))


@dataclass
class Worker:
    """A StateSource over engines of its own partitions; peers answer through ``partials``."""

    partitions: dict[int, Engine]
    peers: list[Worker] = field(default_factory=list)
    is_ready: bool = True
    settings: Settings = field(default_factory=Settings)
    funnels: list[Funnel] = field(default_factory=lambda: FUNNELS)

    def __post_init__(self) -> None:
        self.fanout = Fanout(
            2, self.owned_partitions, self.owned_sums, self.peer_urls, self.get_json
        )

    def ready(self) -> bool:
        return self.is_ready

    def state(self) -> str:
        return "ready" if self.is_ready else "recovering"

    def owned_partitions(self) -> set[int]:
        return set(self.partitions)

    def owned_sums(self, name: str, start: float, end: float, view: str) -> Counter:
        out: Counter = Counter()
        for engine in self.partitions.values():
            out.update(engine.sums(name, start, end, view))
        return out

    def owned_carts(self, funnel: Funnel, since: float, limit: int) -> list[dict]:
        return []

    def owned_events_per_minute(self) -> dict:
        return {"visit": {"2027-01-15T08:00:00+00:00": len(self.partitions)}}

    def peer_urls(self) -> list[str]:
        return [f"peer{i}" for i in range(len(self.peers))]

    async def get_json(self, url: str, params: dict[str, str]) -> dict:
        peer = self.peers[int(url.split("/")[0].removeprefix("peer"))]
        name = url.rsplit("/", 1)[1]
        response = views.partials(peer, params, name)
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
        return orjson.loads(orjson.dumps(response.body))


def engine_with(*events: object) -> Engine:
    engine = Engine(FUNNELS)
    for ev in events:
        assert engine.process(ev)
    return engine


def two_workers(peer_ready: bool = True) -> Worker:
    left = engine_with(event(1, "visit", "a"), event(2, "signup", "a", user_id="u-a"))
    right = engine_with(event(3, "visit", "b"), event(4, "visit", "c"))
    peer = Worker({1: right}, is_ready=peer_ready)
    return Worker({0: left}, peers=[peer])


def reached(response: views.Response) -> list[int]:
    return [step["reached"] for step in response.body["steps"]]


def test_a_funnel_report_sums_own_and_peer_partitions() -> None:
    got = asyncio.run(views.funnel_report(two_workers(), {"window": "all"}, "shop", NOW))
    assert got.status == 200
    assert reached(got)[:2] == [3, 1]  # visits a, b, c; signup a


def test_a_peer_that_cannot_answer_makes_it_503_with_retry_after() -> None:
    got = asyncio.run(
        views.funnel_report(two_workers(peer_ready=False), {"window": "all"}, "shop", NOW)
    )
    assert got.status == 503
    assert got.headers == {"Retry-After": "1"}
    assert "[1]" in got.body["error"]


def test_bad_queries_name_the_parameter() -> None:
    got = asyncio.run(views.funnel_report(two_workers(), {"window": "3w"}, "shop", NOW))
    assert got.status == 400 and got.body["parameter"] == "window"
    got = asyncio.run(views.funnel_report(two_workers(), {}, "nope", NOW))
    assert got.status == 404 and "shop" in got.body["known"]
    got = views.partials(two_workers(), {"start": "x"}, "shop")
    assert got.status == 400 and got.body["parameter"] == "start"


def test_a_worker_catching_up_answers_503() -> None:
    worker = two_workers()
    worker.is_ready = False
    assert asyncio.run(views.funnel_report(worker, {}, "shop", NOW)).status == 503
    assert views.readiness(worker).status == 503
    assert views.readiness(worker).body == {"ready": False, "state": "recovering"}
    assert views.partials(worker, {}, "shop").status == 503


def test_the_trend_and_the_chart_come_from_the_same_sums() -> None:
    worker = two_workers()
    params = {"hours": "1", "points": "4"}
    got = asyncio.run(views.funnel_trend(worker, params, "shop", NOW))
    assert got.status == 200, got.body
    chart = asyncio.run(views.funnel_chart(worker, {"window": "all"}, "shop", NOW))
    assert chart.content_type == "image/svg+xml" and chart.raw.startswith(b"<svg")


def test_events_per_minute_and_the_static_files() -> None:
    assert views.events_per_minute(two_workers()).body == {
        "visit": {"2027-01-15T08:00:00+00:00": 1}
    }
    assert views.static("../secret").status == 404
    assert views.index().content_type == "text/html"


def test_every_route_is_served_by_a_view() -> None:
    paths = [route.path for route in ROUTES]
    assert len(paths) == len(set(paths))
    assert {"/api/funnels/{name}", "/api/partials/{name}", "/metrics", "/"} <= set(paths)


async def lease_ok(request: dict, now: float) -> dict:
    return {"kind": "pool", "number": "+15550100", "request": request}


async def lease_down(request: dict, now: float) -> dict:
    raise LeaseUnavailable("connection refused")


def test_tracking_numbers_check_the_token_the_size_and_the_store() -> None:
    body = orjson.dumps({"visitor_id": "v1", "session_id": "s1"})
    got = asyncio.run(tracking_number(body, "", "secret", lease_ok, NOW))
    assert got.status == 401 and got.headers == {"WWW-Authenticate": "Bearer"}
    got = asyncio.run(tracking_number(b"x" * 5000, "", "", lease_ok, NOW))
    assert got.status == 413
    got = asyncio.run(tracking_number(b"{", "", "", lease_ok, NOW))
    assert got.status == 400
    got = asyncio.run(tracking_number(body, "Bearer secret", "secret", lease_ok, NOW))
    assert got.status == 200 and got.body["number"] == "+15550100"
    got = asyncio.run(tracking_number(body, "", "", lease_down, NOW))
    assert got.status == 503 and got.headers == {"Retry-After": "1"}

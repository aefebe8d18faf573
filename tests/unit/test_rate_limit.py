"""Lease requests are limited per session and per client address; a worker bound
beyond loopback needs a token."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson

from stream.api.routes import client_address
from stream.api.tracking_numbers import LeaseLimits, tracking_number
from stream.core.rate_limit import RateLimit
from stream.net import is_loopback
from tests.unit.test_views import lease_ok

NOW = 1_795_000_000.0


def test_a_key_gets_its_burst_then_its_rate() -> None:
    limit = RateLimit(per_minute=6, burst=3)
    assert [limit.retry_after("a", NOW) for _ in range(3)] == [0, 0, 0]
    assert limit.retry_after("a", NOW) == 10.0  # one token every 10 s
    assert limit.retry_after("b", NOW) == 0  # another key has its own bucket
    assert limit.retry_after("a", NOW + 10) == 0
    assert limit.retry_after("a", NOW + 10) > 0


def test_a_flood_of_new_keys_keeps_memory_bounded() -> None:
    limit = RateLimit(per_minute=6, burst=1, max_keys=100)
    for i in range(10_000):
        limit.retry_after(f"session-{i}", NOW)
    assert len(limit._buckets) == 100


def test_zero_a_minute_means_no_limit() -> None:
    limit = RateLimit(per_minute=0, burst=1)
    assert all(limit.retry_after("a", NOW) == 0 for _ in range(1000))


def lease(body: dict, client: str, limits: LeaseLimits, now: float = NOW):
    raw = orjson.dumps(body)
    return asyncio.run(tracking_number(raw, "", "", lease_ok, now, client, limits))


def test_a_bot_is_refused_and_real_visitors_still_get_numbers() -> None:
    limits = LeaseLimits(per_session=6, per_client=20)
    answers = [
        lease({"visitor_id": f"v{i}", "session_id": f"s{i}"}, "6.6.6.6", limits) for i in range(100)
    ]
    assert [a.status for a in answers].count(200) == 20  # the client's burst
    refused = answers[-1]
    assert refused.status == 429 and refused.body["limited_by"] == "client address"
    assert int(refused.headers["Retry-After"]) >= 1
    assert "at most 20 a minute" in refused.body["error"]
    # Other addresses are not affected by the bot.
    assert lease({"visitor_id": "real", "session_id": "r1"}, "10.0.0.7", limits).status == 200


def test_one_session_asking_again_and_again_is_refused() -> None:
    limits = LeaseLimits(per_session=6, per_client=1000)
    answers = [
        lease({"visitor_id": "v", "session_id": "s"}, f"10.0.0.{i}", limits) for i in range(10)
    ]
    assert [a.status for a in answers] == [200] * 6 + [429] * 4
    assert answers[-1].body["limited_by"] == "session"
    # A minute later the session may ask again.
    assert lease({"visitor_id": "v", "session_id": "s"}, "10.0.0.1", limits, NOW + 60).status == 200


def test_client_address_behind_a_proxy_is_the_one_the_proxy_saw() -> None:
    request = SimpleNamespace(remote="10.0.0.2", headers={"X-Forwarded-For": "1.1.1.1, 6.6.6.6"})
    assert client_address(request, "") == "10.0.0.2"
    assert client_address(request, "X-Forwarded-For") == "6.6.6.6"
    assert (
        client_address(SimpleNamespace(remote="10.0.0.2", headers={}), "X-Forwarded-For")
        == "10.0.0.2"
    )


def test_loopback_binds() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.0.0.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("worker")


def test_a_worker_bound_beyond_loopback_without_a_token_refuses_to_start(capsys) -> None:
    from stream.config import Settings
    from stream.worker.app import run_worker

    assert run_worker(Settings(web_bind="0.0.0.0", api_token="")) == 2
    err = capsys.readouterr().err
    assert "FUNNEL_WEB_BIND=0.0.0.0" in err and "FUNNEL_API_TOKEN is unset" in err

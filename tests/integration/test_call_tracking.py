"""End-to-end analytics on the real stack: ad click -> visit -> tracking number ->
call -> deal -> won revenue under its campaign and keyword, and calls held back
(not guessed) while Redis is down."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from stream.core import bundles
from stream.core.bundles import MARK
from stream.kafka.producer import SyncFunnelProducer
from stream.ops.stack import Stack
from tests.integration.test_contract import read_topic
from tests.support import (
    WorkerProcess,
    free_port,
    http_get,
    http_json,
    metric_sum,
    settings_for,
    unique_env,
    wait_for,
)

pytestmark = pytest.mark.integration

TRACKING = """
[tracking]
lease = "10m"
pool = ["+15555550100", "+15555550101"]

[[tracking.static]]
number = "+15555550150"
channel = "paid"
source = "google"
default = true
"""
TOUCH = {"channel": "paid", "source": "google", "campaign": "winter-sale", "keyword": "red boots"}


def post(
    url: str, body: dict, token: str | None = None, client: str | None = None
) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if client:
        headers["X-Forwarded-For"] = client  # as a reverse proxy would
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, orjson.dumps(body), headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def tracking_env(stack_env: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    path = tmp_path / "tracking.toml"
    path.write_text(TRACKING)
    return unique_env(stack_env, FUNNEL_TRACKING=str(path), **extra)


def test_ad_click_to_won_deal_revenue_by_campaign_and_keyword(stack, stack_env, tmp_path):
    env = tracking_env(stack_env, tmp_path, FUNNEL_API_TOKEN="s3cret")
    settings = settings_for(env)
    asyncio.run(Stack(settings).create_topics())
    worker = WorkerProcess(env, free_port()).start()
    leases = f"{worker.url}/api/tracking-numbers"
    try:
        # The visitor's page asks for a number: dynamic from the pool, the same one
        # again for the same session; the pool of two runs out at the third session.
        assert post(leases, {"visitor_id": "v1", **TOUCH})[0] == 401
        request = {"visitor_id": "v1", "session_id": "s1", **TOUCH}
        status, lease = post(leases, request, "s3cret")
        assert status == 200 and lease["kind"] == "dynamic", lease
        number = lease["number"]
        assert number in ("+15555550100", "+15555550101")
        assert post(leases, request, "s3cret")[1]["number"] == number
        other = post(leases, {"visitor_id": "v2", "session_id": "s2", "source": "bing"}, "s3cret")
        assert other[1]["kind"] == "dynamic" and other[1]["number"] != number
        third = post(leases, {"visitor_id": "v3", "session_id": "s3", "source": "x"}, "s3cret")
        assert third[1] == {"number": "+15555550150", "kind": "static", "until": None}
        status, bad = post(leases, {"session_id": "s4"}, "s3cret")
        assert status == 400 and "visitor_id" in bad["error"]
        metrics = worker.metrics()
        # A source the configuration does not know is not a label of its own.
        assert metric_sum(metrics, "funnel_tracking_pool_exhausted_total", source="other") == 1

        now = time.time()
        with SyncFunnelProducer(settings) as producer:
            producer.visit("v1", session_id="s1", occurred_at=iso(now - 60), **TOUCH)
            # The call carries nothing but the number it was made to.
            producer.call(
                "c1", number, occurred_at=iso(now + 1), direction="inbound", answered=True,
                duration_s=95, manager="ann",
            )  # fmt: skip
            wait_for(
                lambda: (
                    metric_sum(worker.metrics(), "funnel_attribution_total", result="lease") == 1
                ),
                60,
                "the call to be attributed to the lease",
            )
            # The CRM makes a deal from the call; the manager calls back 120 s later.
            producer.deal_stage(
                "d1", "lead", call_id="c1", manager="ann", occurred_at=iso(now + 30)
            )
            producer.call(
                "c2", "+15555550999", deal_id="d1", occurred_at=iso(now + 150),
                direction="outbound", answered=True, duration_s=300, manager="ann",
            )  # fmt: skip
            producer.deal_stage("d1", "qualified", occurred_at=iso(now + 160))
            producer.deal_stage(
                "d1", "won", status="won", amount=1500, currency="USD", occurred_at=iso(now + 170)
            )
            producer.visit("v5", occurred_at=iso(now - 50), channel="social", campaign="video")
            producer.signup("v5", "u5", occurred_at=iso(now - 40))
            producer.cart(
                "v5", "add", cart_id="k5", value=49.9, currency="USD", occurred_at=iso(now)
            )
            today = datetime.fromtimestamp(now, UTC).date().isoformat()
            producer.spend("paid", today, 300, "USD", campaign="winter-sale")

        def sales(breakdown: str) -> dict:
            url = f"{worker.url}/api/funnels/sales?window=all&breakdown={breakdown}"
            return http_json(url)

        wait_for(lambda: sales("campaign")["won"] == 1, 60, "the won deal to be counted")
        doc = wait_for(
            lambda: (
                (d := sales("campaign"))["breakdown"]["campaign"]
                .get("winter-sale", {})
                .get("spend")
                and d
            ),
            60,
            "the spend to be counted",
        )
        won = doc["breakdown"]["campaign"]["winter-sale"]
        assert won["revenue"] == {"USD": 1500.0}
        assert won["spend"] == {"USD": 300.0}
        assert won["romi"] == {"USD": 4.0}  # (1500 - 300) / 300
        assert won["cac"] == {"USD": 300.0}
        assert sales("keyword")["breakdown"]["keyword"]["red boots"]["revenue"] == {"USD": 1500.0}
        assert doc["lead_response"] == {"leads_answered": 1, "avg_s": 120.0}

        metrics = worker.metrics()
        revenue = {"funnel": "sales", "window": "24h", "currency": "USD"}
        assert metric_sum(metrics, "funnel_revenue", breakdown="campaign", value="winter-sale",
                          **revenue) == 1500  # fmt: skip
        assert metric_sum(metrics, "funnel_revenue", breakdown="keyword", value="red boots",
                          **revenue) == 1500  # fmt: skip
        assert metric_sum(metrics, "funnel_lead_response_seconds_count", funnel="sales") == 1
        assert metric_sum(metrics, "funnel_lead_response_seconds_sum", funnel="sales") == 120
        assert metric_sum(metrics, "funnel_calls", window="24h", kind="answered",
                          breakdown="campaign", value="winter-sale") == 1  # fmt: skip

        rows = http_json(f"{worker.url}/api/managers?window=all")["managers"]
        ann = next(r for r in rows if r["manager"] == "ann")
        assert (ann["calls"], ann["answered_calls"], ann["outbound_calls"]) == (2, 2, 1)
        assert (ann["talk_time_s"], ann["leads"], ann["won"]) == (395, 1, 1)
        assert ann["revenue"] == {"USD": 1500.0} and ann["lead_response"]["avg_s"] == 120.0

        # Remarketing: the cart added and not bought, with its first touch. The list
        # names visitors: with a token set it is for the token's bearer only.
        abandoned = f"{worker.url}/api/carts/abandoned?hours=1"
        assert http_get(abandoned)[0] == 401
        assert http_get(abandoned, token="wrong")[0] == 401
        carts = wait_for(
            lambda: (c := http_json(abandoned, token="s3cret"))["count"] and c,
            30,
            "the abandoned cart to be listed",
        )
        assert [c["entity"] for c in carts["carts"]] == ["v5"], carts
        cart = carts["carts"][0]
        assert (cart["channel"], cart["campaign"], cart["cart_id"]) == ("social", "video", "k5")
        assert cart["value"] == {"USD": 49.9}
        status, _ = http_get(f"{worker.url}/api/carts/abandoned?hours=-1", token="s3cret")
        assert status == 400

        # The attribution travels in the normalised event: a replay needs no Redis.
        # Everything the topic holds (bundles: core/bundles.py), read for 5 s.
        topic = settings.events_topic
        records = asyncio.run(read_topic(settings.kafka_bootstrap, topic, 10**6, 5))
        events = [i.value for m in records for i in bundles.decode(m.value) if i.kind != MARK]
        calls = [orjson.loads(v) for v in events if b'"call_id":"c1"' in v]
        assert calls and all(c["campaign"] == "winter-sale" for c in calls), calls
        assert calls[0]["visitor_id"] == "v1" and calls[0]["keyword"] == "red boots"
    finally:
        worker.stop()


def test_a_call_that_arrives_after_its_deal_moves_the_deal_to_the_calls_touch(
    stack, stack_env, tmp_path
):
    """The CRM posts the deal before call tracking posts the call (webhooks race):
    the deal is first counted without a touch, then, once the call comes, under
    the call's campaign and keyword, exactly as a deal whose call came first."""
    env = tracking_env(stack_env, tmp_path)
    settings = settings_for(env)
    asyncio.run(Stack(settings).create_topics())
    worker = WorkerProcess(env, free_port()).start()
    leases = f"{worker.url}/api/tracking-numbers"
    try:
        first = {"visitor_id": "v1", "session_id": "s1", **TOUCH, "campaign": "alpha"}
        late = {"visitor_id": "v2", "session_id": "s2", **TOUCH, "campaign": "beta",
                "keyword": "blue boots"}  # fmt: skip
        numbers = [post(leases, body)[1]["number"] for body in (first, late)]
        now = time.time()
        answered = {"direction": "inbound", "answered": True, "duration_s": 60}
        with SyncFunnelProducer(settings) as producer:
            # The way the design expects: the call, then its deal.
            producer.call("c1", numbers[0], occurred_at=iso(now), **answered)
            wait_for(
                lambda: metric_sum(worker.metrics(), "funnel_attribution_total", result="lease"),
                60,
                "the first call to be attributed",
            )
            for deal, call in (("d1", "c1"), ("d2", "c2")):
                producer.deal_stage(deal, "lead", call_id=call, occurred_at=iso(now + 30))
                producer.deal_stage(
                    deal, "won", status="won", amount=900, currency="USD", call_id=call,
                    occurred_at=iso(now + 90),
                )  # fmt: skip

        def sales(breakdown: str) -> dict:
            url = f"{worker.url}/api/funnels/sales?window=all&breakdown={breakdown}"
            return http_json(url)["breakdown"][breakdown]

        # d2's call has not come: d2 is counted, but without a campaign.
        wait_for(lambda: sales("campaign").get("unknown", {}).get("won") == 1, 60, "d2 counted")
        with SyncFunnelProducer(settings) as producer:
            producer.call("c2", numbers[1], occurred_at=iso(now + 5), **answered)
        by_campaign = wait_for(
            lambda: "unknown" not in (c := sales("campaign")) and c, 60, "d2 to move to c2's touch"
        )
        for campaign in ("alpha", "beta"):
            row = by_campaign[campaign]
            assert (row["leads"], row["won"], row["revenue"]) == (1, 1, {"USD": 900.0}), row
        keywords = sales("keyword")
        assert keywords["blue boots"]["won"] == 1 and keywords["red boots"]["won"] == 1
        assert "unknown" not in keywords
        metrics = worker.metrics()
        assert metric_sum(metrics, "funnel_attribution_total", result="corrected") == 2
        # A correction is not another event: two deal stages per deal were counted.
        counted = metric_sum(metrics, "funnel_events_total", type="deal_stage")
        assert counted == 4, counted
    finally:
        worker.stop()


def stack_cmd(env: dict[str, str], *args: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "stream", "stack", *args], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_calls_are_held_while_redis_is_down_then_attributed(stack, stack_env, tmp_path):
    env = tracking_env(stack_env, tmp_path)
    settings = settings_for(env)
    asyncio.run(Stack(settings).create_topics())
    worker = WorkerProcess(env, free_port()).start()
    try:
        request = {
            "visitor_id": "v9",
            "session_id": "s9",
            "channel": "social",
            "campaign": "spring",
        }
        number = post(f"{worker.url}/api/tracking-numbers", request)[1]["number"]
        now = time.time()
        stack_cmd(env, "down", "redis")
        try:
            with SyncFunnelProducer(settings) as producer:
                producer.call("c9", number, occurred_at=iso(now + 1), answered=True, manager="bob")
                producer.visit("v10", occurred_at=iso(now))
            # Shop events go on; the call waits for Redis instead of becoming "unknown".
            wait_for(
                lambda: (
                    http_json(f"{worker.url}/api/funnels/shop?window=all")["steps"][0]["reached"]
                    == 1
                ),
                60,
                "the visit to be counted while Redis is down",
            )
            wait_for(
                lambda: metric_sum(worker.metrics(), "funnel_attribution_held") == 1,
                30,
                "the worker to report the call as held",
            )
            status, _ = post(f"{worker.url}/api/tracking-numbers", request)
            assert status == 503
            time.sleep(5)
            metrics = worker.metrics()
            assert metric_sum(metrics, "funnel_attribution_total") == 0
            assert (
                metric_sum(metrics, "funnel_calls", window="24h", kind="calls", breakdown="") == 0
            )
        finally:
            stack_cmd(env, "up", "redis")
        wait_for(
            lambda: (
                metric_sum(
                    worker.metrics(),
                    "funnel_calls",
                    window="24h",
                    kind="calls",
                    breakdown="campaign",
                    value="spring",
                )
                == 1
            ),  # fmt: skip
            60,
            "the held call to be attributed to its lease once Redis is back",
        )
        metrics = worker.metrics()
        assert metric_sum(metrics, "funnel_attribution_total", type="call", result="lease") == 1
        assert metric_sum(metrics, "funnel_attribution_total", result="none") == 0
        assert metric_sum(metrics, "funnel_attribution_held") == 0
        assert metric_sum(metrics, "funnel_redis_up") == 1
    finally:
        worker.stop()


def test_demo_callers_lease_numbers_and_their_deals_inherit_the_touch(stack, stack_env, tmp_path):
    """`make run`'s demo: live callers' pages lease numbers; calls carry only the number."""
    path = tmp_path / "tracking.toml"
    path.write_text('[tracking]\nlease = "10m"\npool = ["+15555552000..+15555552199"]\n')
    # As `make run` does: the demo names each visitor's address in this header.
    env = unique_env(
        stack_env, FUNNEL_TRACKING=str(path), FUNNEL_CLIENT_ADDRESS_HEADER="X-Forwarded-For"
    )
    settings = settings_for(env)
    asyncio.run(Stack(settings).create_topics())
    worker = WorkerProcess(env, free_port()).start()
    try:
        demo = subprocess.run(
            [sys.executable, "-m", "stream", "demo", "--rate", "40", "--duration", "40"]
            + ["--speed", "4", "--seed", "5", "--leases", f"{worker.url}/api/tracking-numbers"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert demo.returncode == 0, demo.stderr[-2000:]

        def attributed() -> dict[str, float]:
            metrics = worker.metrics()
            return {
                result: metric_sum(metrics, "funnel_attribution_total", type=kind, result=result)
                for kind, result in (("call", "lease"), ("deal_stage", "call"))
            }

        print(demo.stderr[-300:])
        got = wait_for(
            lambda: (a := attributed())["lease"] > 0 and a["call"] > 0 and a,
            60,
            f"demo calls attributed by lease and their deals by call ({attributed()}); "
            f"demo said: {demo.stderr[-300:]}",
        )
        assert metric_sum(worker.metrics(), "funnel_tracking_leases_total", kind="dynamic") > 0
        print("attributed", got)
    finally:
        worker.stop()


def test_a_bot_flooding_the_lease_endpoint_cannot_drain_the_pool(stack, stack_env, tmp_path):
    """A bot asks for 500 numbers as fast as it can (new session each time, one
    address): after its burst it gets 429s, and the real visitors that come next
    still get dynamic numbers from the pool."""
    path = tmp_path / "tracking.toml"
    path.write_text('[tracking]\nlease = "20m"\npool = ["+15555553000..+15555553049"]\n')
    env = unique_env(
        stack_env, FUNNEL_TRACKING=str(path), FUNNEL_CLIENT_ADDRESS_HEADER="X-Forwarded-For"
    )
    asyncio.run(Stack(settings_for(env)).create_topics())
    worker = WorkerProcess(env, free_port()).start()
    leases = f"{worker.url}/api/tracking-numbers"
    try:
        bot = [
            post(leases, {"visitor_id": f"bot{i}", "session_id": f"b{i}"}, client="203.0.113.9")
            for i in range(500)
        ]
        statuses = [status for status, _ in bot]
        assert statuses.count(200) <= 25 and statuses.count(429) >= 475, statuses
        refused = next(answer for status, answer in bot if status == 429)
        assert refused["limited_by"] == "client address" and "retry in" in refused["error"]
        real = [
            post(leases, {"visitor_id": f"v{i}", "session_id": f"s{i}"}, client=f"198.51.100.{i}")
            for i in range(20)
        ]
        assert all(status == 200 and got["kind"] == "dynamic" for status, got in real), real
        metrics = worker.metrics()
        limited = metric_sum(metrics, "funnel_tracking_requests_limited_total", by="client address")
        assert limited == statuses.count(429)
        assert metric_sum(metrics, "funnel_tracking_pool_exhausted_total") == 0
    finally:
        worker.stop()

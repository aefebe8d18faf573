"""The sample shop in Debian's Chromium, end to end through the collector.

An ad click lands on the shop (UTM tags and a gclid in the URL); /t.js sends
the visit and shows a tracking number leased for the session; the visitor
signs up, adds to cart, checks out and pays; then a call to the shown number
arrives as a telephony webhook and the CRM's deal made from it is won. The API
must show the whole chain under the ad's campaign and keyword, equal to the
oracle over the same events.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import orjson
import pytest

from stream.collector.signatures import sign_hmac_sha256
from stream.ops.stack import Stack
from tests.integration.test_contract import read_topic
from tests.integration.test_live_page import browser  # noqa: F401 - the fixture
from tests.support import (
    CollectorProcess,
    WorkerProcess,
    free_port,
    http_json,
    metric_sum,
    settings_for,
    unique_env,
    wait_for,
)
from tests.workload import oracle_docs

pytestmark = pytest.mark.integration

POOL = ("+15555550180", "+15555550181")
TRACKING = f"""
[tracking]
lease = "10m"
pool = {list(POOL)!r}

[[tracking.static]]
number = "+15555550152"
channel = "direct"
source = "website"
default = true
""".replace("'", '"')
AD = "utm_source=google&utm_medium=cpc&utm_campaign=winter-sale&utm_term=red%20boots&gclid=Cj0K"
TOUCH = {
    "channel": "paid",
    "source": "google",
    "medium": "cpc",
    "campaign": "winter-sale",
    "keyword": "red boots",
}
SECRET = "telephony-secret"


def run_async(coro):
    """asyncio.run in another thread: Playwright's sync API keeps a loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def click_through(page, shop: str) -> tuple[str, str]:
    """Ad click to purchase; returns (the number the page showed, the visitor id)."""
    page.goto(f"{shop}/index.html?{AD}")
    page.wait_for_selector('#phone[data-funnel-phone="leased"]', timeout=20000)
    number = page.inner_text("#phone")
    assert page.get_attribute("#phone", "href") == f"tel:{number}"
    page.click("#to-signup")
    page.wait_for_url("**/signup.html")
    # The collector unreachable while the visitor signs up: the signup waits in
    # the tracker's queue across the page change and goes with the next event.
    page.route("**/v1/batch*", lambda route: route.abort("connectionfailed"))
    page.fill("#email", "someone@example.com")
    page.click("#signup-button")
    page.wait_for_url("**/product.html")
    queued = "JSON.parse(localStorage.getItem('_f_queue') || '[]').map(e => e.type)"
    wait_for(lambda: "signup" in page.evaluate(queued), 10, "the signup to wait in the queue")
    page.unroute("**/v1/batch*")
    page.click("#add-to-cart")
    page.wait_for_url("**/cart.html")
    page.click("#checkout")
    page.wait_for_url("**/pay.html")
    page.click("#pay")
    page.wait_for_url("**/thanks.html")
    page.wait_for_selector('#phone[data-funnel-phone="leased"]', timeout=20000)
    assert page.inner_text("#phone") == number  # one lease per session
    wait_for(lambda: page.evaluate(queued) == [], 30, "the tracker's queue to be sent")
    return number, page.evaluate("funnel.visitorId()")


def call_and_deal(collector: CollectorProcess, number: str, now: float) -> list[dict]:
    """The call (telephony webhook) and the CRM's deal made from it (batch API);
    returns the deal's events as the worker should see them, touch filled."""
    call = {"call_id": "call-1", "to": number, "from": "+1 555 010 0200",
            "started_at": iso(now + 5), "duration": 80, "answered": True}  # fmt: skip
    body = orjson.dumps(call)
    status, answer, _ = collector.post(
        "/v1/webhooks/telephony", body, {"X-Signature": sign_hmac_sha256(SECRET, body)}
    )
    assert status == 200 and answer == {"accepted": 1}, answer
    deal = [
        {"type": "deal_stage", "deal_id": "d-1", "stage": "lead", "call_id": "call-1",
         "manager": "ann", "event_id": "d-1-lead", "occurred_at": iso(now + 30)},
        {"type": "deal_stage", "deal_id": "d-1", "stage": "qualified",
         "event_id": "d-1-qualified", "occurred_at": iso(now + 60)},
        {"type": "deal_stage", "deal_id": "d-1", "stage": "won", "status": "won",
         "amount": 79.0, "currency": "EUR", "event_id": "d-1-won", "occurred_at": iso(now + 90)},
    ]  # fmt: skip
    status, answer, _ = collector.post("/v1/batch", orjson.dumps({"batch": deal}))
    assert status == 200 and answer["accepted"] == 3, answer
    return [{**d, **TOUCH} if d["stage"] == "lead" else d for d in deal]


def shop_events(settings) -> tuple[list[dict], int]:
    """The shop's events on Kafka, once each, and how many messages carried them
    (the tracker resends what it has no answer for; the worker counts each once)."""
    topics = [settings.topics[t] for t in ("visit", "signup", "cart")]
    docs: dict[str, dict] = {}
    messages = 0
    for topic in topics:
        got = run_async(read_topic(settings.kafka_bootstrap, topic, 1, timeout=10))
        messages += len(got)
        for m in got:
            doc = orjson.loads(m.value)
            assert docs.setdefault(doc["event_id"], doc) == doc  # a resend is the same event
    return list(docs.values()), messages


def test_ad_click_to_purchase_and_a_won_deal_from_the_shown_number(
    stack,
    stack_env,
    tmp_path,
    browser,  # noqa: F811 - the fixture
):
    tracking = tmp_path / "tracking.toml"
    tracking.write_text(TRACKING)
    env = unique_env(
        stack_env,
        FUNNEL_TRACKING=str(tracking),
        FUNNEL_COLLECTOR_SHOP="1",
        FUNNEL_TELEPHONY_WEBHOOK_SECRET=SECRET,
    )
    settings = settings_for(env)
    run_async(Stack(settings).create_topics())
    worker = WorkerProcess(env, free_port()).start()
    collector = CollectorProcess({**env, "FUNNEL_WEB_PORT": str(worker.port)}, free_port())
    collector.start()
    context = browser.new_context()
    try:
        page = context.new_page()
        now = time.time()
        number, visitor = click_through(page, f"{collector.url}/shop")
        assert number in POOL
        deal = call_and_deal(collector, number, now)
        metrics = lambda: worker.metrics()  # noqa: E731
        wait_for(
            lambda: metric_sum(metrics(), "funnel_attribution_total", result="lease") == 1,
            60,
            "the call to be attributed to the session's lease",
        )
        shop, messages = shop_events(settings)
        print(f"shop: {len(shop)} events in {messages} messages (resent from the queue)")
        assert {d["visitor_id"] for d in shop} == {visitor}
        (visit,) = [d for d in shop if d["type"] == "visit"]
        assert {k: visit.get(k) for k in TOUCH} == TOUCH, visit
        assert sorted(d.get("action", d["type"]) for d in shop) == [
            "add", "checkout", "purchase", "signup", "visit",
        ]  # fmt: skip
        docs = shop + deal
        for breakdown in ("campaign", "keyword"):
            want = oracle_docs(docs, settings, "period", breakdown, [d["type"] for d in docs])
            for name in ("shop", "sales"):
                url = f"{worker.url}/api/funnels/{name}?window=all&breakdown={breakdown}"
                wait_for(lambda u=url, w=want[name]: http_json(u) == w, 60, f"{url} == oracle")
        sales = http_json(f"{worker.url}/api/funnels/sales?window=all&breakdown=campaign")
        won = sales["breakdown"]["campaign"]["winter-sale"]
        assert won["won"] == 1, won
        shop_doc = http_json(f"{worker.url}/api/funnels/shop?window=all&breakdown=keyword")
        purchase = shop_doc["breakdown"]["keyword"]["red boots"]["steps"][-1]
        assert purchase["name"] == "purchase" and purchase["reached"] == 1
    finally:
        context.close()
        collector.stop()
        worker.stop()

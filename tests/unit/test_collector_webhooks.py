"""Webhook mapping, verification and the collector's answers (pure parts).

Payloads follow the vendors' public documentation: Pipedrive's webhooks v1
and v2 (deal updated), HubSpot's webhooks API (deal.propertyChange of
dealstage, with X-HubSpot-Signature-v3), amoCRM's form-encoded lead status
webhook, and the generic call webhook of docs/collector.md.
"""

from __future__ import annotations

import asyncio
import base64
import time
from urllib.parse import urlencode

import orjson
import pytest

from stream.collector import signatures
from stream.collector.endpoints import Collector, Request, lease_body
from stream.collector.sender import Unavailable
from stream.collector.vendors import Unmappable, caller_hash, map_payload
from stream.collector.webhook_config import WebhookConfigError, load_webhooks, parse_webhooks
from stream.collector.write_keys import Source
from stream.config import Settings
from stream.core.events import decode

STAGES = ["lead", "contacted", "qualified", "proposal", "negotiation", "won"]
ENV = {
    "FUNNEL_PIPEDRIVE_WEBHOOK_PASSWORD": "pd-pass",
    "FUNNEL_HUBSPOT_CLIENT_SECRET": "hs-secret",
    "FUNNEL_AMOCRM_WEBHOOK_SECRET": "amo-secret",
    "FUNNEL_TELEPHONY_WEBHOOK_SECRET": "tel-secret",
}


@pytest.fixture
def hooks(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return load_webhooks("", STAGES)


PIPEDRIVE_V2 = {
    "meta": {
        "action": "change",
        "entity": "deal",
        "version": "2.0",
        "id": 1,
        "entity_id": 1,
        "timestamp": 1727447128,
        "change_source": "app",
    },
    "data": {
        "id": 1,
        "title": "test deal",
        "value": 2,
        "currency": "USD",
        "status": "open",
        "stage_id": 3,
        "pipeline_id": 1,
        "owner_id": 18487521,
        "update_time": "2024-09-27T14:25:28Z",
    },
    "previous": {"stage_id": 2},
}
PIPEDRIVE_V1_WON = {
    "v": 1,
    "meta": {"v": 1, "action": "updated", "object": "deal", "id": 7, "timestamp": 1523440213},
    "current": {
        "id": 7,
        "stage_id": 5,
        "status": "won",
        "value": 100,
        "currency": "EUR",
        "user_id": 9,
        "update_time": "2018-04-11 09:50:13",
    },
    "previous": {"id": 7, "stage_id": 5, "status": "open"},
    "event": "updated.deal",
    "retry": 0,
}
HUBSPOT = [
    {
        "objectId": 1246965,
        "propertyName": "dealstage",
        "propertyValue": "closedwon",
        "changeSource": "CRM",
        "eventId": 3816279340,
        "subscriptionId": 25,
        "portalId": 33,
        "appId": 1160452,
        "occurredAt": 1462216307945,
        "subscriptionType": "deal.propertyChange",
        "attemptNumber": 0,
    },
    {
        "objectId": 1246965,
        "propertyName": "amount",
        "propertyValue": "100",
        "eventId": 3816279341,
        "occurredAt": 1462216307945,
        "subscriptionType": "deal.propertyChange",
    },
]
AMOCRM = urlencode(
    {
        "leads[status][0][id]": "25399013",
        "leads[status][0][status_id]": "143",
        "leads[status][0][pipeline_id]": "3104455",
        "leads[status][0][old_status_id]": "30310318",
        "leads[status][0][price]": "5000",
        "leads[status][0][responsible_user_id]": "504141",
        "leads[status][0][last_modified]": "1700000000",
        "account[id]": "29085955",
        "account[subdomain]": "example",
    }
).encode()
CALL = {
    "call_id": "c-77",
    "to": "+15555552001",
    "from": "+1 (555) 123-4567",
    "started_at": "2026-11-01T10:00:00+00:00",
    "duration": 74,
    "answered": True,
    "direction": "inbound",
}


def valid(doc: dict) -> dict:
    decode(orjson.dumps(doc))  # the worker's decoder takes it
    return doc


def test_pipedrive_v2_stage_change_is_a_deal_stage_event(hooks):
    (doc,) = map_payload(hooks["pipedrive"], orjson.dumps(PIPEDRIVE_V2))
    assert valid(doc)["stage"] == "qualified" and doc["deal_id"] == "1"
    assert doc["amount"] == 2.0 and doc["currency"] == "USD" and doc["manager"] == "18487521"
    assert doc["occurred_at"] == "2024-09-27T14:25:28Z"
    again = map_payload(hooks["pipedrive"], orjson.dumps(PIPEDRIVE_V2))[0]
    assert again["event_id"] == doc["event_id"]  # a redelivery counts once


def test_pipedrive_v1_won_and_a_title_edit(hooks):
    (doc,) = map_payload(hooks["pipedrive"], orjson.dumps(PIPEDRIVE_V1_WON))
    assert valid(doc)["status"] == "won" and doc["stage"] == "won"
    assert doc["occurred_at"] == "2018-04-11T09:50:13Z"
    edit = {**PIPEDRIVE_V2, "previous": {"stage_id": 3, "status": "open"}}
    assert map_payload(hooks["pipedrive"], orjson.dumps(edit)) == []
    person = {**PIPEDRIVE_V2, "meta": {**PIPEDRIVE_V2["meta"], "entity": "person"}}
    assert map_payload(hooks["pipedrive"], orjson.dumps(person)) == []


def test_hubspot_dealstage_changes_only(hooks):
    (doc,) = map_payload(hooks["hubspot"], orjson.dumps(HUBSPOT))
    assert valid(doc)["status"] == "won" and doc["deal_id"] == "1246965"
    assert doc["event_id"] == "hubspot-3816279340"
    assert doc["occurred_at"] == "2016-05-02T19:11:47.945+00:00"  # occurredAt, ms


def test_amocrm_lost_lead_is_lost_where_it_stood(hooks):
    (doc,) = map_payload(hooks["amocrm"], AMOCRM)
    assert valid(doc)["status"] == "lost"
    # 30310318 is not in the mapping: the worker counts it unmatched and keeps the deal.
    assert doc["stage"] == "30310318" and doc["amount"] == 5000.0 and doc["manager"] == "504141"


def test_telephony_call_hashes_the_caller(hooks):
    (doc,) = map_payload(hooks["telephony"], orjson.dumps(CALL), salt="s")
    assert valid(doc)["type"] == "call" and doc["tracking_number"] == "+15555552001"
    assert doc["caller_hash"] == caller_hash("+15551234567", "s")
    assert "+1 (555)" not in orjson.dumps(doc).decode()
    assert doc["duration_s"] == 74 and doc["answered"] is True


@pytest.mark.parametrize(
    "vendor, body, field",
    [
        ("pipedrive", b'{"meta": {"entity": "deal"}, "data": {"id": 1}}', "data.stage_id"),
        ("hubspot", b'{"objectId": 1}', "JSON array"),
        ("hubspot", orjson.dumps([{**HUBSPOT[0], "occurredAt": None}]), "occurredAt"),
        ("amocrm", b"contacts[add][0][id]=1", "leads[add]"),
        ("telephony", orjson.dumps({k: v for k, v in CALL.items() if k != "to"}), "`to`"),
        ("telephony", b"not json", "not JSON"),
    ],
)
def test_unmappable_payloads_name_the_field(hooks, vendor, body, field):
    with pytest.raises(Unmappable) as exc:
        map_payload(hooks[vendor], body)
    assert field in str(exc.value)


HUBSPOT_HEAD = '[webhooks.crm]\nvendor = "hubspot"\nsecret_env = "X"\n'
TEL_HEAD = '[webhooks.tel]\nvendor = "telephony"\nsecret_env = "X"\n'


def test_mapping_file_errors_name_file_source_and_field():
    cases = {
        '[webhooks.crm]\nvendor = "salesforce"\nsecret_env = "X"': "field `vendor`",
        '[webhooks.crm]\nvendor = "hubspot"\nsecret_env = "X"': "field `stages`",
        HUBSPOT_HEAD + '[webhooks.crm.stages]\na = "paid"': "'a' -> 'paid' is not a stage",
        '[webhooks.crm]\nvendor = "hubspot"\n[webhooks.crm.stages]\na = "won"': "`secret_env`",
        '[webhooks.tel]\nvendor = "telephony"\nsecret_env = "X"\nretries = 3': "unknown field",
        TEL_HEAD + '[webhooks.tel.fields]\nx = "y"': "unknown call field",
    }
    for text, message in cases.items():
        with pytest.raises(WebhookConfigError, match=r"hooks\.toml: \[webhooks\.") as exc:
            parse_webhooks(text, "hooks.toml", STAGES, env={})
        assert message in str(exc.value)


def test_signatures():
    body = b'[{"eventId": 1}]'
    ts = str(int(time.time() * 1000))
    url = "https://collect.example.com/v1/webhooks/hubspot"
    good = signatures.sign_hubspot_v3("s", "POST", url, body, ts)
    now = time.time() * 1000
    assert signatures.hubspot_v3("s", "POST", url, body, ts, good, now) is None
    assert "does not match" in signatures.hubspot_v3("t", "POST", url, body, ts, good, now)
    old = str(int(now - 6 * 60 * 1000))
    signed_old = signatures.sign_hubspot_v3("s", "POST", url, body, old)
    assert "older than 5 minutes" in signatures.hubspot_v3(
        "s", "POST", url, body, old, signed_old, now
    )
    basic = "Basic " + base64.b64encode(b"funnel:pw").decode()
    assert signatures.basic_auth(basic, "funnel", "pw") is None
    assert "wrong" in signatures.basic_auth(basic, "funnel", "other")
    assert signatures.hmac_sha256("k", body, signatures.sign_hmac_sha256("k", body)) is None
    assert "does not match" in signatures.hmac_sha256(
        "k", body + b" ", signatures.sign_hmac_sha256("k", body)
    )
    assert signatures.shared_secret("a", "a") is None and signatures.shared_secret("a", "b")


class FakeSender:
    """Stands in for Kafka in these unit tests (the integration test uses the broker)."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list = []
        self.fail = fail
        self.pending = 0
        self.ready = True

    async def send(self, messages) -> None:
        if self.fail:
            raise Unavailable("broker away")
        self.sent += list(messages)


def collector(hooks=None, sender=None, sources=None):
    return Collector(
        Settings(
            topics={"deal_stage": "crm.deal-stages", "call": "crm.calls", "visit": "shop.visits"}
        ),
        sources or [],
        hooks or {},
        sender or FakeSender(),
    )


def run(coro):
    return asyncio.run(coro)


def test_webhook_answers(hooks):
    sender = FakeSender()
    c = collector(hooks, sender)
    body = orjson.dumps(CALL)
    signed = {"X-Signature": signatures.sign_hmac_sha256("tel-secret", body)}
    assert run(c.webhook("telephony", Request(body, signed, {}))).status == 200
    assert [m[0] for m in sender.sent] == ["crm.calls"]
    assert run(c.webhook("telephony", Request(body, {}, {}))).status == 401
    assert run(c.webhook("nope", Request(body, signed, {}))).status == 404
    bad = b'{"call_id": "c1"}'
    answer = run(
        c.webhook(
            "telephony",
            Request(bad, {"x-signature": signatures.sign_hmac_sha256("tel-secret", bad)}, {}),
        )
    )
    assert answer.status == 422 and "`to`" in answer.body["rejected"][0]["message"]
    dead = sender.sent[-1]
    assert dead[0] == "funnel.dead-letter" and dead[2] == bad
    assert (("reason", b"unmappable") in dead[3]) and ("topic", b"/v1/webhooks/telephony") in dead[
        3
    ]
    c.sender = FakeSender(fail=True)
    answer = run(c.webhook("telephony", Request(body, signed, {})))
    assert answer.status == 503 and answer.headers["Retry-After"]


def test_a_source_without_its_secret_says_which_variable(monkeypatch):
    monkeypatch.delenv("FUNNEL_HUBSPOT_CLIENT_SECRET", raising=False)
    c = collector(load_webhooks("", STAGES))
    answer = run(c.webhook("hubspot", Request(b"[]", {}, {})))
    assert answer.status == 401 and "FUNNEL_HUBSPOT_CLIENT_SECRET" in answer.body["error"]


def test_batch_answers():
    shop = Source("web", "w" * 16, frozenset({"visit"}))
    sender = FakeSender()
    c = collector(sender=sender, sources=[shop])
    body = orjson.dumps({"batch": [{"type": "visit", "visitor_id": "v"}, {"type": "visit"}]})
    assert run(c.batch(Request(body, {}, {}))).status == 401
    answer = run(c.batch(Request(body, {}, {"key": "w" * 16})))
    assert answer.status == 200 and answer.body["accepted"] == 1
    assert answer.body["rejected"] == [
        {"index": 1, "reason": "missing_field", "message": answer.body["rejected"][0]["message"]}
    ]
    assert [m[0] for m in sender.sent] == ["shop.visits", "funnel.dead-letter"]
    deal = orjson.dumps([{"type": "deal_stage", "deal_id": "d", "stage": "lead"}])
    assert run(c.batch(Request(deal, {"Authorization": "Bearer " + "w" * 16}, {}))).status == 403
    c.sender = FakeSender(fail=True)
    assert run(c.batch(Request(body, {}, {"key": "w" * 16}))).status == 503


def test_lease_body_takes_the_touch_from_the_landing_page():
    body = orjson.loads(
        lease_body(
            orjson.dumps(
                {
                    "visitor_id": "v1",
                    "session_id": "s1",
                    "url": "https://shop.example/?utm_source=google&utm_medium=cpc&utm_campaign="
                    + "c" * 300,
                }
            )
        )
    )
    assert body["channel"] == "paid" and body["source"] == "google"
    assert len(body["campaign"]) == 128 and "url" not in body
    with pytest.raises(ValueError):
        lease_body(b"[")


def test_over_the_pending_bound_a_request_is_refused_before_anything_is_sent():
    from stream.collector.sender import Sender

    sender = Sender(Settings(collector_max_pending=10))
    sender.pending = 5  # events still waiting for Kafka's acknowledgement
    with pytest.raises(Unavailable, match="5 events are waiting for Kafka"):
        asyncio.run(sender.send([("shop.visits", None, b"{}", [])] * 6))
    assert sender.pending == 5 and not sender.ready  # no producer was even started

"""The collector against the real broker: batches counted exactly, rejections
answered and dead-lettered, write keys enforced, and a broker stop in the
middle of a load answered with 503 and recovered by resending, counted once."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time

import orjson
import pytest

from stream.collector.signatures import sign_hmac_sha256, sign_hubspot_v3
from stream.ops.stack import Stack
from stream.tools.demo import Traffic
from tests.integration.test_backlog import assert_exact, new_env, traffic_between
from tests.integration.test_contract import read_topic
from tests.support import (
    CollectorProcess,
    WorkerProcess,
    free_port,
    http_get,
    metric_sum,
    parse_metrics,
    wait_for,
)

pytestmark = pytest.mark.integration

SHOP_KEY = "shop-web-key-0123456789"
CRM_KEY = "crm-key-0123456789abcdef"
KEYS = f"""
[[source]]
name = "shop-web"
key = "{SHOP_KEY}"
types = ["visit", "signup", "cart"]

[[source]]
name = "crm"
key = "{CRM_KEY}"
types = ["call", "deal_stage", "spend"]
"""
BATCH = 250


def collector_env(stack_env, tmp_path, **extra):
    keys = tmp_path / "keys.toml"
    keys.write_text(KEYS)
    return new_env(stack_env, FUNNEL_COLLECTOR_KEYS=str(keys), **extra)


def batches(docs: list[dict]) -> list[tuple[str, list[dict]]]:
    """(write key, events) per request: shop events with the page key, the rest with the CRM's."""
    shop = [d for d in docs if d["type"] in ("visit", "signup", "cart")]
    crm = [d for d in docs if d["type"] not in ("visit", "signup", "cart")]
    out = []
    for key, part in ((SHOP_KEY, shop), (CRM_KEY, crm)):
        out += [(key, part[i : i + BATCH]) for i in range(0, len(part), BATCH)]
    return out


def send(collector: CollectorProcess, key: str, events: list) -> tuple[int, dict, dict]:
    body = orjson.dumps({"batch": events})
    return collector.post("/v1/batch", body, {"Authorization": f"Bearer {key}"})


def test_batches_are_counted_exactly_and_bad_events_answered(stack, stack_env, tmp_path):
    env, settings = collector_env(stack_env, tmp_path)
    now = time.time()
    docs = traffic_between(Traffic(seed=21, rate=1.5, start=now - 40 * 60), now)
    collector = CollectorProcess(env, free_port()).start()
    worker = None
    try:
        bad = [
            {"type": "cart", "visitor_id": "v-bad", "action": "fly"},
            {"type": "visit"},
        ]
        first = next(d for d in docs if d["type"] == "visit")
        status, answer, _ = send(collector, SHOP_KEY, [first, *bad])
        assert status == 200, answer
        assert answer["accepted"] == 1
        assert [(r["index"], r["reason"]) for r in answer["rejected"]] == [
            (1, "invalid_field"),
            (2, "missing_field"),
        ]
        assert "action" in answer["rejected"][0]["message"]
        assert send(collector, "wrong-key", docs[:1])[0] == 401
        deal = next(d for d in docs if d["type"] == "deal_stage")
        status, answer, _ = send(collector, SHOP_KEY, [deal])
        assert status == 403 and "deal_stage" in answer["error"]
        huge = b'{"batch": ["' + b"x" * 600_000 + b'"]}'
        status, answer, _ = collector.post(
            "/v1/batch", huge, {"Authorization": f"Bearer {SHOP_KEY}"}
        )
        assert status == 413 and "500" in answer["error"], answer
        requests = batches([d for d in docs if d is not first])
        for key, events in requests:
            status, answer, _ = send(collector, key, events)
            assert status == 200 and answer == {"accepted": len(events), "rejected": []}
        status, answer, _ = send(collector, *requests[0])  # a client's retry of a batch
        assert status == 200
        metrics = parse_metrics(http_get(collector.url + "/metrics")[1].decode())
        accepted = metric_sum(metrics, "funnel_collector_events_total")
        assert accepted == len(docs) + len(requests[0][1])
        assert metric_sum(metrics, "funnel_collector_rejected_total", reason="missing_field") == 1
        worker = WorkerProcess(env, free_port()).start()
        assert_exact(worker, settings, docs, tmp_path / "events.jsonl")
        dead = asyncio.run(read_topic(settings.kafka_bootstrap, settings.dead_letter_topic, 2))
        reasons = sorted(dict(m.headers)["reason"].decode() for m in dead)
        assert reasons == ["invalid_field", "missing_field"]
        assert {dict(m.headers)["topic"] for m in dead} == {b"/v1/batch"}
    finally:
        collector.stop()
        if worker is not None:
            worker.stop()


class Load(threading.Thread):
    """Posts every batch in order, each until answered 200 (503: wait, send it again).

    It stops after `pause_after` batches until `resume` is set, so that the
    test can stop the broker between two batches: a handful of batches is
    sent in milliseconds, faster than a broker stops.
    """

    def __init__(self, collector: CollectorProcess, requests: list, pause_after: int) -> None:
        super().__init__(daemon=True)
        self.collector = collector
        self.requests = requests
        self.pause_after = pause_after
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.done = 0
        self.statuses: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for key, events in self.requests:
                if self.done == self.pause_after:
                    self.paused.set()
                    self.resume.wait(120)
                while True:
                    try:
                        status, _, headers = send(self.collector, key, events)
                    except OSError:
                        status, headers = 0, {}
                    self.statuses.append(status)
                    if status == 200:
                        break
                    assert status in (0, 503), status
                    time.sleep(min(1.0, float(headers.get("Retry-After", 1))))
                self.done += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_a_broker_stop_mid_load_is_answered_503_and_resent_batches_count_once(
    stack, stack_env, tmp_path
):
    env, settings = collector_env(stack_env, tmp_path, FUNNEL_COLLECTOR_ACK_TIMEOUT="3")
    now = time.time()
    docs = traffic_between(Traffic(seed=22, rate=1.5, start=now - 40 * 60), now)
    requests = batches(docs)
    collector = CollectorProcess(env, free_port()).start()
    stack_api = Stack(settings)
    worker = None
    load = Load(collector, requests, pause_after=len(requests) // 3)
    try:
        load.start()
        assert load.paused.wait(120) and load.error is None, load.error
        stack_api.down(["kafka"])
        load.resume.set()
        outage = time.monotonic()
        while not any(s in (0, 503) for s in load.statuses) and time.monotonic() - outage < 60:
            time.sleep(0.2)
        time.sleep(3)
        stack_api.up(["kafka"])
        load.join(180)
        assert not load.is_alive() and load.error is None, load.error
        refused = sum(1 for s in load.statuses if s != 200)
        assert refused > 0, "the broker stop was not seen by the load"
        print(f"broker stop: {refused} requests answered 503 or refused, then resent")
        worker = WorkerProcess(env, free_port()).start()
        assert_exact(worker, settings, docs, tmp_path / "events.jsonl")
    finally:
        if not stack_api.status()["kafka"]["running"]:
            stack_api.up(["kafka"])
        collector.stop()
        if worker is not None:
            worker.stop()


def test_webhooks_of_each_vendor_reach_kafka_and_unmappable_ones_the_dead_letters(
    stack, stack_env, tmp_path
):
    from tests.unit.test_collector_webhooks import AMOCRM, CALL, ENV, HUBSPOT, PIPEDRIVE_V2

    env, settings = collector_env(stack_env, tmp_path, **ENV)
    collector = CollectorProcess(env, free_port()).start()
    try:
        body = orjson.dumps(PIPEDRIVE_V2)
        basic = "Basic " + base64.b64encode(b"funnel:pd-pass").decode()
        assert collector.post("/v1/webhooks/pipedrive", body, {"Authorization": basic})[0] == 200
        body = orjson.dumps(HUBSPOT)
        ts = str(int(time.time() * 1000))
        url = collector.url + "/v1/webhooks/hubspot"
        signed = {
            "X-HubSpot-Request-Timestamp": ts,
            "X-HubSpot-Signature-v3": sign_hubspot_v3("hs-secret", "POST", url, body, ts),
        }
        assert collector.post("/v1/webhooks/hubspot", body, signed)[0] == 200
        forged = {**signed, "X-HubSpot-Signature-v3": sign_hubspot_v3("x", "POST", url, body, ts)}
        assert collector.post("/v1/webhooks/hubspot", body, forged)[0] == 401
        amo = {"Content-Type": "application/x-www-form-urlencoded"}
        assert collector.post("/v1/webhooks/amocrm?secret=amo-secret", AMOCRM, amo)[0] == 200
        assert collector.post("/v1/webhooks/amocrm?secret=guess", AMOCRM, amo)[0] == 401
        body = orjson.dumps(CALL)
        signature = {"X-Signature": sign_hmac_sha256("tel-secret", body)}
        assert collector.post("/v1/webhooks/telephony", body, signature)[0] == 200
        bad = b'{"call_id": "c-9"}'
        status, answer, _ = collector.post(
            "/v1/webhooks/telephony", bad, {"X-Signature": sign_hmac_sha256("tel-secret", bad)}
        )
        assert status == 422 and "`to`" in answer["rejected"][0]["message"], answer
        deals = asyncio.run(read_topic(settings.kafka_bootstrap, settings.topics["deal_stage"], 3))
        got = sorted((d["deal_id"], d["stage"], d.get("status")) for d in map(value, deals))
        assert got == [("1", "qualified", None), ("1246965", "won", "won"),
                       ("25399013", "30310318", "lost")]  # fmt: skip
        (call,) = map(value, asyncio.run(read_topic(settings.kafka_bootstrap,
                                                    settings.topics["call"], 1)))  # fmt: skip
        assert call["caller_hash"] and "from" not in call and CALL["from"] not in str(call)
        dead = asyncio.run(read_topic(settings.kafka_bootstrap, settings.dead_letter_topic, 1))
        (letter,) = dead
        assert letter.value == bad and dict(letter.headers)["reason"] == b"unmappable"
    finally:
        collector.stop()


def value(message) -> dict:
    return orjson.loads(message.value)


def slow_request(port: int) -> socket.socket:
    """A request whose body never finishes arriving: it holds its slot."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
        + f"Authorization: Bearer {SHOP_KEY}\r\n\r\n".encode()
        + b'{"batch": ['
    )
    return sock


def test_requests_over_the_limit_get_429_not_a_queue(stack, stack_env, tmp_path):
    env, _ = collector_env(stack_env, tmp_path, FUNNEL_COLLECTOR_MAX_REQUESTS="2")
    collector = CollectorProcess(env, free_port()).start()
    visit = {"type": "visit", "visitor_id": "v-429"}
    held = []
    try:
        held = [slow_request(collector.port) for _ in range(2)]
        time.sleep(0.5)  # both are in their handlers, reading
        status, answer, headers = send(collector, SHOP_KEY, [visit])
        assert status == 429 and "2 requests in progress" in answer["error"], answer
        assert headers["Retry-After"] == "1"
        for sock in held:
            sock.close()
        held = []
        wait_for(lambda: send(collector, SHOP_KEY, [visit])[0] == 200, 10, "a free slot")
    finally:
        for sock in held:
            sock.close()
        collector.stop()

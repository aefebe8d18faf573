"""Event contract on the real stack: producer client, dead letters, duplicates, metrics."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections import Counter

import orjson
import pytest

from stream.kafka.producer import FunnelProducer, SyncFunnelProducer
from stream.ops.stack import Stack
from tests.support import (
    REPO,
    WorkerProcess,
    free_port,
    metric_sum,
    settings_for,
    unique_env,
    wait_for,
)

pytestmark = pytest.mark.integration
EXAMPLES = REPO / "schemas" / "examples"
MANIFEST = json.loads((EXAMPLES / "manifest.json").read_text())


def sample_events(rng: random.Random, n: int) -> list[dict]:
    """A mix of all five types, with attribution, dated within the last hour."""
    out = []
    for i in range(n):
        kind = ["visit", "signup", "cart", "call", "deal_stage"][i % 5]
        base = {"channel": rng.choice(["search", "social", "email"]), "region": "north"}
        visitor = f"v{rng.randrange(50)}"
        if kind == "visit":
            out.append({"type": "visit", "visitor_id": visitor, **base})
        elif kind == "signup":
            out.append({"type": "signup", "visitor_id": visitor, "user_id": f"u{i}"})
        elif kind == "cart":
            action = rng.choice(["add", "remove", "checkout", "purchase"])
            out.append({"type": "cart", "visitor_id": visitor, "action": action, "value": 10.5})
        elif kind == "call":
            out.append({"type": "call", "call_id": f"c{i}", "tracking_number": "tn-1"})
        else:
            out.append({"type": "deal_stage", "deal_id": f"d{i % 20}", "stage": "lead"})
    return out


async def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 30):
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        out = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < expect and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            out += [m for msgs in batch.values() for m in msgs]
        # Anything beyond what we expected would be a bug too.
        batch = await consumer.getmany(timeout_ms=1000)
        out += [m for msgs in batch.values() for m in msgs]
        return out
    finally:
        await consumer.stop()


async def send_raw(bootstrap: str, items: list[tuple[str, bytes | None, bytes]]) -> list:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2**20)
    await producer.start()
    try:
        futures = [await producer.send(t, v, key=k) for t, k, v in items]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


def test_invalid_duplicate_and_valid_events_end_where_they_should(stack, stack_env):
    env = unique_env(stack_env)
    settings = settings_for(env)
    asyncio.run(Stack(settings).create_topics())
    worker = WorkerProcess(env, free_port()).start()
    try:
        rng = random.Random(7)
        events = sample_events(rng, 250)

        async def send_valid() -> list[dict]:
            async with FunnelProducer(settings) as producer:
                return [await producer.send(e) for e in events]

        sent = asyncio.run(send_valid())
        # Resend 30 of them byte for byte (a producer retry): counted once.
        resend = rng.sample(sent, 30)
        items = [(settings.topics[e["type"]], None, orjson.dumps(e)) for e in resend]
        # Every invalid vector, on the topic the manifest names.
        invalid = []
        for case in MANIFEST["invalid"]:
            raw = (EXAMPLES / case["file"]).read_bytes()
            topic = settings.topic_prefix + case["topic"]
            invalid.append((topic, raw, case["reason"]))
            items.append((topic, b"k", raw))
        records = asyncio.run(send_raw(settings.kafka_bootstrap, items))
        where = {
            (r.topic, r.partition, r.offset): raw
            for r, (_, _, raw) in zip(records[30:], items[30:], strict=True)
        }

        def counted() -> bool:
            m = worker.metrics()
            return (
                metric_sum(m, "funnel_events_total") == len(events)
                and metric_sum(m, "funnel_events_duplicate_total") == 30
                and metric_sum(m, "funnel_events_rejected_total") == len(invalid)
            )

        wait_for(counted, 60, "worker metrics to count every message")
        metrics = worker.metrics()
        by_type = Counter(e["type"] for e in events)
        for kind, n in by_type.items():
            topic = settings.topics[kind]
            assert metric_sum(metrics, "funnel_events_total", topic=topic, type=kind) == n
        for (topic, _, reason), n in Counter(invalid).items():
            got = metric_sum(metrics, "funnel_events_rejected_total", topic=topic, reason=reason)
            assert got >= n, (topic, reason, got)

        dead = asyncio.run(
            read_topic(settings.kafka_bootstrap, settings.dead_letter_topic, len(invalid))
        )
        assert len(dead) == len(invalid)
        reasons = Counter()
        for msg in dead:
            headers = {k: v.decode() for k, v in msg.headers}
            assert set(headers) == {"reason", "message", "topic", "partition", "offset"}
            source = (headers["topic"], int(headers["partition"]), int(headers["offset"]))
            # The original bytes, from exactly the place the headers name.
            assert where[source] == msg.value
            assert headers["message"]
            reasons[(headers["topic"], headers["reason"])] += 1
        assert reasons == Counter((t, r) for t, _, r in invalid)

        # The worker is still up and ready after all of it.
        assert worker.proc.poll() is None
        assert worker._ready()
    finally:
        worker.stop()


def test_producer_client_fills_envelope_keys_by_entity_and_validates(stack, stack_env):
    from stream.core.events import Rejection

    env = unique_env(stack_env)
    settings = settings_for(env)
    asyncio.run(Stack(settings).create_topics())

    with SyncFunnelProducer(settings) as producer:
        visit = producer.visit("v-42", channel="search", campaign="winter")
        deal = producer.deal_stage("d-9", "won", status="won", amount=100.0)
        with pytest.raises(Rejection) as info:
            producer.cart("v-42", action="steal")
        assert info.value.reason == "invalid_field" and info.value.field == "action"

    assert visit["event_id"] and visit["occurred_at"].endswith("+00:00")
    msgs = asyncio.run(read_topic(settings.kafka_bootstrap, settings.topics["visit"], 1))
    assert [(m.key, orjson.loads(m.value)) for m in msgs] == [(b"v-42", visit)]
    msgs = asyncio.run(read_topic(settings.kafka_bootstrap, settings.topics["deal_stage"], 1))
    assert [m.key for m in msgs] == [b"d-9"] and orjson.loads(msgs[0].value) == deal
    # Nothing reached the cart topic.
    assert asyncio.run(read_topic(settings.kafka_bootstrap, settings.topics["cart"], 0, 2)) == []


def test_funnel_produce_sends_valid_lines_and_reports_invalid_ones(stack, stack_env, tmp_path):
    env = unique_env(stack_env)
    settings = settings_for(env)
    asyncio.run(Stack(settings).create_topics())
    good = [json.loads((EXAMPLES / c["file"]).read_text()) for c in MANIFEST["valid"]]
    lines = [json.dumps(e) for e in good]
    lines.insert(3, '{"type": "visit"}')
    lines.insert(6, "not json")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    result = subprocess.run(
        [sys.executable, "-m", "stream", "produce", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert f"{path}:4: missing_field:" in result.stderr
    assert f"{path}:7: invalid_json:" in result.stderr
    assert f"{len(good)} sent, 2 invalid" in result.stderr
    visits = [e for e in good if e["type"] == "visit"]
    msgs = asyncio.run(read_topic(settings.kafka_bootstrap, settings.topics["visit"], len(visits)))
    assert sorted(orjson.loads(m.value)["event_id"] for m in msgs) == sorted(
        e["event_id"] for e in visits
    )
    assert {m.key.decode() for m in msgs} == {e["visitor_id"] for e in visits}

"""Demo traffic: a small built-in producer of visits until the full demo lands.

Sends realistic-looking visit events at a steady rate, keyed by visitor id,
and shows progress on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
import uuid
from datetime import UTC, datetime

import orjson

from stream.config import Settings

CHANNELS = ["search", "social", "email", "direct", "paid"]
REGIONS = ["north", "south", "east", "west"]
DEVICES = ["desktop", "mobile", "tablet"]


def visit_event(rng: random.Random, now: datetime) -> dict:
    visitor = f"v{rng.randrange(1_000_000):06d}"
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "type": "visit",
        "occurred_at": now.isoformat(timespec="milliseconds"),
        "visitor_id": visitor,
        "session_id": f"s{rng.randrange(10**9)}",
        "channel": rng.choice(CHANNELS),
        "region": rng.choice(REGIONS),
        "device": rng.choice(DEVICES),
        "url": "/",
    }


async def produce(settings: Settings, rate: float, duration: float, seed: int) -> int:
    from aiokafka import AIOKafkaProducer

    rng = random.Random(seed)
    topic = settings.topics["visit"]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        while duration <= 0 or time.monotonic() - started < duration:
            due = int((time.monotonic() - started) * rate)
            while sent < due:
                event = visit_event(rng, datetime.now(UTC))
                await producer.send(topic, orjson.dumps(event), key=event["visitor_id"].encode())
                sent += 1
            if sent and sent % max(1, int(rate) * 5) == 0:
                print(f"\rdemo: {sent} events sent to {topic}", end="", file=sys.stderr, flush=True)
            await asyncio.sleep(0.05)
        await producer.flush()
    finally:
        await producer.stop()
    print(f"\rdemo: {sent} events sent to {topic}", file=sys.stderr, flush=True)
    return sent


def run_demo(settings: Settings, rate: float, duration: float, seed: int) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(produce(settings, rate, duration, seed))
    return 0

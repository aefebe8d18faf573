"""A small client for shops and CRMs to send events (DESIGN.md section 3).

    async with FunnelProducer() as producer:
        await producer.visit(visitor_id="v1", channel="search")
        await producer.cart(visitor_id="v1", action="add", value=19.9, currency="EUR")

It fills ``event_id`` and ``occurred_at`` when missing, validates with the
same decoder the worker uses (so an invalid event raises ``Rejection`` here
instead of landing on the dead-letter topic), picks the topic by type and keys
the message by the entity. ``SyncFunnelProducer`` offers the same calls to
code without an event loop.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from stream.config import Settings
from stream.core.events import AnyEvent, decode, entity_of
from stream.kafka.client import client_options, start_producer

T = TypeVar("T")


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def complete(event: dict[str, Any]) -> dict[str, Any]:
    """Fill the envelope fields a producer may leave out; drop None values."""
    out = {k: v for k, v in event.items() if v is not None}
    out.setdefault("event_id", str(uuid.uuid4()))
    out.setdefault("occurred_at", now_rfc3339())
    return out


class FunnelProducer:
    """Async producer of validated funnel events (aiokafka underneath)."""

    def __init__(
        self, settings: Settings | None = None, check: bool = True, **producer_options: Any
    ) -> None:
        """``check``: at start, fail with MissingTopics if an input topic does not exist."""
        self.settings = settings or Settings.from_env()
        self.check = check
        self.options = {
            **client_options(self.settings),
            "enable_idempotence": True,
            "linger_ms": 5,
            **producer_options,
        }
        self._producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self.options)
        await start_producer(self.settings, producer, self.check)
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> FunnelProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def prepare(self, event: dict[str, Any]) -> tuple[str, bytes, bytes, AnyEvent]:
        """Validate one event; return (topic, key, value, decoded) or raise Rejection."""
        value = orjson.dumps(complete(event))
        decoded = decode(value)
        return self.settings.topics[decoded.type], entity_of(decoded).encode(), value, decoded

    async def send(self, event: dict[str, Any], wait: bool = True) -> dict[str, Any]:
        """Validate and send one event; returns it with the filled fields.

        With ``wait`` the call returns once the broker has acknowledged it;
        without, once it is queued (call ``flush`` before exiting).
        """
        if self._producer is None:
            raise RuntimeError("FunnelProducer is not started (use `async with` or start())")
        topic, key, value, _ = self.prepare(event)
        future = await self._producer.send(topic, value, key=key)
        if wait:
            await future
        return orjson.loads(value)

    async def send_raw(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future:
        """Send pre-validated bytes; returns the delivery future."""
        return await self._producer.send(topic, value, key=key)

    async def flush(self) -> None:
        await self._producer.flush()

    async def visit(self, visitor_id: str, **fields: Any) -> dict[str, Any]:
        return await self.send({"type": "visit", "visitor_id": visitor_id, **fields})

    async def signup(self, visitor_id: str, user_id: str, **fields: Any) -> dict[str, Any]:
        return await self.send(
            {"type": "signup", "visitor_id": visitor_id, "user_id": user_id, **fields}
        )

    async def cart(self, visitor_id: str, action: str, **fields: Any) -> dict[str, Any]:
        return await self.send(
            {"type": "cart", "visitor_id": visitor_id, "action": action, **fields}
        )

    async def call(self, call_id: str, tracking_number: str, **fields: Any) -> dict[str, Any]:
        return await self.send(
            {"type": "call", "call_id": call_id, "tracking_number": tracking_number, **fields}
        )

    async def deal_stage(self, deal_id: str, stage: str, **fields: Any) -> dict[str, Any]:
        return await self.send({"type": "deal_stage", "deal_id": deal_id, "stage": stage, **fields})

    async def spend(
        self, channel: str, day: str, cost: float, currency: str, **fields: Any
    ) -> dict[str, Any]:
        doc = {"type": "spend", "channel": channel, "day": day, "cost": cost, "currency": currency}
        return await self.send({**doc, **fields})


class SyncFunnelProducer:
    """Blocking wrapper: runs a FunnelProducer on an event loop in a daemon thread."""

    def __init__(self, settings: Settings | None = None, **producer_options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._async = FunnelProducer(settings, **producer_options)
        self._run(self._async.start())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._async.stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> SyncFunnelProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, event: dict[str, Any]) -> dict[str, Any]:
        return self._run(self._async.send(event))

    def visit(self, visitor_id: str, **fields: Any) -> dict[str, Any]:
        return self._run(self._async.visit(visitor_id, **fields))

    def signup(self, visitor_id: str, user_id: str, **fields: Any) -> dict[str, Any]:
        return self._run(self._async.signup(visitor_id, user_id, **fields))

    def cart(self, visitor_id: str, action: str, **fields: Any) -> dict[str, Any]:
        return self._run(self._async.cart(visitor_id, action, **fields))

    def call(self, call_id: str, tracking_number: str, **fields: Any) -> dict[str, Any]:
        return self._run(self._async.call(call_id, tracking_number, **fields))

    def deal_stage(self, deal_id: str, stage: str, **fields: Any) -> dict[str, Any]:
        return self._run(self._async.deal_stage(deal_id, stage, **fields))

    def spend(self, channel: str, day: str, cost: float, currency: str, **fields: Any) -> dict:
        return self._run(self._async.spend(channel, day, cost, currency, **fields))

"""Faust's per-record fast paths (stream/faust_fixes/fast_paths.py): same results, fewer tasks."""

from __future__ import annotations

import asyncio

import pytest
from mode import Service
from mode.utils.locks import Event

from stream.faust_fixes.fast_paths import fetch_wait_first, speed_up_faust, wait_for


class FakeConsumer(Service):
    """What the fetch loop's wait_first uses of a Faust consumer: a suspend flag."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()
        self.tasks_seen = 0

    async def wait_first(self, *coros, timeout=None):  # noqa: ANN001, ANN002, ANN201
        return await fetch_wait_first(self, coros, timeout, Service.wait_first)


def test_wait_for_returns_a_ready_record_without_a_new_task() -> None:
    async def main() -> tuple[str, int]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        queue.put_nowait("record")
        before = len(asyncio.all_tasks())
        got = await wait_for(queue.get(), timeout=5.0)
        return got, len(asyncio.all_tasks()) - before

    got, new_tasks = asyncio.run(main())
    assert got == "record"
    assert new_tasks == 0


def test_wait_for_times_out_as_asyncio_wait_for_does() -> None:
    async def main() -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        await wait_for(queue.get(), timeout=0.05)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(main())


def test_wait_for_waits_for_a_record_that_arrives_later() -> None:
    async def main() -> str:
        queue: asyncio.Queue[str] = asyncio.Queue()
        asyncio.get_running_loop().call_later(0.05, queue.put_nowait, "late")
        return await wait_for(queue.get(), timeout=5.0)

    assert asyncio.run(main()) == "late"


def test_a_callback_that_does_not_wait_runs_inline() -> None:
    async def main() -> tuple[list, int]:
        consumer = FakeConsumer()
        delivered = []

        async def callback(message: str) -> str:
            delivered.append(message)
            return "ok"

        created = 0
        original = asyncio.ensure_future

        def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            nonlocal created
            created += 1
            return original(*args, **kwargs)

        asyncio.ensure_future = counting
        try:
            for i in range(3):
                result = await consumer.wait_first(callback(f"m{i}"), consumer.suspend_flow.wait())
                assert result.results == ["ok"]
        finally:
            asyncio.ensure_future = original
        return delivered, created

    delivered, created = asyncio.run(main())
    assert delivered == ["m0", "m1", "m2"]
    assert created == 0


def test_a_callback_that_waits_is_finished_with_its_value() -> None:
    async def main() -> list:
        consumer = FakeConsumer()
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        queue.put_nowait("full")

        async def callback(message: str) -> str:
            await queue.put(message)  # waits: the buffer is full
            return message

        asyncio.get_running_loop().call_later(0.05, queue.get_nowait)
        result = await consumer.wait_first(callback("m1"), consumer.suspend_flow.wait())
        assert result.results == ["m1"]
        return [queue.get_nowait()]

    assert asyncio.run(main()) == ["m1"]


def test_a_waiting_callback_is_cancelled_when_the_flow_is_suspended() -> None:
    async def main() -> tuple[list, bool]:
        consumer = FakeConsumer()
        gate = asyncio.Event()
        seen = []

        async def callback(message: str) -> None:
            try:
                await gate.wait()
                seen.append(("delivered", message))
            except asyncio.CancelledError:
                seen.append(("cancelled", message))
                raise

        asyncio.get_running_loop().call_later(0.05, consumer.suspend_flow.set)
        suspended = consumer.suspend_flow.wait()
        result = await consumer.wait_first(callback("m1"), suspended)
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.sleep(0.01)
        return seen, result.done == [suspended]

    seen, suspended_won = asyncio.run(main())
    assert seen == [("cancelled", "m1")]
    assert suspended_won


def test_a_callback_that_fails_at_once_raises() -> None:
    async def main() -> None:
        consumer = FakeConsumer()

        async def callback(message: str) -> None:
            raise ValueError(message)

        await consumer.wait_first(callback("bad"), consumer.suspend_flow.wait())

    with pytest.raises(ValueError, match="bad"):
        asyncio.run(main())


def test_installed_once_on_fausts_consumer_and_recovery() -> None:
    from faust.tables import recovery
    from faust.transport.consumer import Consumer

    speed_up_faust()
    speed_up_faust()  # idempotent
    assert recovery.asyncio.wait_for is wait_for
    assert recovery.asyncio.Event is asyncio.Event  # the rest is asyncio's
    assert asyncio.wait_for is not wait_for
    assert Consumer.wait_first.funnel_fixed


def test_raw_schema_makes_the_event_fausts_raw_schema_makes() -> None:
    """faust_fixes/raw_schema.py: the same key, value, headers and message as Faust's
    own decode of a raw topic, for keys and values present and absent."""
    import faust
    from faust.types import TP
    from faust.types.tuples import Message

    from stream.faust_fixes.raw_schema import RawSchema

    app = faust.App("raw-schema-test", broker="memory://")
    theirs = faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    ).compile(app)
    ours = RawSchema().compile(app)

    def message(key: bytes | None, value: bytes | None) -> Message:
        headers = [("funnel-source", b"shop.visits:3")]
        return Message("t", 3, 42, 1.0, 0, headers, key, value, None, tp=TP("t", 3))

    async def both(msg: Message) -> tuple:
        return await theirs(msg, propagate=True), await ours(msg, propagate=True)

    for key, value in [(b"v1", b'{"type":"visit"}'), (None, b"x"), (b"k", None), (None, None)]:
        msg = message(key, value)
        a, b = asyncio.run(both(msg))
        assert type(a) is type(b)
        assert (a.key, a.value, a.headers, a.message) == (b.key, b.value, b.headers, b.message)
        assert (b.key, b.value) == (key, value)

"""A fenced transaction drops every transaction and rejoins; the worker does not exit.

stream/faust_fixes/fenced_transactions.py (the upstream crash and what is
reached into), stream/worker/fencing.py (what the worker does) and
stream/worker/supervision.py (a fenced batch is dropped, not raised).
"""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace

import pytest
from aiokafka.errors import ProducerFenced
from faust.types.tuples import ConsumerMessage

from stream.faust_fixes import apply_all, commit_monitor, fenced_transactions
from stream.faust_fixes.batch_sends import TransactionGone
from stream.worker import fencing, supervision, transactions


class FakeTransaction:
    """An aiokafka transactional producer: commits, or is fenced on commit."""

    def __init__(self, fenced: bool = False) -> None:
        self.fenced, self.calls, self.stopped = fenced, [], False

    async def send_offsets_to_transaction(self, offsets, group_id):  # noqa: ANN001, ANN201
        self.calls.append("offsets")

    async def commit_transaction(self):  # noqa: ANN201
        if self.fenced:
            raise ProducerFenced()
        self.calls.append("commit")

    async def begin_transaction(self):  # noqa: ANN201
        self.calls.append("begin")

    async def abort_transaction(self):  # noqa: ANN201
        if self.fenced:
            raise ProducerFenced()
        self.calls.append("abort")

    async def stop(self):  # noqa: ANN201
        self.stopped = True


def faust_producer(**transactions_: FakeTransaction) -> SimpleNamespace:
    return SimpleNamespace(
        _transaction_producers=dict(transactions_),
        _trn_locks={tid: asyncio.Lock() for tid in transactions_},
    )


@pytest.fixture(autouse=True)
def fresh():
    """No handler and an assignment in place before and after each test."""
    fenced_transactions._handler.clear()
    transactions.assignment_done()
    yield
    fenced_transactions._handler.clear()
    transactions.assignment_done()


def test_upstream_faust_crashes_the_app_on_a_fenced_commit() -> None:
    source = inspect.getsource(commit_monitor.upstream())  # Faust's TransactionManager.commit
    assert "except ProducerFenced" in source and "self.app.crash" in source


def test_a_fenced_commit_goes_to_the_handler_and_the_others_commit() -> None:
    apply_all()
    from faust.transport.drivers.aiokafka import Producer

    seen = []

    async def handler(tid: str, exc: BaseException) -> None:
        seen.append((tid, type(exc).__name__))

    fenced_transactions.on_fenced(handler)
    ok1, bad, ok2 = FakeTransaction(), FakeTransaction(fenced=True), FakeTransaction()
    producer = faust_producer(t1=ok1, t2=bad, t3=ok2)
    offsets = {"t1": {}, "t2": {}, "t3": {}}
    asyncio.run(Producer.commit_transactions(producer, offsets, "g", True))
    assert seen == [("t2", "ProducerFenced")]
    assert ok1.calls == ok2.calls == ["offsets", "commit", "begin"]


def test_without_a_handler_a_fenced_commit_is_raised_as_before() -> None:
    apply_all()
    from faust.transport.drivers.aiokafka import Producer

    producer = faust_producer(t1=FakeTransaction(fenced=True))
    with pytest.raises(ProducerFenced):
        asyncio.run(Producer.commit_transactions(producer, {"t1": {}}, "g", True))


def test_drop_transactions_aborts_stops_and_forgets_every_producer() -> None:
    a, fenced = FakeTransaction(), FakeTransaction(fenced=True)
    producer = faust_producer(a=a, b=fenced)
    dropped = asyncio.run(fenced_transactions.drop_transactions(producer))
    assert sorted(dropped) == ["a", "b"]
    assert a.calls == ["abort"]  # its open transaction ended now, not at the timeout
    assert a.stopped and fenced.stopped and producer._transaction_producers == {}


def worker_context(producer: SimpleNamespace) -> tuple[SimpleNamespace, list]:
    rejoins: list = []
    coordinator = SimpleNamespace(request_rejoin=lambda: rejoins.append(1))
    aio = SimpleNamespace(_coordinator=coordinator)
    consumer = SimpleNamespace(_thread=SimpleNamespace(_ensure_consumer=lambda: aio))
    return SimpleNamespace(app=SimpleNamespace(producer=producer, consumer=consumer)), rejoins


def test_the_worker_drops_everything_and_rejoins_once_per_fence() -> None:
    producer = faust_producer(a=FakeTransaction(), b=FakeTransaction())
    ctx, rejoins = worker_context(producer)

    async def two_fences() -> bool:
        transactions.begin_batch()
        await fencing.handle_fence(ctx, "a", ProducerFenced())
        producer._transaction_producers["c"] = FakeTransaction()  # not dropped again
        producer._trn_locks["c"] = asyncio.Lock()
        await fencing.handle_fence(ctx, "b", ProducerFenced())
        return transactions.batch_is_stale()

    assert asyncio.run(two_fences()) is True  # the running batch may not write any more
    assert rejoins == [1]
    assert list(producer._transaction_producers) == ["c"]
    assert transactions.awaiting_assignment()


class Event:
    def __init__(self, offset: int) -> None:
        self.message = ConsumerMessage("t", 0, offset, 0.0, 0, [], b"k", b"v", None)


def run_batch(error: BaseException, handler=None) -> list[Event]:  # noqa: ANN001
    """The batch's events, after ``unless_revoked`` ran it into ``error``."""
    batch = [Event(1), Event(2)]

    async def handle() -> None:
        raise error

    async def main() -> None:
        if handler is not None:
            fenced_transactions.on_fenced(handler)
        await supervision.unless_revoked("count", batch, handle())

    asyncio.run(main())
    return batch


@pytest.mark.parametrize("error", [ProducerFenced(), TransactionGone("no producer")])
def test_a_fenced_batch_is_dropped_and_handed_to_the_worker(error: BaseException) -> None:
    seen = []

    async def handler(tid: str, exc: BaseException) -> None:
        seen.append(tid)

    batch = run_batch(error, handler)
    assert seen == ["batch of count"]
    # Dropped: take_events' ack of it must not reach the consumer (never_ack).
    assert all(event.message.acked for event in batch)


def test_a_fenced_batch_without_a_handler_still_stops_the_worker() -> None:
    with pytest.raises(ProducerFenced):
        run_batch(ProducerFenced())


def test_any_other_batch_failure_still_stops_the_worker() -> None:
    async def handler(tid: str, exc: BaseException) -> None:
        raise AssertionError("not a fence")

    with pytest.raises(ValueError):
        run_batch(ValueError("a bug"), handler)


def test_a_batch_cancelled_by_a_stop_before_it_finished_is_never_acked() -> None:
    """Cancelled while it enriches (a stop, a leave), the agent's take_events would
    ack the whole batch once its generator is closed, before the stop's commit."""
    batch = [Event(1), Event(2)]

    async def handle() -> None:
        await asyncio.sleep(10)  # route(): Redis, a refetch

    async def main() -> None:
        task = asyncio.create_task(supervision.unless_revoked("attribute", batch, handle()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert all(event.message.acked for event in batch)


def test_a_stopped_agent_loop_acks_its_unfinished_batch_upstream() -> None:
    """Why: an async generator whose consumer was cancelled in its loop body runs its
    ``finally`` (take_events' acks) when asyncio closes it, before the loop goes on."""
    log: list[str] = []

    async def take_events():  # noqa: ANN202 - the shape of Stream.take_events
        try:
            yield [1, 2]
        finally:
            log.append("acked")

    async def agent() -> None:
        async for _ in take_events():
            await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(agent())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.01)
        log.append("stop's commit")

    asyncio.run(main())
    assert log == ["acked", "stop's commit"]

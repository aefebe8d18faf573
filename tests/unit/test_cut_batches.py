"""A batch cut between its first send and its acks keeps every commit out until the
open transactions are ended (worker/cut_batches.py), and its events are never
acked (faust_fixes/failed_batch_acks.never_ack)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from faust.types.tuples import ConsumerMessage

from stream.faust_fixes.failed_batch_acks import never_ack
from stream.worker import cut_batches
from stream.worker.supervision import to_the_end
from stream.worker.transactions import CommitGate


@pytest.fixture(autouse=True)
def clean_slate() -> None:
    cut_batches.transactions_ended()


def in_own_context(fn) -> None:  # noqa: ANN001 - each batch runs in its agent's task
    contextvars.copy_context().run(fn)


def test_a_batch_that_sent_and_did_not_ack_is_cut() -> None:
    def batch() -> None:
        cut_batches.begin()
        cut_batches.sending()
        cut_batches.left()

    in_own_context(batch)
    assert cut_batches.holds_cut_writes()
    cut_batches.transactions_ended()
    assert not cut_batches.holds_cut_writes()


@pytest.mark.parametrize(
    "steps",
    [
        ["begin", "left"],  # dropped before it sent anything
        ["begin", "sending", "finished", "left"],  # whole: sends and acks
        ["begin", "sending", "ended", "left"],  # its sends were aborted meanwhile
    ],
)
def test_batches_that_leave_nothing_half_done_are_not_cut(steps: list[str]) -> None:
    do = {
        "begin": cut_batches.begin,
        "sending": cut_batches.sending,
        "finished": cut_batches.finished,
        "ended": cut_batches.transactions_ended,
        "left": cut_batches.left,
    }

    def batch() -> None:
        for step in steps:
            do[step]()

    in_own_context(batch)
    assert not cut_batches.holds_cut_writes()


def test_the_gate_lets_no_commit_run_after_a_batch_was_cut_while_it_waited() -> None:
    """The fence scenario's race: a commit waits for a writing batch; the batch is cut
    after its first sends (in to_the_end's own task); the commit must not run."""

    async def main() -> list[bool]:
        gate = CommitGate()
        allowed: list[bool] = []
        sent = asyncio.Event()

        async def writes() -> None:
            cut_batches.sending()
            sent.set()
            await asyncio.sleep(0.02)
            raise RuntimeError("partitions revoked while the batch was being written")

        async def batch() -> None:
            cut_batches.begin()
            with pytest.raises(RuntimeError):
                async with gate.batch():
                    await to_the_end(writes())

        async def committer() -> None:
            await sent.wait()
            async with gate.commit() as ok:
                allowed.append(ok)
            cut_batches.transactions_ended()  # the fence's drop of every transaction
            async with gate.commit() as ok:
                allowed.append(ok)

        await asyncio.gather(batch(), committer())
        return allowed, gate

    allowed, gate = asyncio.run(main())
    assert allowed == [False, True]
    assert (gate.skipped, gate.commits) == (1, 1)


def test_a_whole_batch_lets_the_commit_run() -> None:
    async def main() -> bool:
        gate = CommitGate()

        async def batch() -> None:
            cut_batches.begin()
            async with gate.batch():
                cut_batches.sending()
                await asyncio.sleep(0.01)
                cut_batches.finished()

        task = asyncio.create_task(batch())
        await asyncio.sleep(0)
        async with gate.commit() as ok:
            await task
            return ok

    assert asyncio.run(main()) is True


def test_a_dropped_batch_is_never_acked_to_the_consumer() -> None:
    """take_events acks the batch it yielded when the agent asks for the next one;
    after never_ack the consumer records none of its offsets."""
    acked: list[int] = []

    class Consumer:
        def ack(self, message: ConsumerMessage) -> bool:
            acked.append(message.offset)
            return True

    class Event:
        def __init__(self, offset: int) -> None:
            self.message = ConsumerMessage("t", 0, offset, 0.0, 0, [], b"k", b"v", None)

    consumer = Consumer()
    kept, dropped = Event(1), Event(2)
    for event in (kept, dropped):
        event.message.incref()
    never_ack([dropped])
    assert kept.message.ack(consumer) is True
    assert dropped.message.ack(consumer) is False
    assert acked == [1]


def test_a_batch_made_stale_by_a_revoke_acks_nothing() -> None:
    """A batch with nothing to write never meets the revoke check in its sends;
    its acks would land in the next assignment's offsets."""
    from stream.worker import transactions

    acked: list[int] = []

    class Stream:
        async def ack(self, event: int) -> bool:
            acked.append(event)
            return True

    async def batch(revoke_first: bool) -> None:
        transactions.begin_batch()
        if revoke_first:
            transactions.new_generation()  # the revoke, while the batch ran
        await transactions.ack_all(Stream(), [1, 2])

    asyncio.run(batch(revoke_first=False))
    assert acked == [1, 2]
    with pytest.raises(transactions.Revoked):
        asyncio.run(batch(revoke_first=True))
    transactions.assignment_done()
    assert acked == [1, 2]

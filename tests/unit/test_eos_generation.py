"""A batch that began before a revoke may not write (stream/worker/transactions.py)."""

from __future__ import annotations

import asyncio

import pytest

from stream.worker import transactions


@pytest.fixture(autouse=True)
def assigned():
    """Each test starts under an assignment (the module keeps the state globally)."""
    transactions.assignment_done()
    yield
    transactions.assignment_done()


def test_a_batch_begun_before_a_revoke_is_stopped_and_a_new_one_writes():
    async def batch(revoke_midway: bool) -> list[str]:
        done = []
        transactions.begin_batch()
        transactions.check_not_revoked()
        done.append("first write")
        if revoke_midway:
            transactions.new_generation()
        transactions.check_not_revoked()
        done.append("second write")
        return done

    with pytest.raises(transactions.Revoked):
        asyncio.run(batch(revoke_midway=True))
    transactions.assignment_done()
    assert asyncio.run(batch(revoke_midway=False)) == ["first write", "second write"]


def test_code_outside_a_batch_is_never_stopped():
    async def outside() -> bool:
        transactions.new_generation()
        transactions.check_not_revoked()  # no batch began in this task: nothing to stop
        return transactions.batch_is_stale()

    assert asyncio.run(outside()) is False
    transactions.assignment_done()


def test_each_agent_task_has_its_own_batch():
    async def main() -> tuple[bool, bool]:
        began = asyncio.Event()
        revoked = asyncio.Event()

        async def old_batch() -> bool:
            transactions.begin_batch()
            began.set()
            await revoked.wait()
            return transactions.batch_is_stale()

        async def revoke_then_new_batch() -> bool:
            await began.wait()
            transactions.new_generation()
            revoked.set()
            transactions.assignment_done()
            transactions.begin_batch()
            return transactions.batch_is_stale()

        return tuple(await asyncio.gather(old_batch(), revoke_then_new_batch()))

    assert asyncio.run(main()) == (True, False)


def test_a_batch_begun_between_a_revoke_and_the_next_assignment_may_not_write():
    async def batch() -> bool:
        transactions.begin_batch()
        return transactions.batch_is_stale()

    transactions.new_generation()  # revoked: Faust may still hand over buffered events
    assert asyncio.run(batch()) is True
    transactions.assignment_done()
    assert asyncio.run(batch()) is False

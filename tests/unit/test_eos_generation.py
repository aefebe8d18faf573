"""A batch that began before a revoke may not write (stream/worker/transactions.py)."""

from __future__ import annotations

import asyncio

import pytest

from stream.worker import transactions as eos


def test_a_batch_begun_before_a_revoke_is_stopped_and_a_new_one_writes():
    async def batch(revoke_midway: bool) -> list[str]:
        done = []
        eos.begin_batch()
        eos.check_not_revoked()
        done.append("first write")
        if revoke_midway:
            eos.new_generation()
        eos.check_not_revoked()
        done.append("second write")
        return done

    with pytest.raises(eos.Revoked):
        asyncio.run(batch(revoke_midway=True))
    assert asyncio.run(batch(revoke_midway=False)) == ["first write", "second write"]


def test_code_outside_a_batch_is_never_stopped():
    async def outside() -> bool:
        eos.new_generation()
        eos.check_not_revoked()  # no batch began in this task: nothing to stop
        return eos.batch_is_stale()

    assert asyncio.run(outside()) is False


def test_each_agent_task_has_its_own_batch():
    async def main() -> tuple[bool, bool]:
        began = asyncio.Event()
        revoked = asyncio.Event()

        async def old_batch() -> bool:
            eos.begin_batch()
            began.set()
            await revoked.wait()
            return eos.batch_is_stale()

        async def revoke_then_new_batch() -> bool:
            await began.wait()
            eos.new_generation()
            revoked.set()
            eos.begin_batch()
            return eos.batch_is_stale()

        return tuple(await asyncio.gather(old_batch(), revoke_then_new_batch()))

    assert asyncio.run(main()) == (True, False)

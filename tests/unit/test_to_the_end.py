"""A batch's writes and acks run to their end when the agent is cancelled (a
worker stopping): cut between two writes, part of the batch's state was
committed with all of its offsets, and its events were lost."""

from __future__ import annotations

import asyncio

import pytest

from stream.worker.supervision import to_the_end


async def writes(done: list[str]) -> None:
    for name in ("seen", "minutes", "journeys", "counters", "acks"):
        await asyncio.sleep(0.01)
        done.append(name)


def test_a_cancelled_agent_finishes_the_batch_then_stops():
    done: list[str] = []

    async def agent() -> None:
        await to_the_end(writes(done))

    async def main() -> None:
        task = asyncio.create_task(agent())
        await asyncio.sleep(0.015)  # after the first write
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # cancelled twice while finishing: still to the end
        done.clear()
        task = asyncio.create_task(agent())
        for _ in range(3):
            await asyncio.sleep(0.012)
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert done == ["seen", "minutes", "journeys", "counters", "acks"]


def test_errors_of_the_work_propagate_and_a_clean_run_returns():
    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("broker says no")

    with pytest.raises(ValueError, match="broker says no"):
        asyncio.run(to_the_end(failing()))
    done: list[str] = []
    asyncio.run(to_the_end(writes(done)))
    assert done[-1] == "acks"

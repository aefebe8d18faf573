"""Commits are never starved by agents writing batches back to back, and never
run while a batch is writing (worker/transactions.py CommitGate)."""

from __future__ import annotations

import asyncio

from stream.worker.transactions import CommitGate


def test_back_to_back_batches_of_three_agents_do_not_starve_the_committer() -> None:
    async def main() -> tuple[int, list[str]]:
        gate = CommitGate()
        stop = asyncio.Event()
        errors: list[str] = []
        commits = 0

        async def agent() -> None:
            while not stop.is_set():
                async with gate.batch():
                    if gate.committing:
                        errors.append("a batch wrote during a commit")
                    await asyncio.sleep(0.003)  # awaiting its sends
                    await asyncio.sleep(0)

        async def committer() -> None:
            nonlocal commits
            while not stop.is_set():
                await asyncio.sleep(0.01)  # the commit interval
                async with gate.commit():
                    if gate.writing:
                        errors.append("a commit ran while a batch wrote")
                    commits += 1
                    await asyncio.sleep(0.002)

        tasks = [asyncio.create_task(agent()) for _ in range(3)]
        tasks.append(asyncio.create_task(committer()))
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
        return commits, errors

    commits, errors = asyncio.run(main())
    assert errors == []
    assert commits >= 20  # about one per interval (0.5 s / (10 ms + a batch)), none skipped


def test_the_gate_adds_up_commits_their_time_and_the_time_batches_waited() -> None:
    async def main() -> CommitGate:
        gate = CommitGate()

        async def commit() -> None:
            async with gate.commit():
                await asyncio.sleep(0.05)

        async def batch() -> None:
            await asyncio.sleep(0.01)  # arrives while the commit runs
            async with gate.batch():
                pass

        await asyncio.gather(commit(), batch())
        await commit()
        return gate

    gate = asyncio.run(main())
    assert gate.commits == 2
    assert 0.1 <= gate.committing_s < 0.5
    assert 0.03 <= gate.held_s < gate.committing_s  # waited for the first commit only

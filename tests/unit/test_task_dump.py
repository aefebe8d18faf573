"""SIGUSR1 logs what every task of the worker awaits."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from stream.worker import task_dump


def test_sigusr1_logs_every_tasks_await(caplog) -> None:
    async def waiting_for_the_event(event: asyncio.Event) -> None:
        await event.wait()

    async def run() -> None:
        event = asyncio.Event()
        task = asyncio.create_task(waiting_for_the_event(event), name="stuck-one")
        await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.05)
        event.set()
        await task

    previous = signal.getsignal(signal.SIGUSR1)
    task_dump.install()
    try:
        with caplog.at_level(logging.WARNING, logger="stream.worker"):
            asyncio.run(run())
    finally:
        signal.signal(signal.SIGUSR1, previous)
    (record,) = [r for r in caplog.records if r.getMessage() == "task dump (SIGUSR1)"]
    stuck = [s for s in record.stacks if s.startswith("stuck-one:")]
    assert stuck and "waiting_for_the_event" in stuck[0] and "event.wait()" in stuck[0]


def test_no_running_loop_no_stacks() -> None:
    assert task_dump.task_stacks() == []

"""``kill -USR1 <worker pid>``: log what every asyncio task of the worker awaits.

A worker that stops making progress without an error (a partition whose
committed offset stands still) shows nothing in a thread dump: its event loop
sits in ``select`` while some coroutine waits. The dump logs each task's
coroutine stack at warning level, so the log says which await it is.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal

log = logging.getLogger("stream.worker")


def task_stacks(limit: int = 12) -> list[str]:
    """Each pending task's name and coroutine stack, innermost frame last (none
    while no event loop runs)."""
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:
        return []
    out = []
    for task in tasks:
        buf = io.StringIO()
        task.print_stack(limit=limit, file=buf)
        out.append(f"{task.get_name()}: {buf.getvalue()}")
    return sorted(out)


def log_task_stacks() -> None:
    stacks = task_stacks()
    log.warning("task dump (SIGUSR1)", extra={"tasks": len(stacks), "stacks": stacks})


def install() -> None:
    """Log the task stacks on SIGUSR1 (the handler runs in the main thread, whose
    running loop is the worker's)."""
    signal.signal(signal.SIGUSR1, lambda signum, frame: log_task_stacks())

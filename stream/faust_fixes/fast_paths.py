"""Cut Faust's per-record overhead in its fetch loop and its table recovery.

Both loops wrap *every record* in asyncio machinery that only matters when a
record has to wait. A py-spy profile of one worker (``python -m bench.scale
--profile``) and of a restarted worker (``python -m bench.recovery
--profile``) showed it as a large share of the CPU:

- the fetch loop hands each message to the streams with
  ``wait_first(callback(message), suspend_flow.wait())``: four tasks (the
  callback, the suspend flag, the service's stopped and crashed flags) and an
  ``asyncio.wait`` per message, for a callback that almost always finishes at
  once (it puts the message in a stream's buffer);
- the recovery loop takes each changelog record with
  ``asyncio.wait_for(queue.get(), timeout=5.0)``, a new task per record on
  Python 3.11.

The fast paths keep the semantics: the callback's first step runs inline and,
if it has to wait, the rest of it races the suspend flag exactly as before;
``wait_for`` is Python 3.12's own (the awaitable runs under
``asyncio.timeout`` in the caller's task).

Patches ``faust.transport.consumer.Consumer.wait_first`` and the ``asyncio``
that ``faust.tables.recovery`` sees (faust-streaming 0.15.3); the slowness of
a naive Faust agent is faust-streaming/faust#563 (DESIGN.md section 7).

Delete when: Faust's fetch loop stops wrapping each record in ``wait_first``
and recovery runs on Python >= 3.12 (whose ``wait_for`` needs no task);
tests/unit/test_faust_speed.py and test_faust_fixes.py show both.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Coroutine, Generator
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """``asyncio.wait_for`` without a task per call (as in Python 3.12)."""
    async with asyncio.timeout(timeout):
        return await aw


class _AsyncioForRecovery(ModuleType):
    """The ``asyncio`` module as Faust's recovery module sees it: ``wait_for`` replaced."""

    def __init__(self) -> None:
        super().__init__("asyncio")
        self.wait_for = wait_for
        self.funnel_fixed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


@types.coroutine
def _rest(coro: Coroutine, waiting_on: Any) -> Generator[Any, None, Any]:
    """Go on with a coroutine whose first step already ran and yielded ``waiting_on``.

    The task waits on what the coroutine waits on; an exception thrown into the
    task there (cancellation) is passed into the coroutine, as a task running it
    from the start would have done.
    """
    while True:
        try:
            yield waiting_on
        except BaseException as exc:  # noqa: BLE001 - handed to the coroutine
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        return (yield from coro)


async def _finish(coro: Coroutine, waiting_on: Any) -> Any:
    return await _rest(coro, waiting_on)


def _is_wait_of(coro: Any, event: Any) -> bool:
    """Whether ``coro`` is ``event.wait()``, not yet started (its frame holds ``self``)."""
    frame = getattr(coro, "cr_frame", None)
    return frame is not None and frame.f_locals.get("self") is event


async def fetch_wait_first(consumer: Any, coros: tuple, timeout: Any, original: Any) -> Any:
    """Faust's ``wait_first(callback(message), suspend_flow.wait())``, the callback inline."""
    from mode.services import WaitResults

    if (
        timeout is not None
        or len(coros) != 2
        or not asyncio.iscoroutine(coros[0])
        or not _is_wait_of(coros[1], consumer.suspend_flow)
        or consumer.suspend_flow.is_set()
    ):
        return await original(consumer, *coros, timeout=timeout)
    callback, suspended = coros
    try:
        waiting_on = callback.send(None)
    except StopIteration as done:
        suspended.close()
        return WaitResults([callback], [done.value], False)
    except BaseException:
        suspended.close()
        raise
    return await original(consumer, _finish(callback, waiting_on), suspended, timeout=timeout)


def speed_up_faust() -> None:
    from faust.tables import recovery
    from faust.transport import consumer as consumer_mod

    if not getattr(recovery.asyncio, "funnel_fixed", False):
        recovery.asyncio = _AsyncioForRecovery()
    cls = consumer_mod.Consumer
    if getattr(cls.wait_first, "funnel_fixed", False):
        return
    original = cls.wait_first

    async def wait_first(self, *coros, timeout=None):  # noqa: ANN001, ANN002, ANN202
        return await fetch_wait_first(self, coros, timeout, original)

    wait_first.funnel_fixed = True  # type: ignore[attr-defined]
    cls.wait_first = wait_first

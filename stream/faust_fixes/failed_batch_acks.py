"""A batch whose agent failed is acked, so its offsets are committed unprocessed.

Works around ``faust.streams.Stream.take_events`` (faust-streaming 0.15.3),
which acks every event of the batch it yielded in a ``finally``: also when the
agent leaves its ``async for`` with an exception. An agent that fails while
sending a batch (e.g. ``IllegalOperation: Can't send messages while not in
transaction``, faust-streaming issue 323) stops the worker, and the stop's
commit then commits offsets of events that never reached the events topic:
`make soak` of the join/leave scenario lost 30 of 20,004 events that way
(tests/chaos/where_lost.py: the events topic itself lacked them).

``keep_unacked`` makes the failed stream's acks no-ops before the failure
propagates; the worker is stopping, and the partitions' next owner reads the
batch again from the last committed offset.

The same ``finally`` acks a batch the worker *dropped* (revoked or fenced
while it wrote; worker/supervision.py) as soon as the agent asks for the next
one: its offsets became committable though its state was never committed.
A commit before the rejoin, or after it when the drop came late, then moved
the committed offset past events never counted. ``never_ack`` marks the
dropped batch's messages as acked already, so the consumer never counts
their offsets; they are read again from the committed offset.

Delete when: ``take_events`` acks only batches the agent finished (the test in
tests/unit/test_faust_fixes.py shows the upstream acks on an exception).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


async def _no_ack(event: Any) -> bool:
    return False


def never_ack(events: Iterable[Any]) -> None:
    """The events of a dropped batch: their offsets must never be committed."""
    for event in events:
        event.message.acked = True  # Faust's Message.ack and Consumer.ack skip it


def keep_unacked(stream: Any) -> None:
    """From now on this stream acks nothing (its agent failed; the worker stops)."""
    stream.ack = _no_ack

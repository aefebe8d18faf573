"""A seek from the event loop races the consumer thread's fetch and crashes the worker.

Patches ``faust.transport.consumer.ThreadDelegateConsumer._seek``
(faust-streaming 0.15.3), which calls ``AIOKafkaConsumerThread.seek``, and so
aiokafka's ``AIOKafkaConsumer.seek``, from the thread that asks, while
Faust runs the aiokafka consumer in a thread of its own. aiokafka's
``Fetcher.seek_to`` deletes the partition's fetched records; when the
consumer thread is inside ``Fetcher.fetched_records`` (between listing the
partitions with records and deleting the drained ones) it then raises
``KeyError(TopicPartition(...))``, Faust's fetcher crashes ("Drain messages
raised") and the worker stops. Seen 2026-12-01: `python -m bench.recovery
--journeys 1000000`'s first worker died 8 s into a 1M-event load, right
after the stalled-tail check (worker/tails.py) sought `shop.visits:1` back.

The replacement runs the seek in the consumer thread (``call_thread``, as
Faust's own ``seek_wait`` does), so it never interleaves with a fetch.

Delete when: ``ThreadDelegateConsumer._seek`` goes through the consumer
thread (the test in tests/unit/test_faust_fixes.py reads the upstream code).
"""

from __future__ import annotations

from typing import Any

from stream.faust_fixes import patching


async def _seek(self: Any, partition: Any, offset: int) -> None:
    """aiokafka's seek, run in the consumer's own thread."""
    thread = self._thread
    await thread.call_thread(thread.seek, partition, offset)


def upstream() -> Any:
    from faust.transport.consumer import ThreadDelegateConsumer

    return patching.upstream(ThreadDelegateConsumer, "_seek")


def fix_thread_seek() -> None:
    from faust.transport.consumer import ThreadDelegateConsumer

    patching.install(ThreadDelegateConsumer, "_seek", _seek)

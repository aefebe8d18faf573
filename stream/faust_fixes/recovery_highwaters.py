"""Table recovery under exactly_once reads no changelog at all.

Patches ``faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._highwaters``
(faust-streaming 0.15.3). Related upstream reports: faust-streaming/faust#47
("Worker fails to recover table with exactly_once guarantee") and
robinhood/aiokafka#7 (recovery started from a wrong highwater).

With transactions, Faust takes a changelog's highwater from aiokafka's
``last_stable_offset``, a value cached from fetch responses. Right after an
assignment nothing has been fetched, so it is None, Faust reads it as "empty
changelog", skips recovery and the restarted worker starts from empty tables
while its input resumes from the committed offsets: every committed count is
lost. A ListOffsets request with the consumer's read_committed isolation
returns the real last stable offset instead.

Delete when: ``_highwaters`` no longer reads ``last_stable_offset`` in
transactions (the test in tests/unit/test_faust_fixes.py then fails and says so).
"""

from __future__ import annotations

from typing import Any

from stream.faust_fixes import patching


async def _highwaters(self: Any, partitions: Any) -> Any:
    """The last stable offsets, asked of the broker (read_committed end offsets)."""
    return await self._ensure_consumer().end_offsets(list(partitions))


def upstream() -> Any:
    """Faust's own ``_highwaters``, patched or not."""
    from faust.transport.drivers import aiokafka as driver

    return patching.upstream(driver.AIOKafkaConsumerThread, "_highwaters")


def fix_recovery_highwaters() -> None:
    from faust.transport.drivers import aiokafka as driver

    patching.install(driver.AIOKafkaConsumerThread, "_highwaters", _highwaters)

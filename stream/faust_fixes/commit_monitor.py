"""Under exactly-once, Faust logs "Has not committed TP ... at all since worker
start" every few seconds although offsets are committed.

Patches ``faust.transport.consumer.TransactionManager.commit`` (faust-streaming
0.15.3). Faust's stall detector (``ThreadDelegateConsumer.verify_event_path``
in ``faust/transport/drivers/aiokafka.py``) reads ``tp_last_committed_at``,
which only the plain consumer commit (``AIOKafkaConsumerThread._commit``)
updates; with ``processing_guarantee="exactly_once"`` offsets are committed
through the producer's transactions instead, so the detector never sees a
commit and cries wolf (seen in every backlog run: an error line per partition
every few seconds, which would hide a real stall). The patch records the
commit time of the partitions a transactional commit carried, as the plain
path does.

Delete when: ``TransactionManager.commit`` updates ``tp_last_committed_at``
(the test in tests/unit/test_faust_fixes.py shows the upstream code).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from stream.faust_fixes import patching


async def commit(self: Any, offsets: Mapping[Any, int], start_new_transaction: bool = True) -> bool:
    """Faust's transactional commit, then the commit time for the stall detector."""
    done = await commit.upstream(self, offsets, start_new_transaction=start_new_transaction)  # type: ignore[attr-defined]
    thread = getattr(self.consumer, "_thread", None)
    committed_at = getattr(thread, "tp_last_committed_at", None)
    if committed_at is not None:
        now = time.monotonic()
        committed_at.update(dict.fromkeys(offsets, now))
    return done


def upstream() -> Any:
    """Faust's own ``TransactionManager.commit``, patched or not."""
    from faust.transport import consumer as consumer_mod

    return patching.upstream(consumer_mod.TransactionManager, "commit")


def fix_commit_monitor() -> None:
    from faust.transport import consumer as consumer_mod

    patching.install(consumer_mod.TransactionManager, "commit", commit)

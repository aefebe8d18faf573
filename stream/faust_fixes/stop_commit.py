"""A worker stopping on SIGTERM fails to leave the group (IllegalOperation).

Patches ``faust.transport.consumer.Consumer.commit_and_end_transactions``
(faust-streaming 0.15.3), which commits with ``start_new_transaction=False``.
Related upstream reports: faust-streaming/faust#136 and #177 (exactly_once
producers outside a transaction).

Faust's stop runs ``wait_empty`` twice (the app's ``_stop_consumer`` and the
consumer's ``on_stop``); each ends with a commit that does not begin a new
transaction. When events were acked between the two, the second commit sends
offsets through a producer that is no longer in a transaction, aiokafka raises
IllegalOperation, the consumer's stop aborts before it leaves the group, and
the survivors wait a whole session timeout before they get its partitions.
Beginning the next (empty) transaction after each commit keeps both commits
valid; an empty transaction adds no partition, so it holds nothing back and
the next owner's producer of the same transactional id fences it.

Delete when: Faust's ``commit_and_end_transactions`` tolerates a second call
(the test in tests/unit/test_faust_fixes.py shows the upstream code).
"""

from __future__ import annotations

from typing import Any

from stream.faust_fixes import patching


async def commit_and_end_transactions(self: Any) -> None:
    """Commit and begin the next (empty) transaction, so a second commit stays valid."""
    await self.commit(start_new_transaction=True)


def upstream() -> Any:
    """Faust's own ``commit_and_end_transactions``, patched or not."""
    from faust.transport import consumer as consumer_mod

    return patching.upstream(consumer_mod.Consumer, "commit_and_end_transactions")


def fix_stop_commit() -> None:
    from faust.transport import consumer as consumer_mod

    patching.install(
        consumer_mod.Consumer, "commit_and_end_transactions", commit_and_end_transactions
    )

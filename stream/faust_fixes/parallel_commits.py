"""Commit a worker's transactions side by side, not one after another.

Faust's ``Producer.commit_transactions`` (faust-streaming 0.15.3, aiokafka
driver) commits each open transaction in turn: offsets into the transaction,
EndTxn, the next transaction begun, each a broker round trip (EndTxn also
waits for the transaction markers). A worker holds one transaction per
input partition and agent group, about twenty with the default six
partitions, and the CommitGate (worker/transactions.py) keeps every batch
waiting while a commit runs, so the commit's length was time the worker
did nothing: ``funnel_commit_latency_seconds`` and the idle share of a
py-spy profile (``python -m bench.scale --profile``) showed it.

Each transaction has its own producer and lock, so committing them at once
changes nothing of what each commits; as before, a crash between two
commits leaves some committed and some not, which exactly-once already
covers (each transaction holds its own offsets). The first failure is
raised once every commit has finished, as the loop would raise it; a fenced
transaction is handed to the worker instead (fenced_transactions.py).

Delete when: Faust commits its transactions concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from stream.faust_fixes import patching
from stream.faust_fixes.fenced_transactions import fenced, is_fenced


async def commit_transactions(
    self: Any,
    tid_to_offset_map: Mapping[str, Mapping[Any, int]],
    group_id: str,
    start_new_transaction: bool = True,
) -> None:
    """Faust's commit of each transaction, all of them at once."""
    tids = list(tid_to_offset_map)
    results = await asyncio.gather(
        *(
            commit_one(self, tid, tid_to_offset_map[tid], group_id, start_new_transaction)
            for tid in tids
        ),
        return_exceptions=True,
    )
    failures = [
        (tid, r) for tid, r in zip(tids, results, strict=True) if isinstance(r, BaseException)
    ]
    fences = [(tid, exc) for tid, exc in failures if is_fenced(exc)]
    if fences and await fenced(*fences[0]):
        failures = [(tid, exc) for tid, exc in failures if not is_fenced(exc)]
    if failures:
        raise failures[0][1]


async def commit_one(
    producer: Any, tid: str, offsets: Mapping[Any, int], group_id: str, start_new: bool
) -> None:
    """One transaction, exactly as Faust's loop body commits it."""
    async with producer._trn_locks[tid]:
        transaction_producer = producer._transaction_producers.get(tid)
        if transaction_producer is None:
            return  # Faust logs "Commit invoked for unknown transaction" and goes on
        await transaction_producer.send_offsets_to_transaction(offsets, group_id)
        await transaction_producer.commit_transaction()
        if start_new:
            await transaction_producer.begin_transaction()


def upstream() -> Any:
    from faust.transport.drivers import aiokafka as driver

    return patching.upstream(driver.Producer, "commit_transactions")


def fix_parallel_commits() -> None:
    from faust.transport.drivers import aiokafka as driver

    patching.install(driver.Producer, "commit_transactions", commit_transactions)

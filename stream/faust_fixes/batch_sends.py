"""Send many records into one Faust transaction as whole record batches.

Faust's ``Producer.send`` costs several Python calls per record: the producer
lookup, a per-transaction lock, aiokafka's metadata wait, serialiser,
partitioner and one delivery future per record. A batch writes about five
changelog records per event, so that path was a large share of a worker's
CPU (py-spy: ``python -m bench.scale --profile``; aiokafka's ``create_future``
alone was 8 %). aiokafka's own ``create_batch``/``send_batch`` take a batch of
records for one partition with one future.

Reaches into Faust's transaction producers (``Producer._transaction_producers``
and ``_trn_locks``, faust-streaming 0.15.3) and aiokafka's partitioner
(``AIOKafkaProducer._partition``, aiokafka 0.14) for the partition of a keyed
record, the same one ``send`` would pick (tests/unit/test_batch_sends.py: the
one Kafka's Java client picks, on Kafka's own murmur2 vectors).

Delete when: Faust's producer offers a batch send into a transaction.
"""

from __future__ import annotations

from typing import Any


class TransactionGone(RuntimeError):
    """The transaction's producer is gone (fenced, or stopped by a rebalance)."""


def transaction_producer(app: Any, transactional_id: str) -> tuple[Any, Any]:
    """The aiokafka producer of a Faust transaction, and Faust's lock for it."""
    producer = app.producer
    aio = producer._transaction_producers.get(transactional_id)
    if aio is None:
        raise TransactionGone(f"no transaction producer for {transactional_id}")
    return aio, producer._trn_locks[transactional_id]


async def topic_ready(aio: Any, topic: str) -> None:
    """Wait for the topic's metadata (what ``send`` does first)."""
    await aio.client._wait_on_metadata(topic)


def partition_of(aio: Any, topic: str, key: bytes | None, value: bytes | None) -> int:
    """The partition ``send`` would pick for a record with no explicit partition."""
    return aio._partition(topic, None, key, value, key, value)

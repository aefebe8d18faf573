"""The batched send path puts a keyed record where Kafka's Java client would."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from stream.faust_fixes.batch_sends import partition_of

# Kafka's own murmur2 test vectors (clients/.../common/utils/UtilsTest.java).
MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


class Metadata:
    def __init__(self, n: int) -> None:
        self.n = n

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))

    available_partitions_for_topic = partitions_for_topic


class Producer:
    """Only what ``AIOKafkaProducer._partition`` reads."""

    _partition = AIOKafkaProducer._partition

    def __init__(self, n: int) -> None:
        self._metadata = Metadata(n)
        self._partitioner = DefaultPartitioner()


def test_a_keyed_record_goes_to_the_java_clients_partition() -> None:
    for n in (1, 6, 7, 12):
        producer = Producer(n)
        for key, murmur in MURMUR2.items():
            expected = (murmur & 0x7FFFFFFF) % n
            assert partition_of(producer, "t", key.encode(), b"{}") == expected, (key, n)

"""Which partition a keyed record goes to: Kafka's default partitioner.

The normalising stage bundles a batch's events per counting partition
(core/bundles.py), so it picks the partition itself; it must be the one a
plain keyed send picks (murmur2 of the key, as Kafka's Java client and
aiokafka's ``DefaultPartitioner``), so an entity stays on its partition when a
worker that sends bundles takes over from one that sent single records.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


# An entity's events come in runs (a visitor's visit, signup, cart): the pure
# Python murmur2 was about 0.5 % of a worker's time, once per event.
@lru_cache(maxsize=1 << 12)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions

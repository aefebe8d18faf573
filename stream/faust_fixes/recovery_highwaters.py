"""Table recovery under exactly_once reads no changelog, or not all of it.

Patches ``faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._highwaters``
(faust-streaming 0.15.3). Related upstream reports: faust-streaming/faust#47
("Worker fails to recover table with exactly_once guarantee") and
robinhood/aiokafka#7 (recovery started from a wrong highwater).

1. With transactions, Faust takes a changelog's highwater from aiokafka's
   ``last_stable_offset``, a value cached from fetch responses. Right after
   an assignment nothing has been fetched, so it is None, Faust reads it as
   "empty changelog", skips recovery and the restarted worker starts from
   empty tables while its input resumes from the committed offsets: every
   committed count is lost. A ListOffsets request with the consumer's
   read_committed isolation returns the real last stable offset instead.
2. The last stable offset moves past a committed transaction only once the
   broker has written the transaction's commit markers, which it does after
   answering the commit. A rebalance right after a commit (the revoke's own
   commit, stream/worker/partitions.py) asked for it in that moment: it still
   stood before the transaction, the recovery stopped there, and the worker,
   whose memory of the partition had been dropped for a full replay
   (rebalance_state.py), went on without the last batch's state while its
   offsets were committed. test_scale_out lost 74 and 87 events on two
   partitions that way (the changelog's highwater read as -1 while it held a
   committed transaction). So for this worker's *active* changelog partitions,
   whose only writer is this worker's own transactional producer (freshly
   initialised, so fencing the previous owner's; or, for a kept partition,
   one whose open transaction the revoke aborted: rebalance_state.py),
   the recovery waits until the last stable offset has caught up with the
   high watermark: nothing pending is left but markers being written.
   Standby partitions are another worker's, written right now; they are not
   waited for. A transaction some other producer left open (a worker that
   died holding it) is aborted by the broker once it passes the transaction
   timeout (aiokafka's 60 s, checked every 10 s by the broker), so the wait
   lasts up to ``MARKER_WAIT_S`` (75 s), with a warning every ``WARN_EVERY_S``.
   It used to give up after 10 s and recover what lay below the pending
   transaction: the partition was loaded from empty tables and its counts
   were lost (join/leave soak, 2026-11-30: 1,243 and 4,625 events in two
   runs of 11; rebalance_state.py names the open transaction that was
   waited on).

Delete when: ``_highwaters`` no longer reads ``last_stable_offset`` in
transactions (the test in tests/unit/test_faust_fixes.py then fails and says
so) and Faust's recovery no longer starts right after a commit, or the worker
keeps its memory across rebalances.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from stream.faust_fixes import patching

log = logging.getLogger("stream.faust_fixes")

MARKER_WAIT_S = 75.0  # the transaction timeout (60 s) + the broker's abort check (10 s)
WARN_EVERY_S = 10.0
POLL_S = 0.05


def pending(stable: Mapping[Any, int | None], high: Mapping[Any, int | None]) -> list[Any]:
    """Partitions whose last stable offset is still below their high watermark."""
    return [
        tp
        for tp, end in stable.items()
        if end is not None and high.get(tp) is not None and end < high[tp]
    ]


async def high_watermarks(aio: Any, tps: Iterable[Any]) -> dict[Any, int]:
    """End offsets as a read_uncommitted reader sees them (records of open
    transactions included), asked through the consumer's own connections."""
    from aiokafka.consumer.fetcher import READ_UNCOMMITTED, Fetcher

    fetcher = aio._fetcher
    by_node: dict[int, dict[str, list]] = {}
    for tp in tps:
        node = fetcher._client.cluster.leader_for_partition(tp)
        if node is None or node < 0:
            return {}  # no leader known now: nothing to compare with
        by_node.setdefault(node, {}).setdefault(tp.topic, []).append((tp.partition, -1))
    # aiokafka's own request, built with the other isolation level.
    uncommitted = type("Uncommitted", (), {"_isolation_level": READ_UNCOMMITTED})()
    uncommitted._client = fetcher._client
    out: dict[Any, int] = {}
    for node, topic_data in by_node.items():
        answer = await Fetcher._proc_offset_request(uncommitted, node, topic_data)
        out.update({tp: offset for tp, (offset, _) in answer.items()})
    return out


async def _highwaters(self: Any, partitions: Any) -> Any:
    """The last stable offsets, asked of the broker (read_committed end offsets);
    for active partitions once no commit marker is still to be written."""
    aio = self._ensure_consumer()
    tps = list(partitions)
    actives = set(self.consumer.app.assignor.assigned_actives())
    began = time.monotonic()
    warned = began
    while True:
        stable = await aio.end_offsets(tps)
        mine = {tp: end for tp, end in stable.items() if tp in actives}
        try:
            waiting = pending(mine, await high_watermarks(aio, mine)) if mine else []
        except Exception as exc:  # noqa: BLE001 - the plain answer is still an answer
            log.warning("high watermarks not known", extra={"error": repr(exc)})
            waiting = []
        now = time.monotonic()
        if not waiting or now - began >= MARKER_WAIT_S:
            if waiting:
                log.error(
                    "recovery goes on with transactions still pending on changelogs",
                    extra={"partitions": names(waiting), "waited_s": round(now - began, 1)},
                )
            return stable
        if now - warned >= WARN_EVERY_S:
            warned = now
            log.warning(
                "recovery waits for transactions pending on changelogs",
                extra={"partitions": names(waiting), "waited_s": round(now - began, 1)},
            )
        await asyncio.sleep(POLL_S)


def names(tps: Iterable[Any]) -> list[str]:
    return [f"{tp.topic}:{tp.partition}" for tp in tps]


def upstream() -> Any:
    """Faust's own ``_highwaters``, patched or not."""
    from faust.transport.drivers import aiokafka as driver

    return patching.upstream(driver.AIOKafkaConsumerThread, "_highwaters")


def fix_recovery_highwaters() -> None:
    from faust.transport.drivers import aiokafka as driver

    patching.install(driver.AIOKafkaConsumerThread, "_highwaters", _highwaters)

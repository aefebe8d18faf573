"""Each workaround in stream/faust_fixes/ against the installed faust-streaming.

A test here shows the upstream bug (or the upstream code the patch relies on)
and the patched behaviour. When an upgrade of faust-streaming fixes a bug, its
"upstream" test fails: then the fix can be deleted.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter, defaultdict
from types import SimpleNamespace

import pytest
from faust.types import TP as TopicPartition
from mode.utils.locks import Event

from stream.faust_fixes import (
    apply_all,
    commit_monitor,
    parallel_commits,
    read_offset_race,
    rebalance_state,
    recovery_highwaters,
    recovery_seek,
    stop_commit,
)

TP = ("x-changelog", 0)


class FakeAioConsumer:
    """What ``_highwaters`` asks of aiokafka: nothing fetched yet, 42 records committed."""

    def last_stable_offset(self, tp):  # noqa: ANN001, ANN201
        return None  # cached from fetch responses: none right after an assignment

    async def end_offsets(self, partitions):  # noqa: ANN001, ANN201
        return dict.fromkeys(partitions, 42)


def consumer_thread(aio=None, actives=()) -> SimpleNamespace:  # noqa: ANN001
    aio = aio or FakeAioConsumer()
    assignor = SimpleNamespace(assigned_actives=lambda: set(actives))
    return SimpleNamespace(
        consumer=SimpleNamespace(in_transaction=True, app=SimpleNamespace(assignor=assignor)),
        _ensure_consumer=lambda: aio,
    )


def test_upstream_highwaters_in_a_transaction_are_none_right_after_assignment() -> None:
    got = asyncio.run(recovery_highwaters.upstream()(consumer_thread(), [TP]))
    assert got == {TP: None}  # read as "empty changelog": recovery skipped


def test_patched_highwaters_ask_the_broker() -> None:
    apply_all()
    got = asyncio.run(recovery_highwaters._highwaters(consumer_thread(), [TP]))
    assert got == {TP: 42}


class CommittingAioConsumer:
    """A changelog whose last transaction is committed, its markers written late:
    the last stable offset reaches the high watermark (50) on the third ask."""

    def __init__(self) -> None:
        self.asked = 0

    async def end_offsets(self, partitions):  # noqa: ANN001, ANN201
        self.asked += 1
        return dict.fromkeys(partitions, 50 if self.asked >= 3 else 38)


def test_patched_highwaters_wait_for_the_markers_of_active_partitions(monkeypatch) -> None:
    async def high(aio, tps):  # noqa: ANN001, ANN202
        return dict.fromkeys(tps, 50)

    monkeypatch.setattr(recovery_highwaters, "high_watermarks", high)
    monkeypatch.setattr(recovery_highwaters, "POLL_S", 0.001)
    aio = CommittingAioConsumer()
    got = asyncio.run(recovery_highwaters._highwaters(consumer_thread(aio, [TP]), [TP]))
    assert got == {TP: 50} and aio.asked == 3
    standby = CommittingAioConsumer()  # another worker's partition: not waited for
    got = asyncio.run(recovery_highwaters._highwaters(consumer_thread(standby), [TP]))
    assert got == {TP: 38} and standby.asked == 1


def test_pending_partitions_are_those_below_their_high_watermark() -> None:
    stable = {"a": 10, "b": 20, "c": None}
    assert recovery_highwaters.pending(stable, {"a": 12, "b": 20, "c": 5}) == ["a"]


class SeekingConsumer:
    def __init__(self) -> None:
        self.seeks: list[dict] = []

    async def seek_wait(self, offsets):  # noqa: ANN001, ANN201
        for offset in offsets.values():
            if not isinstance(offset, int) or offset < 0:  # as aiokafka's seek
                raise ValueError("Offset must be a positive integer")
        self.seeks.append(offsets)


def test_upstream_recovery_seek_crashes_on_a_partition_added_mid_recovery() -> None:
    # _add registered it with None; the round under way built offsets only for the others.
    offsets = Counter({TP: 7, ("y-changelog", 1): None})
    with pytest.raises(ValueError, match="positive integer"):
        asyncio.run(recovery_seek.upstream()(None, SeekingConsumer(), set(offsets), offsets, "a"))


def test_patched_recovery_seek_reads_such_a_partition_from_its_start() -> None:
    apply_all()
    consumer = SeekingConsumer()
    offsets = Counter({TP: 7, ("y-changelog", 1): None, ("z-changelog", 2): -1})
    no_bulk = SimpleNamespace(app=SimpleNamespace(), active_offsets=offsets)
    asyncio.run(recovery_seek._seek_offsets(no_bulk, consumer, set(offsets), offsets, "active"))
    assert consumer.seeks == [{TP: 7, ("y-changelog", 1): 0, ("z-changelog", 2): 0}]


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[dict] = []

    async def commit(self, **kwargs):  # noqa: ANN003, ANN201
        self.commits.append(kwargs)


def test_upstream_stop_commit_leaves_no_transaction_open() -> None:
    consumer = RecordingConsumer()
    asyncio.run(stop_commit.upstream()(consumer))
    assert consumer.commits == [{"start_new_transaction": False}]


def test_patched_stop_commit_begins_the_next_transaction() -> None:
    apply_all()
    from faust.transport.consumer import Consumer

    consumer = RecordingConsumer()
    asyncio.run(Consumer.commit_and_end_transactions(consumer))
    asyncio.run(Consumer.commit_and_end_transactions(consumer))  # the second stop commit
    assert consumer.commits == [{"start_new_transaction": True}] * 2


def test_upstream_fetch_loop_records_a_read_offset_whoever_won_the_wait() -> None:
    from faust.transport.consumer import Consumer

    source = inspect.getsource(Consumer._drain_messages)
    wait = source.index("await self.wait_first(")
    recorded = source.index("set_read_offset(tp, offset)", wait)
    between = source[wait:recorded]
    assert "suspend_flow.wait()" in between
    assert "if " not in between  # no check of which side won before recording


def test_read_offsets_ignore_the_fetch_loop_while_flow_is_suspended() -> None:
    suspended = Event()
    offsets = read_offset_race.ReadOffsets(suspended)
    offsets["tp"] = 10
    suspended.set()
    offsets["tp"] = 99  # the fetch loop, message never delivered
    assert offsets["tp"] == 10
    dict.__setitem__(offsets, "tp", 5)  # a seek writes through
    assert offsets["tp"] == 5
    assert offsets["other"] is None


def test_patched_consumer_uses_read_offsets() -> None:
    apply_all()
    from faust.transport.consumer import Consumer

    assert getattr(Consumer.__init__, "funnel_fixed", False)
    assert getattr(Consumer.seek, "__name__", "") == "seek"


class FakeStore:
    def __init__(self, data: dict) -> None:
        self.data = dict(data)
        self._key_partition = dict.fromkeys(data, 0)

    def __len__(self) -> int:
        return len(self.data)


def fake_app(data: dict) -> SimpleNamespace:
    table = SimpleNamespace(data=FakeStore(data))
    recovery = SimpleNamespace(
        active_offsets={"tp": 7},
        standby_offsets={"tp": 3},
        active_highwaters={"tp": 9},
        standby_highwaters={"tp": 9},
    )
    return SimpleNamespace(tables=SimpleNamespace(values=lambda: [table], recovery=recovery))


def test_forget_uncommitted_state_drops_memory_and_recovery_offsets() -> None:
    app = fake_app({"k": 1})
    rebalance_state.forget_uncommitted_state(app, had_engines=True)
    (table,) = app.tables.values()
    assert table.data.data == {} and table.data._key_partition == {}
    recovery = app.tables.recovery
    assert recovery.active_offsets == {} == recovery.standby_offsets
    assert recovery.active_highwaters == {} == recovery.standby_highwaters


def test_forget_uncommitted_state_leaves_a_starting_worker_alone() -> None:
    app = fake_app({})
    rebalance_state.forget_uncommitted_state(app, had_engines=False)
    assert app.tables.recovery.active_offsets == {"tp": 7}


def test_upstream_recovery_takes_each_changelog_record_with_wait_for() -> None:
    from faust.tables import recovery

    assert "asyncio.wait_for(" in inspect.getsource(recovery)  # a task per record on 3.11
    apply_all()
    assert recovery.asyncio.funnel_fixed


EVENTS_TP = TopicPartition("funnel.events", 0)


class FakeTransactions:
    """What ``TransactionManager.commit`` asks of its producer, app and consumer."""

    def __init__(self) -> None:
        self.sent: list = []
        self.committed_at: dict = {}
        self.producer = SimpleNamespace(commit_transactions=self.commit_transactions)
        self.app = SimpleNamespace(
            conf=SimpleNamespace(id="g"), assignor=SimpleNamespace(group_for_topic=lambda t: 0)
        )
        self.consumer = SimpleNamespace(
            _thread=SimpleNamespace(tp_last_committed_at=self.committed_at)
        )

    async def commit_transactions(self, offsets, group_id, start_new_transaction):  # noqa: ANN001, ANN201
        self.sent.append(offsets)


def test_upstream_transactional_commit_leaves_the_stall_detector_blind() -> None:
    manager = FakeTransactions()
    asyncio.run(commit_monitor.upstream()(manager, {EVENTS_TP: 7}))
    assert manager.sent == [{"g-0-0": {EVENTS_TP: 7}}]
    assert manager.committed_at == {}  # "Has not committed TP ... since worker start"


def test_patched_transactional_commit_records_its_partitions() -> None:
    apply_all()
    from faust.transport.consumer import TransactionManager

    manager = FakeTransactions()
    asyncio.run(TransactionManager.commit(manager, {EVENTS_TP: 7}))
    assert manager.sent == [{"g-0-0": {EVENTS_TP: 7}}]
    assert list(manager.committed_at) == [EVENTS_TP]


class SlowTransaction:
    """An aiokafka transactional producer whose every call is one 20 ms round trip."""

    def __init__(self, log: list, tid: str, fail: bool = False) -> None:
        self.log, self.tid, self.fail = log, tid, fail

    async def _trip(self, what: str) -> None:
        self.log.append((self.tid, what, "start"))
        await asyncio.sleep(0.02)
        if self.fail and what == "commit":
            raise RuntimeError(f"{self.tid} fenced")
        self.log.append((self.tid, what, "end"))

    async def send_offsets_to_transaction(self, offsets, group_id):  # noqa: ANN001, ANN201
        await self._trip("offsets")

    async def commit_transaction(self):  # noqa: ANN201
        await self._trip("commit")

    async def begin_transaction(self):  # noqa: ANN201
        await self._trip("begin")


def producer_of(tids: list[str], log: list, failing: str = "") -> SimpleNamespace:
    return SimpleNamespace(
        _transaction_producers={t: SlowTransaction(log, t, t == failing) for t in tids},
        _trn_locks={t: asyncio.Lock() for t in tids},
    )


def commit_all(fn, tids: list[str], failing: str = "") -> tuple[list, BaseException | None]:  # noqa: ANN001
    log: list = []

    async def run() -> BaseException | None:
        try:
            await fn(producer_of(tids, log, failing), dict.fromkeys(tids, {}), "g", True)
        except RuntimeError as exc:
            return exc
        return None

    return log, asyncio.run(run())


def test_upstream_commits_one_transaction_after_another() -> None:
    log, _ = commit_all(parallel_commits.upstream(), ["t1", "t2"])
    # t2 starts only when t1 is done: twenty transactions, twenty times the trips.
    assert log.index(("t2", "offsets", "start")) > log.index(("t1", "begin", "end"))


def test_patched_commits_every_transaction_at_once_each_in_order() -> None:
    apply_all()
    from faust.transport.drivers.aiokafka import Producer

    tids = [f"t{i}" for i in range(5)]
    log, error = commit_all(Producer.commit_transactions, tids)
    assert error is None
    starts = [entry for entry in log if entry[1:] == ("offsets", "start")]
    assert log[: len(tids)] == starts  # all began before any finished a trip
    for tid in tids:  # each: offsets, commit, begin, in that order
        mine = [what for t, what, when in log if t == tid and when == "end"]
        assert mine == ["offsets", "commit", "begin"]


def test_patched_commit_raises_the_failure_after_the_others_finished() -> None:
    apply_all()
    from faust.transport.drivers.aiokafka import Producer

    log, error = commit_all(Producer.commit_transactions, ["t1", "t2", "t3"], failing="t2")
    assert str(error) == "t2 fenced"
    assert ("t1", "begin", "end") in log and ("t3", "begin", "end") in log


def test_upstream_take_events_acks_its_batch_in_a_finally() -> None:
    """Faust acks a yielded batch however the agent leaves it, an exception included."""
    from faust.streams import Stream

    source = inspect.getsource(Stream.take_events)
    after_yield = source[source.index("yield list(events)") :]
    assert after_yield.index("finally:") < after_yield.index("await self.ack(event)")


def test_a_failed_agents_stream_acks_nothing_more() -> None:
    from stream.faust_fixes.failed_batch_acks import keep_unacked

    acked: list = []

    class FakeStream:
        async def ack(self, event):  # noqa: ANN001, ANN201
            acked.append(event)
            return True

    stream = FakeStream()
    asyncio.run(stream.ack("before"))
    keep_unacked(stream)
    assert asyncio.run(stream.ack("after")) is False
    assert acked == ["before"]


class FakeTxnManager:
    def __init__(self, in_transaction: bool, records: bool) -> None:
        self.in_transaction, self.records = in_transaction, records

    def is_in_transaction(self) -> bool:
        return self.in_transaction

    def is_empty_transaction(self) -> bool:
        return not self.records

    def partitions_to_add(self) -> set:
        return set()


class FakeTransactionalProducer:
    def __init__(self, in_transaction: bool, records: bool) -> None:
        self._txn_manager = FakeTxnManager(in_transaction, records)
        self.calls: list[str] = []

    async def abort_transaction(self) -> None:
        self.calls.append("abort")

    async def begin_transaction(self) -> None:
        self.calls.append("begin")


def test_open_transactions_with_writes_are_aborted_on_revoke_and_begun_again() -> None:
    writes = FakeTransactionalProducer(in_transaction=True, records=True)
    empty = FakeTransactionalProducer(in_transaction=True, records=False)
    idle = FakeTransactionalProducer(in_transaction=False, records=False)
    producer = SimpleNamespace(
        _transaction_producers={"a": writes, "b": empty, "c": idle},
        _trn_locks={t: asyncio.Lock() for t in "abc"},
    )
    aborted = asyncio.run(rebalance_state.end_open_transactions(producer))
    assert aborted == ["a"]
    assert writes.calls == ["abort", "begin"] and empty.calls == idle.calls == []


def gapped_consumer(acked: list[int], committed: int | None) -> SimpleNamespace:
    """What ``_new_offset`` reads: offsets 0-2 acked, then 3-4 (markers) as the
    fetch loop records them on reading 5, then 5-7 acked."""
    from collections import defaultdict

    from intervaltree import IntervalTree

    tp = TopicPartition("events", 0)
    consumer = SimpleNamespace(
        _acked=defaultdict(list, {tp: list(acked)}),
        _acked_index=defaultdict(set, {tp: set(acked)}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, {tp: committed}),
        tp=tp,
    )
    consumer._gap[tp].addi(3, 5 + 1)  # _add_gap(tp, 2 + 1, 5): the range ends at 5
    return consumer


def test_upstream_fetch_loop_records_a_gap_that_ends_at_the_delivered_offset() -> None:
    from faust.transport.consumer import Consumer

    source = inspect.getsource(Consumer._drain_messages)
    assert "self._add_gap(tp, r_offset + 1, offset)" in source


def test_upstream_new_offset_stops_at_an_acked_offset_inside_a_gap() -> None:
    from faust.transport.consumer import Consumer

    from stream.faust_fixes.patching import upstream

    consumer = gapped_consumer([0, 1, 2, 5, 6, 7], committed=None)
    assert upstream(Consumer, "_new_offset")(consumer, consumer.tp) == 6  # not 8


def test_patched_new_offset_commits_past_the_gap_in_one_step() -> None:
    from stream.faust_fixes.acked_gaps import new_offset

    consumer = gapped_consumer([0, 1, 2, 5, 6, 7], committed=None)
    assert new_offset(consumer, consumer.tp) == 8
    assert consumer._acked[consumer.tp] == [] and not consumer._gap[consumer.tp]


def test_patched_new_offset_waits_while_the_head_misses_more_than_one_offset() -> None:
    from stream.faust_fixes.acked_gaps import new_offset

    consumer = gapped_consumer([9, 10], committed=7)
    consumer._gap[consumer.tp].clear()
    assert new_offset(consumer, consumer.tp) is None  # 7 and 8 missing
    consumer._acked[consumer.tp].append(8)
    assert new_offset(consumer, consumer.tp) == 11


def test_acked_gaps_fix_is_installed() -> None:
    apply_all()
    from faust.transport.consumer import Consumer

    assert getattr(Consumer._new_offset, "funnel_fixed", False)


def test_upstream_idle_changelog_check_compares_the_consumer_position() -> None:
    from faust.tables.recovery import Recovery

    source = inspect.getsource(Recovery.__dict__["_slurp_changelogs"].fun)
    check = source[source.index("async def detect_aborted_tx") :]
    assert "self.app.consumer.position(tp)" in check and "offsets[tp] = highwater" in check
    # ... and runs on an idle queue, not only while a recovery reads:
    assert "if timeout and self.app.in_transaction and timeout_count > 1" in source


def idle_recovery(active: set, set_at: float, last_event: float) -> SimpleNamespace:
    return SimpleNamespace(
        active_tps=active,
        funnel_offsets_set_at=set_at,
        _active_events_received_at={"any": last_event},
    )


def test_reading_idle_counts_from_this_recoverys_offsets_and_its_last_record() -> None:
    from stream.faust_fixes.recovery_positions import IDLE_S, reading_idle

    # Idle for long before the recovery (Redis down): not idle for this one yet.
    assert not reading_idle(idle_recovery(set(), set_at=100.0, last_event=50.0), now=101.0)
    assert not reading_idle(idle_recovery(set(), set_at=100.0, last_event=105.0), now=110.0)
    assert reading_idle(idle_recovery(set(), set_at=100.0, last_event=105.0), now=105 + IDLE_S)


def test_patched_position_hides_the_end_of_a_changelog_just_fetched() -> None:
    from faust.transport.consumer import ThreadDelegateConsumer

    from stream.faust_fixes.recovery_positions import position

    apply_all()
    assert getattr(ThreadDelegateConsumer.position, "funnel_fixed", False)
    tp, other = TopicPartition("x-changelog", 0), TopicPartition("input", 0)
    now = time.monotonic()
    recovery = idle_recovery({tp}, set_at=now, last_event=0.0)

    async def at_the_end(tp):  # noqa: ANN001, ANN202
        return 8294  # aiokafka fetched the whole changelog, nothing applied yet

    consumer = SimpleNamespace(
        app=SimpleNamespace(tables=SimpleNamespace(recovery=recovery)),
        _thread=SimpleNamespace(position=at_the_end),
    )
    assert asyncio.run(position(consumer, tp)) == -1
    assert asyncio.run(position(consumer, other)) == 8294
    recovery.funnel_offsets_set_at = now - 60  # idle for a minute in this recovery
    assert asyncio.run(position(consumer, tp)) == 8294


def test_patched_build_offsets_stamps_the_active_offsets() -> None:
    from stream.faust_fixes.recovery_positions import build_offsets

    tp = TopicPartition("x-changelog", 0)

    async def earliest_offsets(*tps):  # noqa: ANN002, ANN202
        return dict.fromkeys(tps, 0)

    recovery = SimpleNamespace(active_offsets=Counter({tp: None}), log=SimpleNamespace())
    recovery._start_offsets_logtable = lambda *a, **k: ""  # noqa: ARG005
    recovery.log.info = lambda *a, **k: None  # noqa: ARG005
    consumer = SimpleNamespace(earliest_offsets=earliest_offsets)
    asyncio.run(build_offsets(recovery, consumer, {tp}, recovery.active_offsets, "active"))
    assert recovery.active_offsets == {tp: -1}
    assert recovery.funnel_offsets_set_at > 0


def gap_consumer(committed: int) -> SimpleNamespace:
    from intervaltree import IntervalTree

    return SimpleNamespace(
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, {"tp": committed}),
    )


def test_upstream_add_gap_counts_undelivered_offsets_as_acked() -> None:
    """What the fetch loop did with 214 then a prefetched 633 (chaos scenario 10)."""
    from faust.transport.consumer import Consumer

    from stream.faust_fixes.patching import upstream

    consumer = gap_consumer(committed=214)
    asyncio.run(upstream(Consumer, "_add_gap")(consumer, "tp", 215, 633))
    assert sorted((i.begin, i.end) for i in consumer._gap["tp"]) == [(215, 634)]


def test_patched_fetch_loop_records_no_gap_and_handled_holes_still_count() -> None:
    from faust.transport.consumer import Consumer

    from stream.faust_fixes.fetch_gaps import add_handled_gap

    apply_all()
    consumer = gap_consumer(committed=214)
    asyncio.run(Consumer._add_gap(consumer, "tp", 215, 633))  # the fetch loop's call
    assert not consumer._gap["tp"]
    add_handled_gap(consumer, "tp", 220, 632)  # a batch applied the hole
    assert sorted((i.begin, i.end) for i in consumer._gap["tp"]) == [(220, 633)]


def test_upstream_seek_runs_aiokafkas_seek_in_the_calling_thread() -> None:
    from stream.faust_fixes import thread_seek

    source = inspect.getsource(thread_seek.upstream())
    assert "self._thread.seek(partition, offset)" in source  # not through call_thread


def test_patched_seek_runs_in_the_consumer_thread() -> None:
    import threading

    from stream.faust_fixes import thread_seek

    seen = []

    class Thread:
        def seek(self, partition, offset):  # noqa: ANN001, ANN202
            seen.append((partition, offset, threading.current_thread().name))

        async def call_thread(self, fun, *args):  # noqa: ANN001, ANN202
            done = threading.Thread(target=fun, args=args, name="consumer-thread")
            done.start()
            done.join()

    asyncio.run(thread_seek._seek(SimpleNamespace(_thread=Thread()), TP, 57))
    assert seen == [(TP, 57, "consumer-thread")]

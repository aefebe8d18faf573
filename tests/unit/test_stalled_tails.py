"""Which stalled partitions the worker reads again (stream/faust_fixes/stalled_tails.py)."""

from __future__ import annotations

from stream.faust_fixes.stalled_tails import Tail, TailWatch


def test_a_partition_with_records_past_its_next_offset_and_no_batch_is_read_again():
    watch: TailWatch[str] = TailWatch()
    tails = {
        "visits:4": Tail(expected=57, end=125, idle=6.0),  # stalled
        "visits:5": Tail(expected=138, end=138, idle=60.0),  # read to its end
        "cart:4": Tail(expected=57, end=150, idle=1.0),  # a batch a second ago
        "calls:4": Tail(expected=None, end=55, idle=60.0),  # where it stands is unknown
        "spend:0": Tail(expected=0, end=None, idle=60.0),  # its end is unknown
    }
    assert watch.to_reread(tails, idle_after=5.0) == {"visits:4": 57}


def test_each_offset_is_asked_for_once_so_a_tail_of_markers_costs_one_fetch():
    watch: TailWatch[str] = TailWatch()
    markers_only = {"events:4": Tail(expected=717, end=719, idle=30.0)}
    assert watch.to_reread(markers_only, 5.0) == {"events:4": 717}
    assert watch.to_reread(markers_only, 5.0) == {}
    moved_on = {"events:4": Tail(expected=800, end=900, idle=30.0)}
    assert watch.to_reread(moved_on, 5.0) == {"events:4": 800}


def test_a_new_assignment_forgets_what_was_asked_and_where_partitions_start():
    watch: TailWatch[str] = TailWatch()
    watch.starts["calls:4"] = 0
    tail = {"calls:4": Tail(expected=3, end=55, idle=9.0)}
    assert watch.to_reread(tail, 5.0) == {"calls:4": 3}
    watch.forget()
    assert watch.starts == {}
    assert watch.to_reread(tail, 5.0) == {"calls:4": 3}

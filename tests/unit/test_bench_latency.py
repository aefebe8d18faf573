"""The latency benchmark's arithmetic (the run itself needs the stack: `make bench-latency`)."""

from __future__ import annotations

from bench.latency import latencies, percentile


def test_each_event_waits_for_the_first_poll_that_counts_it():
    sends = [0.0, 0.1, 0.2, 0.3]
    polls = [(0.05, 0), (0.5, 2), (0.9, 3), (1.4, 3)]
    # events 1-2 first counted at 0.5, event 3 at 0.9; event 4 never: left out
    assert latencies(sends, polls) == [0.5, 0.4, 0.7]


def test_percentiles_pick_from_the_sorted_values():
    values = [float(i) for i in range(101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (
        50.0,
        99.0,
        100.0,
    )
    assert percentile([], 0.5) != percentile([], 0.5)  # nan: no events counted

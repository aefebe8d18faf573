"""mode's commit-overlap warning: dropped for short commits, kept for long ones."""

from __future__ import annotations

import logging

from stream.logs import ShortCommitOverlaps, logging_config

MESSAGE = "Timer %s is overlapping (interval=%r runtime=%r)"


def record(name: str, runtime: float, msg: str = MESSAGE) -> logging.LogRecord:
    return logging.makeLogRecord(
        {
            "name": "mode.timers",
            "levelno": logging.WARNING,
            "msg": msg,
            "args": (name, 0.2, runtime),
        }
    )


def test_short_commit_overlaps_are_dropped_long_ones_and_other_timers_kept() -> None:
    keep = ShortCommitOverlaps().filter
    assert not keep(record("commit", 0.25))
    assert keep(record("commit", 2.5))
    assert keep(record("Monitor.sampler", 0.25))
    assert keep(record("commit", 0.25, "Timer %s woke up %r %r"))


def test_the_worker_logging_config_puts_the_filter_on_modes_timers() -> None:
    config = logging_config("info")
    assert config["loggers"]["mode.timers"]["filters"] == ["short_commit_overlaps"]
    assert config["filters"]["short_commit_overlaps"]["()"] is ShortCommitOverlaps

"""Structured (one JSON object per line) logging, quiet at info level.

Faust, mode and aiokafka are chatty at info; they are held at warning unless
the worker runs at debug (or FUNNEL_LOG_LEVEL_LIBS says otherwise), so our
own info lines stay readable.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import orjson

NOISY = ("faust", "mode", "aiokafka", "kafka", "aiohttp.access")
_STD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class ShortCommitOverlaps(logging.Filter):
    """Drops mode's "Timer commit is overlapping" warning for commits under
    ``LONG_COMMIT_S``. At the 0.2 s commit interval a commit that waits for a
    batch in flight (worker/transactions.py CommitGate) often runs a little
    longer than the interval: one warning every few seconds, saying nothing.
    Longer ones still warn; ``funnel_commit_gap_max_seconds`` and
    ``funnel_commit_seconds_total`` measure them all."""

    LONG_COMMIT_S = 2.0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Timer %s is overlapping"):
            return True
        name, _interval, runtime = (record.args or (None, None, None))[:3]  # type: ignore[misc]
        return not (
            name == "commit" and isinstance(runtime, float | int) and runtime < self.LONG_COMMIT_S
        )


# Faust's own account of recovery and rebalances, kept at info when tracing
# (FUNNEL_TRACE_OFFSETS=1, stream/worker/trace.py). Set here: dictConfig resets
# the level of every existing child of a configured logger.
TRACED = ("faust.tables.recovery", "faust.app.base")


def logging_config(level: str, trace: bool = False) -> dict[str, Any]:
    """A dictConfig for the worker; pass to mode's Worker so it does not override it."""
    level = level.upper()
    noisy_level = os.environ.get(
        "FUNNEL_LOG_LEVEL_LIBS", "DEBUG" if level == "DEBUG" else "WARNING"
    )
    loggers: dict[str, dict[str, Any]] = {name: {"level": noisy_level} for name in NOISY}
    loggers["mode.timers"] = {"level": noisy_level, "filters": ["short_commit_overlaps"]}
    if trace:
        loggers.update({name: {"level": "INFO"} for name in TRACED})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": {"short_commit_overlaps": {"()": ShortCommitOverlaps}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": loggers,
    }


def setup(level: str) -> None:
    import logging.config

    logging.config.dictConfig(logging_config(level))


class RejectLog:
    """Logs rejected input without flooding: the first few per minute, then a count."""

    def __init__(self, logger: logging.Logger, per_minute: int = 10) -> None:
        self.log = logger
        self.per_minute = per_minute
        self.window_start = 0.0
        self.in_window = 0
        self.suppressed = 0

    def rejected(self, topic: str, partition: int, offset: int, rejection: Any) -> None:
        now = time.monotonic()
        if now - self.window_start >= 60:
            if self.suppressed:
                self.log.warning(
                    "more rejected messages not logged", extra={"count": self.suppressed}
                )
            self.window_start, self.in_window, self.suppressed = now, 0, 0
        self.in_window += 1
        if self.in_window > self.per_minute:
            self.suppressed += 1
            return
        self.log.warning(
            "rejected message",
            extra={
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "reason": rejection.reason,
                "error": rejection.message,
            },
        )

"""Progress and figures of a Quix Streams peer run (bench/quix_peer.py,
bench/quix_engine_peer.py): imported by the peers, in their own venv."""

from __future__ import annotations

import resource
import time
from typing import Any

# Both peers concatenate the input topics, so Quix reads them timestamp-aligned
# across partitions of the same number; once an input partition is drained its
# last records wait on the others' high watermarks and come about one a
# second (a 20k-event run: 99.7 % counted in 12 s, the rest in 15 s more).
# The steady rate stops the clock at this share, so the peer is not judged
# by the end of a finite input, which a live stream does not have.
STEADY_SHARE = 0.99


class Tally:
    """Events the peer's last stage has processed; stops the app at ``total``."""

    def __init__(self, total: int, last_stage_prefix: str = "repartition__") -> None:
        self.total = total
        self.prefix = last_stage_prefix
        self.counted = 0
        self.first: float | None = None
        self.steady_at: float | None = None
        self.app: Any = None

    def started(self) -> None:
        """The first input message is in (the clock starts here, as for the worker)."""
        if self.first is None:
            self.first = time.monotonic()

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """Quix's ``on_message_processed``: a message of ``topic`` went through."""
        if not topic.startswith(self.prefix):
            return
        self.counted += 1
        if self.steady_at is None and self.counted >= STEADY_SHARE * self.total:
            self.steady_at = time.monotonic()
        if self.counted >= self.total:
            self.app.stop()

    def figures(self, started: float, done: float) -> dict[str, Any]:
        """Start-up, the rate to the last event (app stopped, last checkpoint
        committed) and the steady rate; CPU seconds of the process."""
        first = self.first or started
        steady = (self.steady_at or done) - first
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "events": self.total,
            "startup_s": round(first - started, 2),
            "seconds": round(done - first, 2),
            "events_per_s": round(self.total / (done - first)),
            "steady_events_per_s": round(STEADY_SHARE * self.total / steady),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        }

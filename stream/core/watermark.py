"""The stream's watermark over its input sources (DESIGN.md section 4, "Event time").

A source is one input topic-partition (in ``funnel replay``: one event type of
the file). Each source's mark is the newest event time it has delivered. The
watermark is the minimum of the marks of the sources that still have something
to deliver; a source with nothing unread (idle) does not hold it back, and a
source that exists but has delivered nothing yet holds it at minus infinity.
When every source is idle the watermark is the newest mark. It never moves
back. State expiry, lateness and the de-dup horizon all run behind it, so the
numbers do not depend on how far one source is read ahead of another.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping

NONE = float("-inf")


class SourceMarks:
    """Marks of the sources seen by one counting partition, and its watermark."""

    def __init__(self, marks: Mapping[str, float] | None = None, watermark: float = NONE) -> None:
        self.marks: dict[str, float] = dict(marks or {})
        self.watermark = watermark

    def deliver(self, source: str, ts: float) -> bool:
        """Record that ``source`` delivered events up to ``ts``; whether its mark moved."""
        if ts <= self.marks.get(source, NONE):
            return False
        self.marks[source] = ts
        return True

    def advance(self, sources: Iterable[str], idle: Container[str]) -> float:
        """The watermark given every source that exists and the idle ones among them."""
        active = [self.marks.get(s, NONE) for s in sources if s not in idle]
        candidate = min(active) if active else max(self.marks.values(), default=NONE)
        self.watermark = max(self.watermark, candidate)
        return self.watermark


def source_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"

"""The stream's watermark over its input sources (DESIGN.md section 4, "Event time").

A source is one input topic-partition (in ``funnel replay``: one event type of
the file). Each source's mark is the newest event time it has delivered, and
the input offset up to which it has delivered. The watermark is the minimum of
the marks of the sources that still have something to deliver; a source that
exists but has delivered nothing yet holds it at minus infinity. A source is
done (does not hold it back) when nothing of it is unread *and* everything read
from it has reached this counting partition: its mark's offset has come up to
the offset the group has read it to. When every source is done the watermark
is the newest mark. It never moves back. State expiry, lateness and the de-dup
horizon all run behind it, so the numbers do not depend on how far one source
is read ahead of another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

NONE = float("-inf")


class SourceMarks:
    """Marks of the sources seen by one counting partition, and its watermark."""

    def __init__(
        self,
        marks: Mapping[str, float] | None = None,
        watermark: float = NONE,
        offsets: Mapping[str, int] | None = None,
    ) -> None:
        self.marks: dict[str, float] = dict(marks or {})
        self.offsets: dict[str, int] = dict(offsets or {})
        self.watermark = watermark

    def deliver(self, source: str, ts: float | None, offset: int = 0) -> bool:
        """``source`` delivered events up to ``ts`` and input ``offset``; whether that moved."""
        moved = False
        if offset > self.offsets.get(source, -1):
            self.offsets[source] = offset
            moved = True
        if ts is not None and ts > self.marks.get(source, NONE):
            self.marks[source] = ts
            moved = True
        return moved

    def done(self, source: str, read_to: Mapping[str, int]) -> bool:
        """Nothing of ``source`` is unread (``read_to`` has it) and all of it arrived here."""
        return source in read_to and self.offsets.get(source, 0) >= read_to[source]

    def advance(self, sources: Iterable[str], read_to: Mapping[str, int]) -> float:
        """The watermark, given every source that exists and, for those with nothing
        unread, the input offset the group has read them to."""
        active = [self.marks.get(s, NONE) for s in sources if not self.done(s, read_to)]
        candidate = min(active) if active else max(self.marks.values(), default=NONE)
        self.watermark = max(self.watermark, candidate)
        return self.watermark

    def state(self) -> dict[str, dict]:
        """What the watermarks table keeps (JSON)."""
        return {"ts": self.marks, "offsets": self.offsets}

    @classmethod
    def from_state(cls, state: Mapping | None, watermark: float) -> SourceMarks:
        state = state or {}
        return cls(state.get("ts"), watermark, state.get("offsets"))


def source_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"

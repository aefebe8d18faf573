"""Event files: one JSON event per line (JSONL), in arrival order.

Used by `funnel validate`, `funnel produce` and (later) `funnel replay`; every
line is checked by the same decoder the worker uses, so a file that validates
here is accepted by the worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from stream.core.events import AnyEvent, Rejection, decode
from stream.progress import Progress


def read_events(
    path: Path, now: float | None = None, progress: bool = False
) -> Iterator[tuple[int, bytes, AnyEvent | Rejection]]:
    """Yield (line number, raw bytes, event or Rejection) for each non-blank line."""
    bar = Progress(path.stat().st_size, f"{path.name}", unit="bytes") if progress else None
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if bar is not None:
                bar.advance(len(line))
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                yield lineno, raw, decode(raw, now=now)
            except Rejection as rejection:
                yield lineno, raw, rejection
    if bar is not None:
        bar.done()

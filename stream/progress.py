"""Progress on stderr for long-running commands (produce, replay, bench, demo)."""

from __future__ import annotations

import sys
import time


class Progress:
    """A one-line bar redrawn at most every 0.5 s; silent when stderr is not a terminal
    except for a line every 10 s, so CI logs stay short."""

    def __init__(self, total: int, label: str, unit: str = "items", stream=None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.done_n = 0
        self.started = time.monotonic()
        self.last = 0.0
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def advance(self, n: int = 1) -> None:
        self.done_n += n
        now = time.monotonic()
        if now - self.last >= (0.5 if self.tty else 10.0):
            self.last = now
            self._draw(final=False)

    def done(self) -> None:
        self._draw(final=True)

    def _draw(self, final: bool) -> None:
        frac = min(self.done_n / self.total, 1.0) if not final else 1.0
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        took = time.monotonic() - self.started
        text = f"{self.label} [{bar}] {frac:4.0%} {self.done_n} {self.unit} {took:.1f}s"
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + text, end=end, file=self.stream, flush=True)

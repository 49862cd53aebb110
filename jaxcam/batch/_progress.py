"""One progress bar with images/s and ETA (process 0 only), on standard error."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``H:MM:SS``."""
    s = int(max(0.0, seconds) + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """A one-line bar: ``[#####.....] 512/1000 51% 230.4 images/s ETA 0:00:02``.

    On a terminal the line is redrawn in place (at most 10 times a second); elsewhere (a log
    file) a line is printed at most every ``log_every`` seconds, and always at the end.

    Args:
      total: inputs to do in this process.
      label: text before the bar.
      enabled: False draws nothing (processes other than 0).
      stream: where to draw (default standard error).
      log_every: seconds between lines when not on a terminal.
    """

    def __init__(self, total: int, label: str = "explained", enabled: bool = True,
                 stream: TextIO | None = None, log_every: float = 10.0):
        self.total = total
        self.label = label
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 0.1 if self.tty else log_every
        self.start = time.perf_counter()
        self._last = -1e9
        self._done = 0
        self._shown = -1

    def line(self, done: int) -> str:
        """The bar's text for ``done`` inputs."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = done / elapsed
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        eta = format_seconds((self.total - done) / rate) if rate > 0 else "?"
        return (f"{self.label} [{bar}] {done}/{self.total} {100 * frac:.0f}% "
                f"{rate:.1f} images/s ETA {eta}")

    def __call__(self, done: int) -> None:
        """Report ``done`` inputs so far (explained or failed)."""
        self._done = done
        now = time.perf_counter()
        if not self.enabled or now - self._last < self.every:
            return
        self._last = now
        self._shown = done
        if self.tty:
            print(f"\r{self.line(done)}", end="", file=self.stream, flush=True)
        else:
            print(self.line(done), file=self.stream, flush=True)

    def close(self) -> None:
        """Draw the final state and end the line."""
        if not self.enabled or (self._shown == self._done and not self.tty):
            return
        prefix = "\r" if self.tty else ""
        print(f"{prefix}{self.line(self._done)}", file=self.stream, flush=True)

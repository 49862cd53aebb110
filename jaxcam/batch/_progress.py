"""The progress bar of a run (process 0 only), on standard error: tqdm with images/s and ETA."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

__all__ = ["Progress"]


class _Lines:
    """A log-file stream for tqdm: each redraw becomes a line of its own instead of a
    carriage return that a log viewer would show as one ever-growing line."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


class Progress:
    """A one-line bar: ``explained [#####.....] 512/1000 51% 230.40 images/s ETA 00:02``.

    On a terminal the line is redrawn in place (at most 10 times a second); elsewhere (a log
    file) a line is written at most every ``log_every`` seconds, and always at the end.

    Args:
      total: inputs to do in this process.
      label: text before the bar.
      enabled: False draws nothing (processes other than 0).
      stream: where to draw (default standard error).
      log_every: seconds between lines when not on a terminal.
    """

    def __init__(self, total: int, label: str = "explained", enabled: bool = True,
                 stream: TextIO | None = None, log_every: float = 10.0):
        stream = sys.stderr if stream is None else stream
        tty = bool(getattr(stream, "isatty", lambda: False)())
        self._bar = tqdm(total=total, desc=label, file=stream if tty else _Lines(stream),
                         disable=not enabled,
                         mininterval=0.1 if tty else log_every, ascii=".#", unit=" images",
                         dynamic_ncols=tty,
                         bar_format="{desc} [{bar:20}] {n}/{total} {percentage:.0f}% "
                                    "{rate_fmt} ETA {remaining}")

    def __call__(self, done: int) -> None:
        """Report ``done`` inputs so far (explained or failed)."""
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        """Draw the final state and end the line."""
        self._bar.close()

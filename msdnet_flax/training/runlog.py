"""Training bookkeeping: metric accumulators, the JSONL log and the progress bar on stderr.

The per-step metrics stay on the device until a log point, a checkpoint or a progress refresh
fetches them, so steps are dispatched asynchronously. Sums run in float64 in step order, and their
partial values are saved in each checkpoint, so a resumed run logs exactly what an uninterrupted
one logs.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import jax
import numpy as np
from tqdm import tqdm

from jaxcam.extend.files import atomic_write

__all__ = ["Meter", "RunLog", "Progress", "TIMING_KEYS"]

# Record fields that depend on the wall clock (everything else is reproducible).
TIMING_KEYS = ("time", "images_per_s")


class Meter:
    """Running sums of the per-step ``loss``, ``exit_loss`` and ``exit_acc``.

    Args:
      num_exits: number of exits K.
      state: a previous :meth:`state_dict`, to continue from.
    """

    def __init__(self, num_exits: int, state: Mapping[str, Any] | None = None):
        self.num_exits = num_exits
        self._pending: list[dict[str, jax.Array]] = []
        self.last: dict[str, Any] | None = None
        self.windows = {name: self._zero() for name in ("log", "epoch")}
        if state:
            for name, value in state.items():
                self.windows[name] = {"n": int(value["n"]), "loss": float(value["loss"]),
                                      "exit_loss": [float(v) for v in value["exit_loss"]],
                                      "exit_acc": [float(v) for v in value["exit_acc"]]}

    def _zero(self) -> dict[str, Any]:
        return {"n": 0, "loss": 0.0, "exit_loss": [0.0] * self.num_exits,
                "exit_acc": [0.0] * self.num_exits}

    def add(self, metrics: dict[str, jax.Array]) -> None:
        """Queue one step's device metrics."""
        self._pending.append(metrics)

    def fetch(self) -> None:
        """Bring the queued metrics to the host and add them, in step order."""
        if not self._pending:
            return
        fetched = jax.device_get(self._pending)
        self._pending = []
        for m in fetched:
            loss = float(m["loss"])
            exit_loss = np.asarray(m["exit_loss"], np.float64)
            exit_acc = np.asarray(m["exit_acc"], np.float64)
            for w in self.windows.values():
                w["n"] += 1
                w["loss"] += loss
                w["exit_loss"] = [a + float(b) for a, b in zip(w["exit_loss"], exit_loss,
                                                               strict=True)]
                w["exit_acc"] = [a + float(b) for a, b in zip(w["exit_acc"], exit_acc,
                                                              strict=True)]
            self.last = {"loss": loss, "exit_acc": exit_acc.tolist()}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def mean(self, window: str) -> dict[str, Any]:
        """Means over ``window`` ('log' or 'epoch'), then reset it."""
        self.fetch()
        w = self.windows[window]
        n = max(w["n"], 1)
        self.windows[window] = self._zero()
        return {"loss": w["loss"] / n, "exit_loss": [v / n for v in w["exit_loss"]],
                "exit_acc": [v / n for v in w["exit_acc"]]}

    def state_dict(self) -> dict[str, Any]:
        """The partial sums (JSON-friendly), for a checkpoint."""
        self.fetch()
        return json.loads(json.dumps(self.windows))


class RunLog:
    """Append-only JSONL log; on resume, records after the checkpoint's step are dropped.

    Args:
      path: the ``.jsonl`` file.
      resume_step: keep only the (complete) records with ``step <= resume_step``.
    """

    def __init__(self, path: str | os.PathLike, resume_step: int):
        self.path = Path(path)
        kept = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
                if record.get("step", math.inf) <= resume_step:
                    kept.append(line + "\n")
            atomic_write(self.path, "".join(kept).encode())
        self._file = open(self.path, "a")

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record and flush it to the OS."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """One tqdm bar per epoch on stderr, with the last loss, every exit's accuracy, images/s and
    the run's ETA.

    The images/s is measured here, between :meth:`update` calls after :meth:`start` (so the
    compilation is left out), because the JSONL log records it too.

    Args:
      total: steps in the run.
      steps_per_epoch: steps per epoch.
      batch_size: images per step.
      enabled: print nothing when False.
      stream: where to write (stderr).
    """

    def __init__(self, total: int, steps_per_epoch: int, batch_size: int, *, enabled: bool = True,
                 stream: TextIO | None = None):
        self.total, self.steps_per_epoch, self.batch_size = total, steps_per_epoch, batch_size
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._mark: tuple[float, int] | None = None
        self._drawn = time.perf_counter()
        self._bar: tqdm | None = None
        self._epoch = -1
        self.images_per_s = float("nan")

    def due(self, every: float = 1.0) -> bool:
        """Whether the bar was last drawn more than ``every`` seconds ago (and is enabled)."""
        return self.enabled and time.perf_counter() - self._drawn > every

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was called."""
        return self._mark is not None

    def start(self, step: int) -> None:
        """Start timing at ``step`` (after compilation)."""
        self._mark = (time.perf_counter(), step)

    def _bar_for(self, epoch: int) -> tqdm:
        if self._bar is None or epoch != self._epoch:
            self._close()
            # The bar draws only when update() says so: the metrics behind it are fetched from
            # the device at most once a second, and tqdm's own rate would count the compile.
            self._bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}",
                             file=self.stream, mininterval=0.0, miniters=0, ncols=None,
                             bar_format="{desc} |{bar:20}| {n_fmt}/{total_fmt}{postfix}")
            self._epoch = epoch
        return self._bar

    def update(self, step: int, last: Mapping[str, Any] | None) -> None:
        """Redraw the bar for ``step`` with the last fetched metrics."""
        if self._mark is not None and step > self._mark[1]:
            now = time.perf_counter()
            self.images_per_s = (step - self._mark[1]) * self.batch_size / (now - self._mark[0])
            self._mark = (now, step)
        if not self.enabled:
            return
        self._drawn = time.perf_counter()
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        if in_epoch == 0 and step:
            epoch, in_epoch = epoch - 1, self.steps_per_epoch
        parts = []
        if last:
            accs = "/".join(f"{100 * a:.0f}" for a in last["exit_acc"])
            parts.append(f"loss {last['loss']:.3f} acc% {accs}")
        if math.isfinite(self.images_per_s):
            eta = (self.total - step) * self.batch_size / max(self.images_per_s, 1e-9)
            parts.append(f"{self.images_per_s:.0f} img/s eta {_fmt_time(eta)}")
        bar = self._bar_for(epoch)
        bar.n = in_epoch
        bar.set_postfix_str(" ".join(parts), refresh=False)
        bar.refresh()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def newline(self, message: str = "") -> None:
        """End the current bar (and print ``message`` on its own line)."""
        if self.enabled:
            self._close()
            if message:
                tqdm.write(message, file=self.stream)

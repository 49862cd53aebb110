"""Interleaved timing rounds and per-call peak memory.

Each round calls every scheduled contender once, in an order rotated from round to round, so
all contenders see the same moments of the machine's load; statistics are over rounds. A slow
contender may be given fewer rounds, spread evenly over the whole run rather than bunched.

Peak memory is measured on one call per contender and cell, outside the timed rounds (the
warm-up call for PyTorch, the first call after compilation for JAX). CPU: freed heap memory is
returned to the system (glibc ``malloc_trim``) so that memory the allocator kept from earlier
calls does not hide this one's, the resident-set high-water mark (VmHWM) is reset through
``/proc/self/clear_refs``, and the peak above the resident set at the call's start is reported
(host RSS delta). GPU: PyTorch's ``max_memory_allocated`` after resetting its peak; for JAX the
device's ``peak_bytes_in_use``, which cannot be reset (a running peak).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import torch


def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``: give freed heap pages back to the system (no-op elsewhere)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda: None

    def call() -> None:
        trim(0)

    return call


class MemoryProbe:
    """Peak memory of one call: ``start()`` before, ``stop()`` after; bytes or None."""

    def __init__(self, device: str):
        self.device = device
        self._base = 0
        self._trim = _malloc_trim()
        self.method = {
            "cpu": "host RSS high-water delta over one call (malloc_trim, then VmHWM reset "
                   "via /proc/self/clear_refs)",
            "gpu": "PyTorch: max_memory_allocated delta; JAX: device peak_bytes_in_use "
                   "(running peak, not resettable)",
        }[device]

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    def start(self, framework: str) -> None:
        if self.device == "cpu":
            self._trim()
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self._base = self._status("VmRSS")
            except (OSError, KeyError):
                self._base = -1
        elif framework == "torch":
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = int(jax.devices()[0].memory_stats().get("bytes_in_use", 0))

    def stop(self, framework: str) -> int | None:
        if self.device == "cpu":
            if self._base < 0:
                return None
            return max(self._status("VmHWM") - self._base, 0)
        if framework == "torch":
            return torch.cuda.max_memory_allocated() - self._base
        stats = jax.devices()[0].memory_stats()
        return max(int(stats.get("peak_bytes_in_use", 0)) - self._base, 0)


@dataclasses.dataclass
class Samples:
    """One contender's timings (seconds) over its rounds."""

    times: list[float] = dataclasses.field(default_factory=list)

    def stats(self, batch: int) -> dict[str, Any]:
        t = np.asarray(self.times)
        med = float(np.median(t))
        q1, q3 = (float(v) for v in np.percentile(t, [25, 75]))
        return {
            "rounds": len(self.times), "median_s": med, "q1_s": q1, "q3_s": q3,
            "min_s": float(t.min()), "max_s": float(t.max()), "images_per_s": batch / med,
            "times_s": [float(v) for v in self.times],
        }


def timed_call(fn: Callable[[], Any], framework: str, probe: MemoryProbe | None = None
               ) -> tuple[float, int | None]:
    """Seconds of one call, and its peak memory when a probe is given."""
    if probe is not None:
        probe.start(framework)
    start = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - start
    memory = probe.stop(framework) if probe is not None else None
    del out
    return elapsed, memory


def schedule(rounds: Mapping[str, int], total: int) -> dict[str, set[int]]:
    """For each contender, the rounds it runs in: ``n`` of ``total``, evenly spread."""
    return {key: {int(i * total / n) for i in range(n)} for key, n in rounds.items()}


def choose_rounds(estimates: Mapping[str, float], max_rounds: int, min_rounds: int,
                  budget_s: float, free_s: float = 2.0) -> dict[str, int]:
    """Rounds per contender within ``budget_s`` seconds: every contender gets ``max_rounds`` if
    the budget allows; otherwise the fastest take what they need and the slower ones share
    the rest equally (water-filling), never fewer than ``min_rounds``. Contenders whose
    ``max_rounds`` calls take under ``free_s`` together always get them (their cost is noise
    next to one slow call; ratios need their medians)."""
    rounds: dict[str, int] = {}
    left = budget_s
    order = sorted(estimates, key=lambda key: estimates[key])
    for i, key in enumerate(order):
        est = max(estimates[key], 1e-9)
        share = max(left, 0.0) / (len(order) - i)
        if est * max_rounds <= free_s:
            rounds[key] = max_rounds
        else:
            rounds[key] = max(min_rounds, min(max_rounds, int(share / est)))
        left -= rounds[key] * est
    return {key: rounds[key] for key in estimates}


def interleave(calls: Mapping[str, tuple[Callable[[], Any], str]], rounds: Mapping[str, int]
               ) -> dict[str, Samples]:
    """Run the rounds; ``calls`` maps key -> (call, framework), ``rounds`` key -> count."""
    total = max(rounds.values())
    plan = schedule(rounds, total)
    samples = {key: Samples() for key in rounds}
    keys = list(rounds)
    for r in range(total):
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:
            if r not in plan[key]:
                continue
            fn, framework = calls[key]
            samples[key].times.append(timed_call(fn, framework)[0])
    return samples



"""The benchmark suite: build the twins, check parity, time every contender that agrees, report.

Run as ``python -m benchmarks`` (flags in :mod:`benchmarks.cli`).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any

import jax
import torch

from benchmarks import _env, cli, jax_side, report, torch_side
from benchmarks.contender import (
    WORK_ALL,
    WORK_FORWARD,
    WORK_LAST,
    Contender,
    Inputs,
    make_inputs,
)
from benchmarks.models import BenchTwins, make_twins
from benchmarks.parity import check_all
from benchmarks.timing import MemoryProbe, Samples, choose_rounds, interleave, timed_call

REFERENCE_FOR = {WORK_ALL: jax_side.JAXCAM_ALL, WORK_LAST: jax_side.JAXCAM_LAST,
                 WORK_FORWARD: jax_side.JAXCAM_ALL}
# Always given every round: the ratios' denominators (cheap next to the PyTorch contenders).
REFERENCES = (jax_side.JAXCAM_ALL, jax_side.JAXCAM_LAST, jax_side.JAX_FORWARD)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Clock:
    """Shares the run's time limit (``--time-limit``) among the cells still to run.

    Every cell costs at least its warm-up: one call of each contender (plus JAX's compilation).
    That minimum is predicted for the cells to come from the config's earlier cells (each
    call's seconds as a line in the batch size through its last two cells, or proportional to
    the batch size after one; 60 s for a config not yet seen). A cell's timed rounds get an
    equal share of what those minimums leave, capped by ``--cell-budget``. With
    ``--strict-limit``, a PyTorch contender whose predicted call would end past the limit is
    not timed in that cell (and reported as such).
    """

    def __init__(self, limit_s: float, cells: list[tuple[str, int]],
                 per_exit_max_batch: dict[str, int] | None = None):
        self.start = time.perf_counter()
        self.per_exit_max_batch = per_exit_max_batch or {}
        self.limit_s = limit_s
        self.future = list(cells)  # (config, batch) not started yet
        self.seen: dict[str, list[tuple[int, dict[str, float]]]] = {}  # config -> cells
        self.compile_s: list[float] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.limit_s - self.elapsed() if self.limit_s > 0 else float("inf")

    def begin(self, config: str, batch: int) -> None:
        self.future.remove((config, batch))

    def record(self, config: str, batch: int, seconds: dict[str, float]) -> None:
        self.seen.setdefault(config, []).append((batch, dict(seconds)))

    def predict(self, config: str, key: str, batch: int) -> float | None:
        points = [(b, s[key]) for b, s in self.seen.get(config, []) if key in s][-2:]
        if not points:
            return None
        if len(points) == 1 or points[0][0] == points[1][0]:
            return points[-1][1] * batch / points[-1][0]
        (b0, t0), (b1, t1) = points
        slope = max((t1 - t0) / (b1 - b0), 0.0)
        return max(t1 + slope * (batch - b1), 0.0)

    def _minimum(self, config: str, batch: int) -> float:
        if not self.seen.get(config):
            return 60.0
        keys = self.seen[config][-1][1]
        compile_s = sum(self.compile_s) / len(self.compile_s) if self.compile_s else 0.0
        return compile_s + sum(self.predict(config, key, batch) or 0.0 for key in keys
                               if not self.skips(config, batch, key))

    def skips(self, config: str, batch: int, key: str) -> bool:
        """Whether ``key`` is left out of this cell by ``--per-exit-max-batch``."""
        limit = self.per_exit_max_batch.get(config, 0)
        return key in torch_side.PER_EXIT and 0 < limit < batch

    def cell_budget(self, cap: float) -> float:
        if self.limit_s <= 0:
            return cap
        reserve = sum(self._minimum(c, b) for c, b in self.future)
        share = (self.left() - reserve) / (len(self.future) + 1)
        return max(0.0, min(cap, share))


def _setup_device(device: str) -> torch.device:
    torch.set_num_threads(_env.usable_cores())  # XLA:CPU's pool is sized by the same count
    if device == "gpu":
        if jax.default_backend() != "gpu" or not torch.cuda.is_available():
            raise SystemExit(f"--device gpu needs JAX and PyTorch on a GPU; JAX has "
                             f"{jax.default_backend()!r}, torch.cuda "
                             f"{torch.cuda.is_available()}")
        return torch.device("cuda")
    if jax.default_backend() != "cpu":  # a GPU machine asked for the CPU suite
        jax.config.update("jax_default_device", jax.devices("cpu")[0])
    return torch.device("cpu")


def _contenders(twins: BenchTwins, settings: cli.Settings) -> list[Contender]:
    size = (twins.image_size, twins.image_size)
    found = jax_side.contenders(twins) + torch_side.contenders(twins, size)
    if settings.contenders is not None:
        keep = set(settings.contenders) | {jax_side.JAXCAM_ALL, jax_side.JAXCAM_LAST,
                                           jax_side.JAX_FORWARD}
        found = [c for c in found if c.key in keep]
    return found


def _inputs(twins: BenchTwins, batch: int, settings: cli.Settings) -> Inputs:
    return make_inputs(batch, twins.image_size, twins.num_exits, twins.num_classes,
                       settings.seed + batch, twins.device)


def run_cell(twins: BenchTwins, contenders: list[Contender], batch: int, settings: cli.Settings,
             probe: MemoryProbe, clock: Clock, known_first: dict[str, float]) -> dict[str, Any]:
    """Time every contender on one batch size: warm-up (JAX: compile), then interleaved rounds.

    ``known_first``: first-call times already measured at this shape (by the parity check).
    A PyTorch call slower than ``--slow-call`` keeps its warm-up call as its first sample.
    """
    clock.begin(twins.name, batch)
    inputs = _inputs(twins, batch, settings)
    calls = {c.key: (c.prepare(inputs), c.framework) for c in contenders}
    first, estimate, memory, kept, skipped = {}, {}, {}, {}, {}
    compile_s = 0.0
    for key, (fn, framework) in calls.items():
        if clock.skips(twins.name, batch, key):
            skipped[key] = (f"not timed above batch "
                            f"{settings.per_exit_max_batch[twins.name]} (--per-exit-max-batch)")
            continue
        predicted = clock.predict(twins.name, key, batch)
        if (settings.strict_limit and framework == "torch" and predicted is not None
                and predicted > 2.0 and predicted > clock.left()):
            skipped[key] = (f"not timed: one call predicted {predicted:.0f} s, "
                            f"{max(clock.left(), 0):.0f} s left of the time limit")
            log(f"  {twins.name} b{batch} {key}: {skipped[key]}")
            continue
        if framework == "jax":  # the first call compiles; the second gives memory and estimate
            seconds = timed_call(fn, framework)[0]
            estimate[key], memory[key] = timed_call(fn, framework, probe)
            compile_s += seconds if key not in known_first else 0.0
        else:
            seconds, memory[key] = timed_call(fn, framework, probe)
            estimate[key] = seconds
            if seconds > settings.slow_call_s:
                kept[key] = seconds
        first[key] = known_first.get(key, seconds)
        log(f"  {twins.name} b{batch} {key}: first call {seconds:.2f} s")
    clock.record(twins.name, batch, estimate)
    if compile_s:
        clock.compile_s.append(compile_s)
    budget = clock.cell_budget(settings.cell_budget_s)
    priority = {k: v for k, v in estimate.items() if k in REFERENCES}
    others = {k: v for k, v in estimate.items() if k not in REFERENCES}
    rounds = {key: settings.rounds for key in priority}
    # The headline cell gets at least 3 rounds of every contender, whatever the budget.
    least = max(settings.min_rounds, 3) if (twins.name, batch) == report.TARGET_CELL else (
        settings.min_rounds)
    rounds |= choose_rounds(others, settings.rounds, min(least, settings.rounds),
                            budget - settings.rounds * sum(priority.values()))
    log(f"  {twins.name} b{batch}: {budget:.0f} s of rounds: {rounds}")
    more = {key: n - (key in kept) for key, n in rounds.items() if n - (key in kept) > 0}
    samples = interleave({k: calls[k] for k in more}, more) if more else {}
    rows: dict[str, Any] = {}
    for c in contenders:
        if c.key in skipped:
            rows[c.key] = {"label": c.label, "framework": c.framework, "work": c.work,
                           "skipped": skipped[c.key]}
            continue
        got = samples.get(c.key, Samples())
        if c.key in kept:
            got.times.insert(0, kept[c.key])
        rows[c.key] = {"label": c.label, "framework": c.framework, "work": c.work,
                       "first_call_s": first[c.key], "warmup_kept": c.key in kept,
                       "peak_memory_bytes": memory[c.key], **got.stats(batch)}
    for row in rows.values():
        ref = rows.get(REFERENCE_FOR[row["work"]])
        if "median_s" in row:
            row["time_over_jaxcam"] = (row["median_s"] / ref["median_s"]
                                       if ref and "median_s" in ref else None)
    del calls
    gc.collect()
    return {"batch": batch, "budget_s": budget, "contenders": rows,
            "ratios": report.cell_ratios(rows)}


def run_config(name: str, settings: cli.Settings, device: torch.device, probe: MemoryProbe,
               clock: Clock, results: dict[str, Any], save: Any) -> None:
    log(f"{name}: building the PyTorch twin and its Flax copy")
    twins = make_twins(name, settings.seed, device)
    contenders = _contenders(twins, settings)
    batches = settings.batches[name]
    # Parity on the first timed batch size: on CPU its calls are then that cell's first calls.
    parity_batch = batches[0]
    log(f"{name}: parity at batch {parity_batch}")
    parity = check_all(twins, contenders, _inputs(twins, parity_batch, settings),
                       highest=settings.device == "gpu")
    for key, p in parity.items():
        log(f"  {key}: {p.summary()}")
    entry: dict[str, Any] = {
        "exits": twins.num_exits, "image_size": twins.image_size,
        "parity_batch": parity_batch,
        "parity": {key: {"ok": p.ok, "max_diff": p.max_diff, "compared_as": p.compared_as,
                         "error": p.error, "summary": p.summary()}
                   for key, p in parity.items()},
        "labels": {c.key: c.label for c in contenders},
        "cells": [],
    }
    results["configs"][name] = entry
    timed = [c for c in contenders if parity[c.key].ok]
    # On GPU the parity ran at the highest precision, a different compilation from timing's.
    known = ({key: p.seconds for key, p in parity.items()} if settings.device == "cpu"
             else {})
    for batch in batches:
        log(f"{name}: batch {batch} ({clock.elapsed():.0f} s so far)")
        first = known if batch == parity_batch else {}
        entry["cells"].append(run_cell(twins, timed, batch, settings, probe, clock, first))
        save()


def main(argv: list[str] | None = None) -> int:
    settings = cli.parse(argv)
    device = _setup_device(settings.device)
    probe = MemoryProbe(settings.device)
    clock = Clock(settings.time_limit_s,
                  [(c, b) for c in settings.configs for b in settings.batches[c]],
                  settings.per_exit_max_batch)
    results: dict[str, Any] = {
        "command": settings.command,
        "machine": _env.machine(),
        "versions": _env.versions(),
        "device": settings.device,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "torch_threads": torch.get_num_threads(),
        "settings": {"rounds": settings.rounds, "min_rounds": settings.min_rounds,
                     "cell_budget_s": settings.cell_budget_s,
                     "time_limit_s": settings.time_limit_s,
                     "strict_limit": settings.strict_limit, "slow_call_s": settings.slow_call_s,
                     "quick": settings.quick, "methods": list(settings.methods),
                     "per_exit_max_batch": settings.per_exit_max_batch,
                     "seed": settings.seed},
        "memory_method": probe.method,
        "configs": {},
    }
    os.makedirs(settings.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = os.path.join(settings.out, f"run_{stamp}_{settings.device}.json")

    def save() -> None:
        results["wall_s"] = clock.elapsed()
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)

    for name in settings.configs:
        run_config(name, settings, device, probe, clock, results, save)
    plots = report.plot_all(results, settings.out, suffix="" if settings.device == "cpu"
                            else f"_{settings.device}")
    markdown = report.markdown(results, json_path, plots, settings.md)
    save()  # with the targets that markdown() evaluated
    print(markdown)
    if settings.md:
        report.append(settings.md, markdown)
    log(f"done in {clock.elapsed():.0f} s; JSON {json_path}")
    return 0

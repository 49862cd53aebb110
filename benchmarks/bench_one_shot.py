"""The one-shot ``jaxcam.explain_exits`` against the prepared ``ExitExplainer`` on MSD-Net.

    python -m benchmarks.bench_one_shot [--config cifar10_anytime] [--batch 64] [--rounds 15]
        [--record benchmarks/RESULTS.md]

``explain_exits(model, x)`` builds an explainer on every call; before the split cache
(``jaxcam.adapters._split_cache``) that meant ``nnx.split`` of the whole model and hashing its
``GraphDef`` each time. Timed in interleaved rounds (one call of each contender per round, new
images each round, medians), so the ratios come from the same moments of the machine's load:

- the jitted forward pass (all exits' logits), the unit of the ratios;
- ``ExitExplainer(model)`` built once, called per batch (the prepared path);
- ``explain_exits(model, x)`` per batch (the one-shot path), the model unchanged between calls;
- ``explain_exits`` after an in-place weight change every round (every weight rewritten, as an
  optimiser step does), which must and does see the new weights;
- the split alone: ``nnx.split`` + ``Frozen`` (what every one-shot call paid before) against
  the cached ``split_model``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

import jaxcam
from benchmarks._env import cpu_model, usable_cores
from jaxcam.adapters import _split_cache
from jaxcam.adapters.nnx import Frozen, split_model
from msdnet_flax.model.msdnet import MSDNet
from msdnet_flax.model.presets import get_config


def _uncached_split(model: Any) -> Any:
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    return Frozen(graphdef, treedef), leaves


def measure(config_name: str, batch: int, rounds: int) -> dict[str, Any]:
    """Median seconds per call of each contender, and the maps' agreement.

    Args:
      config_name: an MSD-Net preset.
      batch: images per call.
      rounds: timed rounds.

    Returns:
      ``{"times": {name: [s, ...]}, "max_diff": float, "fresh_ok": bool}``.
    """
    config = get_config(config_name)
    model = MSDNet(config, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    prepared = jaxcam.ExitExplainer(model)
    size = config.image_size
    rng = np.random.default_rng(0)
    params = jax.tree.leaves(nnx.state(model, nnx.Param),
                             is_leaf=lambda v: isinstance(v, nnx.Variable))

    def images(seed: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((batch, size, size, 3)
                                                          ).astype(np.float32)

    def change_weights() -> None:
        """An in-place update of every weight, as an optimiser step (not timed)."""
        scale = 1.0 + 1e-4 * float(rng.uniform())
        for var in params:
            var[...] = var[...] * scale
        jax.block_until_ready([var[...] for var in params])

    contenders: dict[str, Callable[[Any], Any]] = {
        "forward (jit, all exits' logits)": lambda x: forward(state, x),
        "ExitExplainer (prepared once)": prepared,
        "explain_exits (one-shot)": lambda x: jaxcam.explain_exits(model, x),
        "explain_exits after an in-place weight change": lambda x: jaxcam.explain_exits(model, x),
    }
    before = {"explain_exits after an in-place weight change": change_weights}
    x0 = jax.device_put(images(0))
    change_weights()  # compiles the update's multiplications
    for fn in contenders.values():  # compile (all share the explain program)
        jax.block_until_ready(fn(x0))
    # Correctness first: the one-shot path equals the prepared one, and sees new weights.
    prepared.update(model)
    a = np.asarray(prepared(x0))
    b = np.asarray(jaxcam.explain_exits(model, x0))
    max_diff = float(np.abs(a - b).max())
    _split_cache.clear()
    fresh_ok = bool(np.array_equal(np.asarray(jaxcam.ExitExplainer(model)(x0)), b))

    times: dict[str, list[float]] = {name: [] for name in contenders}
    times["split: nnx.split + Frozen (uncached)"] = []
    times["split: split_model (cached)"] = []
    for r in range(rounds):
        x = jax.device_put(images(r + 1))
        for name, fn in contenders.items():
            if name in before:
                before[name]()
            t = time.perf_counter()
            jax.block_until_ready(fn(x))
            times[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        _uncached_split(model)
        times["split: nnx.split + Frozen (uncached)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        split_model(model)
        times["split: split_model (cached)"].append(time.perf_counter() - t)
    return {"times": times, "max_diff": max_diff, "fresh_ok": fresh_ok}


def report(r: dict[str, Any], config_name: str, batch: int, rounds: int) -> str:
    """The Markdown section for RESULTS.md."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    med = {k: statistics.median(v) for k, v in r["times"].items()}
    unit = med["forward (jit, all exits' logits)"]
    prep = med["ExitExplainer (prepared once)"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = "\n".join(
        f"| {name} | {1e3 * m:.1f} | {1e3 * min(r['times'][name]):.1f} | "
        + (f"{m / unit:.2f} | {m / prep:.2f} |" if not name.startswith("split") else "- | - |")
        for name, m in med.items())
    return (f"\n## {when[:10]}: one-shot explain_exits against the prepared ExitExplainer\n\n"
            f"- Machine: {cpu_model()}, {usable_cores()} usable cores, {platform.platform()}; "
            f"load average after the run {load} (cores shared with other processes).\n"
            f"- Date: {when}. Command: `python -m benchmarks.bench_one_shot --config "
            f"{config_name} --batch {batch} --rounds {rounds}`; MSD-Net {config_name}, random "
            f"weights, all exits, Grad-CAM, batch {batch}, interleaved rounds, medians.\n"
            f"- Correctness: one-shot maps vs the prepared explainer's: max |diff| "
            f"{r['max_diff']:.1e}; after a cache clear, a fresh ExitExplainer gives the same "
            f"maps as the cached one-shot call: {r['fresh_ok']}.\n\n"
            f"| contender | median (ms) | min (ms) | / forward | / ExitExplainer |\n"
            f"|---|---|---|---|---|\n{rows}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cifar10_anytime")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--record", default=None, help="append the section to this file")
    args = parser.parse_args()
    r = measure(args.config, args.batch, args.rounds)
    text = report(r, args.config, args.batch, args.rounds)
    print(text)
    if args.record:
        with open(args.record, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()

"""Cost of jaxcam's Grad-CAM relative to the jitted forward pass alone, on MSD-Net.

    python -m benchmarks.bench_gradcam_cost [--config cifar10_anytime] [--batch 64]
        [--rounds 20] [--record benchmarks/RESULTS.md]

Contenders are timed in interleaved rounds (one call of each per round, medians reported), so
the ratios come from the same moments of the machine's load. Also reports the breakdown of the
all-exit computation into backbone forward, heads forward, heads backward and CAM math, and
checks that a second call with new data of the same shape does not trace or compile.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import jaxcam
from benchmarks._env import cpu_model
from jaxcam.extend import fast_strided_conv_grads
from jaxcam.methods import gradcam
from jaxcam.postprocess import postprocess
from msdnet_flax.model.msdnet import MSDNet
from msdnet_flax.model.presets import get_config

Fn = Callable[[jax.Array], Any]


def _computations(model: MSDNet, batch: int) -> tuple[dict[str, Fn], Callable[[int], jax.Array]]:
    """The timed computations (the contenders, then the all-exit breakdown) and the inputs.

    Args:
      model: the network, in eval mode.
      batch: images per call.

    Returns:
      ``(computations, images)``: each computation by name, one call on a batch of images, and
      ``images(seed)``, a batch of random images.
    """
    config = model.config
    graphdef, state = nnx.split(model)
    size = config.image_size
    last = config.n_blocks - 1

    def images(seed: int) -> jax.Array:
        return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))

    @jax.jit
    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    @jax.jit
    def backbone(state, x):
        return nnx.merge(graphdef, state).exit_features(x)

    @jax.jit
    def heads_forward(state, feats):
        m = nnx.merge(graphdef, state)
        return [m.classify(k, f) for k, f in enumerate(feats)]

    @jax.jit
    def heads_backward(state, feats):
        m = nnx.merge(graphdef, state)

        def total(feats):
            return sum(jnp.max(m.classify(k, f), axis=-1).sum() for k, f in enumerate(feats))

        return jax.grad(fast_strided_conv_grads(total))(feats)

    @jax.jit
    def cam_math(feats, grads):
        return jnp.stack([postprocess([gradcam(a, g)], (size, size))
                          for a, g in zip(feats, grads, strict=True)])

    # As a user explaining many batches calls jaxcam: explainers built once per model.
    last_exit = jaxcam.Explainer(model, target_layer=model.exit_feature_path(last),
                                 output_index=last)
    all_exits = jaxcam.ExitExplainer(model)
    x0 = images(0)
    feats = backbone(state, x0)
    grads = heads_backward(state, feats)
    return {
        "forward (jit, all exits' logits)": lambda x: forward(state, x),
        "Grad-CAM, last exit (Explainer)": last_exit,
        f"Grad-CAM, all {config.n_blocks} exits (ExitExplainer)": all_exits,
        "backbone forward": lambda x: backbone(state, x),
        "heads forward": lambda x: heads_forward(state, feats),
        "heads backward (input gradients only)": lambda x: heads_backward(state, feats),
        "CAM math (weights, ReLU, normalise, resize)": lambda x: cam_math(feats, grads),
    }, images


def _time(computations: dict[str, Fn], images: Callable[[int], jax.Array], rounds: int
          ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Seconds of each computation's first call, and of its calls in ``rounds`` interleaved
    rounds on new data (which must neither trace nor compile).

    Args:
      computations: the timed computations by name.
      images: a batch of random images for a seed.
      rounds: timed rounds.

    Returns:
      ``(first_call_s, times)``, by name.
    """
    x0 = images(0)
    compile_s = {}
    for name, fn in computations.items():
        t = time.perf_counter()
        jax.block_until_ready(fn(x0))
        compile_s[name] = time.perf_counter() - t

    compiled: list[str] = []

    def listener(event: str, duration: float, **kwargs: object) -> None:
        if event.startswith("/jax/core/compile/"):
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    times: dict[str, list[float]] = {name: [] for name in computations}
    try:
        for r in range(rounds):
            x = images(r + 1)
            for name, fn in computations.items():
                t = time.perf_counter()
                jax.block_until_ready(fn(x))
                times[name].append(time.perf_counter() - t)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not compiled, f"a call with new data traced or compiled: {compiled}"
    return compile_s, times


def _table(args: argparse.Namespace, compile_s: dict[str, float],
           times: dict[str, list[float]]) -> str:
    """The Markdown table of the timings, with the run's machine and command."""
    base = statistics.median(times["forward (jit, all exits' logits)"])
    lines = [
        f"### Grad-CAM cost vs forward — {args.config}, batch {args.batch}",
        "",
        f"- date: {datetime.date.today().isoformat()}; machine: {cpu_model()}, "
        f"{os.cpu_count()} cores; jax {jax.__version__} ({jax.default_backend()}), "
        f"python {platform.python_version()}",
        f"- command: `python -m benchmarks.bench_gradcam_cost --config {args.config} "
        f"--batch {args.batch} --rounds {args.rounds}`",
        f"- {args.rounds} interleaved rounds after warm-up; median (min-max); ratio to the "
        "jitted forward measured in the same run; no retrace/recompile on new data: "
        "checked (no JAX compile event during the rounds)",
        "",
        "| computation | median ms | min-max ms | x forward | first call s (trace+compile) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, t in times.items():
        med = statistics.median(t)
        lines.append(f"| {name} | {1e3 * med:.1f} | {1e3 * min(t):.1f}-{1e3 * max(t):.1f} | "
                     f"{med / base:.2f} | {compile_s[name]:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cifar10_anytime")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--record", default=None, help="append the table to this Markdown file")
    args = parser.parse_args(argv)

    model = MSDNet(get_config(args.config), rngs=nnx.Rngs(0))
    model.eval()
    computations, images = _computations(model, args.batch)
    compile_s, times = _time(computations, images, args.rounds)
    table = _table(args, compile_s, times)
    print(table)
    if args.record:
        with open(args.record, "a") as f:
            f.write("\n" + table)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

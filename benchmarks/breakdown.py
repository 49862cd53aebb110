"""Where all-exit Grad-CAM time goes, piece by piece, in JAX (jaxcam's way) and in PyTorch.

    python -m benchmarks.breakdown [--config cifar10_anytime] [--batch 64] [--rounds 5]

Same twins, inputs and targets as the suite; each round calls every piece once (interleaved);
medians. Pieces: the backbone up to every exit's classifier input; the heads' forward; the heads'
forward plus the input gradient of the summed target scores (JAX: as ``explain_exits`` computes
it, with ``fast_strided_conv_grads``, and with JAX's own rule; PyTorch: ``autograd.grad`` with
respect to the features); the CAM math; and the whole call.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import torch
from flax import nnx

from benchmarks import _env, torch_side
from benchmarks.contender import make_inputs
from benchmarks.jax_side import jaxcam_all_exits
from benchmarks.models import make_twins
from benchmarks.timing import timed_call
from jaxcam.extend import fast_strided_conv_grads
from jaxcam.methods import gradcam
from jaxcam.postprocess import postprocess


def _jax_pieces(twins: Any, inputs: Any) -> dict[str, Callable[[], Any]]:
    graphdef, state = nnx.split(twins.flax_model)
    x, classes = inputs.jax_images, inputs.jax_classes
    size = inputs.size

    def model(state: Any) -> Any:
        return nnx.merge(graphdef, state)

    def total(state: Any, feats: list[jax.Array]) -> jax.Array:
        m = model(state)
        return sum(jnp.take_along_axis(m.classify(k, f), classes[k][:, None], 1).sum()
                   for k, f in enumerate(feats))

    backbone = jax.jit(lambda s, x: model(s).exit_features(x))
    heads = jax.jit(lambda s, fs: [model(s).classify(k, f) for k, f in enumerate(fs)])
    grad_fast = jax.jit(lambda s, fs: jax.grad(fast_strided_conv_grads(
        lambda fs: total(s, fs)))(fs))
    grad_plain = jax.jit(lambda s, fs: jax.grad(lambda fs: total(s, fs))(fs))
    cam = jax.jit(lambda fs, gs: jnp.stack([postprocess([gradcam(a, g)], size)
                                            for a, g in zip(fs, gs, strict=True)]))
    feats = jax.block_until_ready(backbone(state, x))
    grads = jax.block_until_ready(grad_fast(state, feats))
    block = jax.block_until_ready
    return {
        "backbone forward": lambda: block(backbone(state, x)),
        "heads forward": lambda: block(heads(state, feats)),
        "heads forward + input gradient": lambda: block(grad_fast(state, feats)),
        "  (same, JAX's own conv transpose rule)": lambda: block(grad_plain(state, feats)),
        "CAM math (weights, ReLU, min-max, resize)": lambda: block(cam(feats, grads)),
        "whole call (explain_exits / best PyTorch)": lambda: block(
            jaxcam_all_exits(twins, inputs)),
    }


def _torch_pieces(twins: Any, inputs: Any) -> dict[str, Callable[[], Any]]:
    net, x, classes = twins.torch_model, inputs.torch_images, inputs.torch_classes
    with torch.no_grad():
        feats = [f.requires_grad_() for f in net.exit_features(x)]

    def grads() -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            total = sum(net.classify(k, f).gather(1, classes[k][:, None]).sum()
                        for k, f in enumerate(feats))
            return torch.autograd.grad(total, feats)

    g = grads()

    def heads() -> list[torch.Tensor]:
        with torch.no_grad():
            return [net.classify(k, f) for k, f in enumerate(feats)]

    def backbone() -> list[torch.Tensor]:
        with torch.no_grad():
            return net.exit_features(x)

    def cam() -> torch.Tensor:
        with torch.no_grad():
            raw = torch.stack([torch_side.gradcam_raw(f, gk) for f, gk in zip(feats, g,
                                                                             strict=True)])
            return torch_side.finish(raw.flatten(0, 1), inputs.size)

    whole = torch_side.contenders(twins, inputs.size)
    best = next(c for c in whole if c.key == torch_side.TORCH_BEST).prepare(inputs)
    return {
        "backbone forward": backbone,
        "heads forward": heads,
        "heads forward + input gradient": grads,
        "CAM math (weights, ReLU, min-max, resize)": cam,
        "whole call (explain_exits / best PyTorch)": best,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cifar10_anytime")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(_env.usable_cores())
    twins = make_twins(args.config, 0, torch.device("cpu"))
    inputs = make_inputs(args.batch, twins.image_size, twins.num_exits, twins.num_classes,
                         args.batch, twins.device)
    pieces = {("jax", k): f for k, f in _jax_pieces(twins, inputs).items()}
    pieces |= {("torch", k): f for k, f in _torch_pieces(twins, inputs).items()}
    for (framework, _), fn in pieces.items():  # warm-up (JAX: compile)
        timed_call(fn, framework)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in pieces}
    for _ in range(args.rounds):
        for (framework, name), fn in pieces.items():
            times[(framework, name)].append(timed_call(fn, framework)[0])
    med = {key: statistics.median(t) for key, t in times.items()}
    names = list(dict.fromkeys(name for _, name in pieces))
    print(f"{args.config}, batch {args.batch}, {args.rounds} interleaved rounds, median ms "
          f"(torch threads {torch.get_num_threads()}):\n")
    print("| piece | JAX ms | PyTorch ms | JAX / PyTorch |\n| --- | ---: | ---: | ---: |")
    for name in names:
        j, t = med.get(("jax", name)), med.get(("torch", name))
        ratio = f"{j / t:.2f}" if j and t else ""
        print(f"| {name} | {'' if j is None else f'{1e3 * j:.0f}'} "
              f"| {'' if t is None else f'{1e3 * t:.0f}'} | {ratio} |")


if __name__ == "__main__":
    main()

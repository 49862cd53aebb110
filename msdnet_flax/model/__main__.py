"""``python -m msdnet_flax.model``: build the CIFAR-10 10-exit MSD-Net and report each exit.

Describes the network; it explains nothing (``jaxcam demo`` does). Prints per-exit feature shapes
(the classifier inputs jaxcam explains), cumulative parameters and multiply-adds, and checks that
one jitted forward pass gives every exit's logits. ``--config`` picks another preset.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from msdnet_flax.model.cost import cost
from msdnet_flax.model.msdnet import MSDNet
from msdnet_flax.model.presets import PRESETS, get_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m msdnet_flax.model",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cifar10_anytime", choices=sorted(PRESETS))
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)

    config = get_config(args.config)
    model = MSDNet(config, rngs=nnx.Rngs(0))
    model.eval()
    size = config.image_size
    x = jax.random.normal(jax.random.key(1), (args.batch_size, size, size, 3), jnp.float32)

    @nnx.jit
    def forward(model: MSDNet, x: jax.Array):
        return model.exit_features(x), model(x)

    t0 = time.perf_counter()
    features, logits = jax.block_until_ready(forward(model, x))
    t1 = time.perf_counter()
    features, logits = jax.block_until_ready(forward(model, x))
    t2 = time.perf_counter()

    print(f"MSD-Net {args.config}: {config.n_blocks} exits, {config.num_scales} scales, "
          f"{size}x{size} inputs, {config.num_classes} classes")
    print(f"{'exit':>4}  {'features (h, w, c)':>20}  {'params (M)':>10}  {'MAdds (M)':>10}")
    for k, (f, c) in enumerate(zip(features, cost(config), strict=True)):
        print(f"{k:>4}  {str(tuple(f.shape[1:])):>20}  {c.params / 1e6:>10.3f}  "
              f"{c.flops / 1e6:>10.2f}")
    assert all(l.shape == (args.batch_size, config.num_classes) for l in logits)
    print(f"jitted forward of all exits, batch {args.batch_size}: compile+run "
          f"{t1 - t0:.2f}s, run {1e3 * (t2 - t1):.1f} ms")


if __name__ == "__main__":
    main()

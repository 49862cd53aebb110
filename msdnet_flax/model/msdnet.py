"""MSD-Net in Flax NNX, with every exit's classifier input exposed.

Reference: G. Huang, D. Chen, T. Li, F. Wu, L. van der Maaten, K. Q. Weinberger, "Multi-Scale
Dense Networks for Resource Efficient Image Classification", ICLR 2018.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.layers import Classifier, make_layer
from msdnet_flax.model.plan import TransitionSpec, build_plan

__all__ = ["MSDNet", "check_images"]


def check_images(x: jax.Array, config: MSDNetConfig) -> None:
    """Raise a ValueError or TypeError naming what is wrong with a batch of input images.

    Only shapes and dtypes are checked, so it works on tracers inside ``jax.jit``.
    """
    size = config.image_size
    expected = f"(batch, {size}, {size}, 3) NHWC float images"
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(f"MSDNet expects an array of {expected}, got {type(x).__name__}")
    if len(shape) != 4:
        raise ValueError(
            f"MSDNet expects {expected}: rank 4, got rank {len(shape)} with shape {tuple(shape)}"
            + (" (add a batch axis: x[None])" if len(shape) == 3 else ""))
    if shape[-1] != 3:
        hint = " (it looks like NCHW: transpose with x.transpose(0, 2, 3, 1))" \
            if shape[1] == 3 else ""
        raise ValueError(f"MSDNet expects {expected}: 3 channels last, got shape "
                         f"{tuple(shape)}{hint}")
    if tuple(shape[1:3]) != (size, size):
        raise ValueError(
            f"MSDNet ({config.data} heads) expects {size}x{size} images, got "
            f"{shape[1]}x{shape[2]}: the exit classifiers assume the coarsest scale of a "
            f"{size}x{size} input; resize the images to {size}x{size}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"MSDNet expects float images (normalised, e.g. float32), got dtype "
                        f"{dtype}; convert with x.astype(jnp.float32) after normalising")
    if shape[0] == 0:
        raise ValueError("MSDNet got an empty batch (batch size 0)")


class MSDNet(nnx.Module):
    """A multi-scale dense network with a classifier after every block.

    The public contract jaxcam relies on:
      * ``model(x)`` -> list of exit logits, each (B, num_classes);
      * ``model.exit_features(x)`` -> list of the feature maps entering each exit's classifier
        (the coarsest scale, NHWC);
      * ``model.classify(k, features)`` -> exit ``k``'s logits from those features.

    BatchNorm follows NNX's modes: ``model.train()`` uses and updates batch statistics,
    ``model.eval()`` uses the running averages. A new model starts in training mode.

    Args:
      config: the architecture.
      rngs: random streams for the initial weights.
    """

    def __init__(self, config: MSDNetConfig, *, rngs: nnx.Rngs):
        self.config = config
        plan = build_plan(config)
        self.blocks = nnx.List([
            nnx.List([make_layer(spec, rngs=rngs) for spec in block.layers]) for block in plan
        ])
        self.classifier = nnx.List([Classifier(block.classifier, rngs=rngs) for block in plan])

    @property
    def num_exits(self) -> int:
        return len(self.classifier)

    def exit_features(self, x: jax.Array) -> list[jax.Array]:
        """The coarsest-scale feature map after each block: the input of each exit's classifier.

        Args:
          x: (B, H, W, 3) float images, H = W = ``config.image_size``.

        Returns:
          One (B, h, w, c_k) array per exit.
        """
        check_images(x, self.config)
        features = []
        xs = x
        for block in self.blocks:
            for layer in block:
                xs = layer(xs)
            features.append(xs[-1])
        return features

    def exit_feature_path(self, k: int) -> str:
        """The module path whose output is exit ``k``'s classifier input (its coarsest scale).

        ``jaxcam.explain(model, x, target_layer=model.exit_feature_path(k), targets=...)`` with
        a target on exit k's logits explains the same map as ``jaxcam.explain_exits``.
        """
        block = build_plan(self.config)[k]
        j = len(block.layers) - 1
        last = block.layers[j]
        if isinstance(last, TransitionSpec):
            return f"blocks/{k}/{j}/m/{len(last.n_in) - 1}"
        return f"blocks/{k}/{j}/layers/{len(last.convs) - 1}"

    def classify(self, k: int, features: jax.Array) -> jax.Array:
        """Exit ``k``'s logits (B, num_classes) from its classifier input ``features``."""
        if not -self.num_exits <= k < self.num_exits:
            raise IndexError(f"exit {k} does not exist: this MSDNet has exits "
                             f"0..{self.num_exits - 1}")
        return self.classifier[k](features)

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        """Logits of every exit, in order, each (B, num_classes)."""
        return [self.classify(k, f) for k, f in enumerate(self.exit_features(x))]

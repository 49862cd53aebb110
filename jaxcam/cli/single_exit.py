"""A single-exit classifier presented as a multi-exit model (one exit), for the batch engine."""

from __future__ import annotations

import jax
from flax import nnx

__all__ = ["SingleExit"]


class SingleExit(nnx.Module):
    """A classifier split at its last feature map, presented as a one-exit model.

    Grad-CAM and its relatives differentiate the classifier head with respect to the feature
    map it pools (Selvaraju et al., "Grad-CAM", ICCV 2017); a network with ``features(x)`` and
    ``head(f)`` has exactly that split, so exit 0 is ``head(features(x))``.

    Args:
      net: an NNX module with ``features(x) -> (B, h, w, C)`` and ``head(f) -> (B, classes)``.

    Attributes:
      num_exits: always 1.
    """

    num_exits = 1

    def __init__(self, net: nnx.Module):
        self.net = net

    def exit_features(self, x: jax.Array) -> list[jax.Array]:
        """``[features(x)]``: the one exit's classifier input."""
        return [self.net.features(x)]

    def classify(self, k: int, features: jax.Array) -> jax.Array:
        """``head(features)``: the logits of exit ``k`` (only 0 exists).

        Raises:
          IndexError: ``k`` is not 0.
        """
        if k != 0:
            raise IndexError(f"a single-exit model has exit 0 only, got {k}")
        return self.net.head(features)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The wrapped network's logits."""
        return self.net.head(self.net.features(x))

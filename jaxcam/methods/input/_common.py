"""Helpers shared by the input-space methods: input gradients and channel reductions."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from jaxcam.targets import ScoreFn

Reduction = Literal["max_abs", "sum_abs", "sum", "none"]


def input_gradient(score_fn: ScoreFn, images: jax.Array) -> jax.Array:
    """Returns ``d score_fn(images)[b] / d images[b]`` for every image, shape ``(B, H, W, C)``.

    Summing the scores before differentiating gives every image its own gradient in one backward
    pass, because image ``b``'s score does not depend on the other images.

    Args:
        score_fn: images ``(B, H, W, C)`` -> scores ``(B,)``.
        images: the images ``(B, H, W, C)``.

    Returns:
        The gradient of each image's score with respect to that image, ``(B, H, W, C)``.
    """
    return jax.grad(lambda x: jnp.sum(score_fn(x)))(images)


def reduce_channels(attributions: jax.Array, reduce: Reduction) -> jax.Array:
    """Collapses the channel axis of ``(B, H, W, C)`` attributions into a ``(B, H, W)`` map.

    Args:
        attributions: per-pixel, per-channel attributions ``(B, H, W, C)``.
        reduce: ``"max_abs"`` (max over channels of the absolute value, Simonyan et al. 2014),
            ``"sum_abs"`` (sum of absolute values), ``"sum"`` (signed sum, keeps the
            completeness of integrated gradients) or ``"none"`` (returned unchanged).

    Returns:
        ``(B, H, W)``, or the input ``(B, H, W, C)`` for ``"none"``.
    """
    if reduce == "max_abs":
        return jnp.max(jnp.abs(attributions), axis=-1)
    if reduce == "sum_abs":
        return jnp.sum(jnp.abs(attributions), axis=-1)
    if reduce == "sum":
        return jnp.sum(attributions, axis=-1)
    if reduce == "none":
        return attributions
    raise ValueError(f"reduce must be 'max_abs', 'sum_abs', 'sum' or 'none', got {reduce!r}")

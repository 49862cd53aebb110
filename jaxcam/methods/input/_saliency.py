"""Vanilla gradient saliency (Simonyan et al. 2014)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam.methods.input._common import Reduction, input_gradient, reduce_channels
from jaxcam.registry import InputProbe, Method, register
from jaxcam.targets import ScoreFn


def saliency(score_fn: ScoreFn, images: jax.Array, *, reduce: Reduction = "max_abs") -> jax.Array:
    """Absolute input gradient of each image's score, reduced over colour channels.

    Computes ``|d score_b / d images_b|``; the paper's map is the maximum of that over channels
    (``reduce="max_abs"``). ``reduce="none"`` returns the per-channel absolute gradient, which is
    what captum's ``Saliency(...).attribute(x, abs=True)`` returns (NCHW there).

    References:
        Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising Image
        Classification Models and Saliency Maps", ICLR workshop 2014.

    Args:
        score_fn: images ``(B, H, W, C)`` -> scores ``(B,)``.
        images: the images ``(B, H, W, C)``.
        reduce: channel reduction, see ``reduce_channels``: ``"max_abs"`` (default, the paper),
            ``"sum_abs"``, or ``"none"`` for ``(B, H, W, C)``. (``"sum"`` of absolute values is
            the same as ``"sum_abs"`` here.)

    Returns:
        ``(B, H, W)`` saliency maps, or ``(B, H, W, C)`` for ``reduce="none"``.
    """
    return reduce_channels(jnp.abs(input_gradient(score_fn, images)), reduce)


def _saliency_probe(probe: InputProbe) -> jax.Array:
    """The registry's entry point: the signed input gradient (reduced by the caller)."""
    return input_gradient(probe.score_images, probe.images)


METHOD = register(Method(
    name="saliency", kind="input", fn=_saliency_probe,
    summary="absolute input gradient of the score, max over colour channels",
    paper="Simonyan, Vedaldi & Zisserman, ICLR Workshops 2014", needs_layer=False))

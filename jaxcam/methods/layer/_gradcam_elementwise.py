"""Grad-CAM element-wise (pytorch-grad-cam's ``GradCAMElementWise``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcam.methods.layer._common import as_float_array, combine_channels, resolve_layout
from jaxcam.registry import Method, register


def gradcamelementwise(
    activations: Any, gradients: Any, *, eigen_smooth: bool = False,
    layout: str | None = None
) -> jax.Array:
    """Grad-CAM element-wise: the positive part of activations times gradients, summed.

    ``cam_ij = sum_c relu(G_ijc A_ijc)``: HiResCAM with a ReLU before the channel sum, so that
    no channel's negative evidence cancels another's positive evidence.

    Args:
        activations: ``(B, h, w, C)`` activations ``A`` of the target layer.
        gradients: ``(B, h, w, C)`` gradients ``G`` of the target score w.r.t. ``A``.
        eigen_smooth: project ``relu(G_ijc A_ijc)`` on its first principal component instead of
            summing over channels.
        layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
            PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as
            NHWC, an ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
        The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
        A variant of HiResCAM: Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful
        explanations of convolutional neural networks", 2020. https://arxiv.org/abs/2011.08891
    """
    layout = resolve_layout(layout, activations=activations, gradients=gradients)
    activations = as_float_array(activations, "activations", layout)
    gradients = as_float_array(gradients, "gradients", layout)
    return combine_channels(jnp.maximum(gradients * activations, 0.0), eigen_smooth)


METHOD = register(Method(
    name="gradcamelementwise", kind="activation_gradient", fn=gradcamelementwise,
    summary="ReLU of activations times gradients, summed over channels",
    paper="after Draelos & Carin, 2020 (pytorch-grad-cam's GradCAMElementWise)", multi_exit=True,
    class_name="GradCAMElementWise"))

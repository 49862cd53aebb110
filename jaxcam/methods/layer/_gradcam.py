"""Grad-CAM."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcam.methods.layer._common import (
    as_float_array,
    combine_channels,
    resolve_layout,
    spatial_axes,
)
from jaxcam.registry import Method, register


def gradcam(activations: Any, gradients: Any, *, eigen_smooth: bool = False,
            layout: str | None = None) -> jax.Array:
    """Grad-CAM: channels weighted by their spatially averaged gradient.

    ``w_c = mean_{ij} G_ijc``, ``cam_ij = sum_c w_c A_ijc``.

    Args:
        activations: ``(B, h, w, C)`` activations ``A`` of the target layer.
        gradients: ``(B, h, w, C)`` gradients ``G`` of the target score w.r.t. ``A``.
        eigen_smooth: project ``w_c A_ijc`` on its first principal component instead of summing
            over channels.
        layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
            PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as
            NHWC, an ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
        The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
        Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
        Localization", ICCV 2017. https://arxiv.org/abs/1610.02391
    """
    layout = resolve_layout(layout, activations=activations, gradients=gradients)
    activations = as_float_array(activations, "activations", layout)
    gradients = as_float_array(gradients, "gradients", layout)
    weights = jnp.mean(gradients, axis=spatial_axes(gradients), keepdims=True)
    return combine_channels(weights * activations, eigen_smooth)


METHOD = register(Method(
    name="gradcam", kind="activation_gradient", fn=gradcam,
    summary="channels weighted by their spatially averaged gradient",
    paper="Selvaraju et al., ICCV 2017", multi_exit=True, class_name="GradCAM"))

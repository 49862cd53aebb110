"""XGrad-CAM."""

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

# pytorch-grad-cam's guard against a channel whose activations sum to zero.
_SUM_EPS = 1e-7


def xgradcam(activations: Any, gradients: Any, *, eigen_smooth: bool = False,
             layout: str | None = None) -> jax.Array:
    """XGrad-CAM: channels weighted by gradients averaged with the activations as weights.

    ``w_c = sum_{ij} G_ijc A_ijc / (sum_{ij} A_ijc + 1e-7)``, ``cam_ij = sum_c w_c A_ijc``.

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
        Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs",
        BMVC 2020. https://arxiv.org/abs/2008.02312
    """
    layout = resolve_layout(layout, activations=activations, gradients=gradients)
    activations = as_float_array(activations, "activations", layout)
    gradients = as_float_array(gradients, "gradients", layout)
    axes = spatial_axes(gradients)
    sum_activations = jnp.sum(activations, axis=axes, keepdims=True)
    weights = jnp.sum(
        gradients * activations / (sum_activations + _SUM_EPS), axis=axes, keepdims=True
    )
    return combine_channels(weights * activations, eigen_smooth)


METHOD = register(Method(
    name="xgradcam", kind="activation_gradient", fn=xgradcam,
    summary="gradients averaged with the normalised activations as weights",
    paper="Fu et al., BMVC 2020", multi_exit=True, class_name="XGradCAM"))

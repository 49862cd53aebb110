"""Grad-CAM++."""

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

# pytorch-grad-cam's guard against a zero denominator in the alpha coefficients.
_ALPHA_EPS = 1e-6


def gradcamplusplus(activations: Any, gradients: Any, *, eigen_smooth: bool = False,
                    layout: str | None = None) -> jax.Array:
    """Grad-CAM++: channels weighted by positive gradients times per-pixel alpha coefficients.

    With ``S_c = sum_{ij} A_ijc`` (Eq. 19 of the paper, exponential score assumed)::

        alpha_ijc = G_ijc^2 / (2 G_ijc^2 + S_c G_ijc^3 + 1e-6)   (0 where G_ijc == 0)
        w_c = sum_{ij} relu(G_ijc) alpha_ijc
        cam_ij = sum_c w_c A_ijc

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
        Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations for
        Deep Convolutional Networks", WACV 2018. https://arxiv.org/abs/1710.11063
    """
    layout = resolve_layout(layout, activations=activations, gradients=gradients)
    activations = as_float_array(activations, "activations", layout)
    gradients = as_float_array(gradients, "gradients", layout)
    axes = spatial_axes(gradients)
    grads_power_2 = gradients**2
    grads_power_3 = grads_power_2 * gradients
    sum_activations = jnp.sum(activations, axis=axes, keepdims=True)
    alpha = grads_power_2 / (2 * grads_power_2 + sum_activations * grads_power_3 + _ALPHA_EPS)
    alpha = jnp.where(gradients != 0, alpha, 0.0)
    weights = jnp.sum(jnp.maximum(gradients, 0.0) * alpha, axis=axes, keepdims=True)
    return combine_channels(weights * activations, eigen_smooth)


METHOD = register(Method(
    name="gradcamplusplus", kind="activation_gradient", fn=gradcamplusplus,
    summary="positive gradients weighted by per-pixel alpha coefficients",
    paper="Chattopadhyay et al., WACV 2018", multi_exit=True, class_name="GradCAMPlusPlus"))

"""HiResCAM."""

from __future__ import annotations

from typing import Any

import jax

from jaxcam.methods._common import as_float_array, reduce_channels


def hirescam(activations: Any, gradients: Any, *, eigen_smooth: bool = False) -> jax.Array:
    """HiResCAM: activations times gradients, element-wise, summed over channels.

    ``cam_ij = sum_c G_ijc A_ijc``. With ``eigen_smooth`` the faithfulness guarantee of the
    paper no longer holds (pytorch-grad-cam prints a warning; this function stays silent).

    Args:
        activations: ``(B, h, w, C)`` activations ``A`` of the target layer.
        gradients: ``(B, h, w, C)`` gradients ``G`` of the target score w.r.t. ``A``.
        eigen_smooth: project ``G_ijc A_ijc`` on its first principal component instead of
            summing over channels.

    Returns:
        The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
        Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
        convolutional neural networks", 2020. https://arxiv.org/abs/2011.08891
    """
    activations = as_float_array(activations, "activations")
    gradients = as_float_array(gradients, "gradients")
    return reduce_channels(gradients * activations, eigen_smooth)

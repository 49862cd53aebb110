"""HiResCAM."""

from __future__ import annotations

from typing import Any

import jax

from jaxcam.methods.layer._common import as_float_array, combine_channels, resolve_layout
from jaxcam.registry import Method, register


def hirescam(activations: Any, gradients: Any, *, eigen_smooth: bool = False,
             layout: str | None = None) -> jax.Array:
    """HiResCAM: activations times gradients, element-wise, summed over channels.

    ``cam_ij = sum_c G_ijc A_ijc``. With ``eigen_smooth`` the faithfulness guarantee of the
    paper no longer holds (pytorch-grad-cam prints a warning; this function stays silent).

    Args:
        activations: ``(B, h, w, C)`` activations ``A`` of the target layer.
        gradients: ``(B, h, w, C)`` gradients ``G`` of the target score w.r.t. ``A``.
        eigen_smooth: project ``G_ijc A_ijc`` on its first principal component instead of
            summing over channels.
        layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
            PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as
            NHWC, an ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
        The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
        Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
        convolutional neural networks", 2020. https://arxiv.org/abs/2011.08891
    """
    layout = resolve_layout(layout, activations=activations, gradients=gradients)
    activations = as_float_array(activations, "activations", layout)
    gradients = as_float_array(gradients, "gradients", layout)
    return combine_channels(gradients * activations, eigen_smooth)


METHOD = register(Method(
    name="hirescam", kind="activation_gradient", fn=hirescam,
    summary="activations times gradients, element-wise, summed over channels",
    paper="Draelos & Carin, arXiv 2011.08891, 2020", multi_exit=True, class_name="HiResCAM"))

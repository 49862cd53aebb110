"""Eigen-Grad-CAM (pytorch-grad-cam's ``EigenGradCAM``)."""

from __future__ import annotations

from typing import Any

import jax

from jaxcam.methods.layer._common import (
    as_float_array,
    principal_component_projection,
    resolve_layout,
)
from jaxcam.registry import Method, register


def eigengradcam(activations: Any, gradients: Any, *, eigen_smooth: bool = False,
                 layout: str | None = None) -> jax.Array:
    """Eigen-Grad-CAM: activations times gradients projected on their first principal component.

    ``X = (G * A) reshaped to (h*w, C) minus its per-channel mean``, ``cam = X v_1`` with ``v_1``
    the first right singular vector of ``X``; the sign of ``v_1`` is arbitrary.

    Args:
        activations: ``(B, h, w, C)`` activations ``A`` of the target layer.
        gradients: ``(B, h, w, C)`` gradients ``G`` of the target score w.r.t. ``A``.
        eigen_smooth: ignored; the method is already the projection.
        layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
            PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as
            NHWC, an ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
        The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
        Eigen-CAM with class-discriminative gradients, after Muhammad & Yeasin, "Eigen-CAM: Class
        Activation Map using Principal Components", IJCNN 2020. https://arxiv.org/abs/2008.00299
    """
    del eigen_smooth
    layout = resolve_layout(layout, activations=activations, gradients=gradients)
    activations = as_float_array(activations, "activations", layout)
    gradients = as_float_array(gradients, "gradients", layout)
    return principal_component_projection(gradients * activations)


METHOD = register(Method(
    name="eigengradcam", kind="activation_gradient", fn=eigengradcam,
    summary="first principal component of activations times gradients",
    paper="after Muhammad & Yeasin, IJCNN 2020 (pytorch-grad-cam's EigenGradCAM)",
    multi_exit=True, class_name="EigenGradCAM"))

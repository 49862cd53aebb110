"""Eigen-CAM."""

from __future__ import annotations

from typing import Any

import jax

from jaxcam.methods.layer._common import as_float_array, principal_component_projection
from jaxcam.registry import Method, register


def eigencam(
    activations: Any, gradients: Any | None = None, *, eigen_smooth: bool = False,
    layout: str | None = None
) -> jax.Array:
    """Eigen-CAM: the activations projected on their first principal component.

    ``X = A reshaped to (h*w, C) minus its per-channel mean``, ``cam = X v_1`` with ``v_1`` the
    first right singular vector of ``X``. The sign of ``v_1`` is arbitrary (see
    :func:`principal_component_projection`). Needs no gradients.

    Args:
        activations: ``(B, h, w, C)`` activations ``A`` of the target layer.
        gradients: ignored; accepted so that every method shares one signature.
        eigen_smooth: ignored; Eigen-CAM is already the projection.
        layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
            PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as
            NHWC, an ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
        The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
        Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN
        2020. https://arxiv.org/abs/2008.00299
    """
    del gradients, eigen_smooth
    return principal_component_projection(as_float_array(activations, "activations", layout))


METHOD = register(Method(
    name="eigencam", kind="activation_gradient", fn=eigencam,
    summary="first principal component of the activations (no gradients)",
    paper="Muhammad & Yeasin, IJCNN 2020", uses_gradients=False, multi_exit=True,
    class_name="EigenCAM"))

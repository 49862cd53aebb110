"""Seg-Eigen-CAM."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcam.methods.layer._common import (
    as_float_array,
    principal_component_projection,
    resolve_layout,
)
from jaxcam.registry import Method, register


def sign_corrected_projection(activations: Any) -> jax.Array:
    """The first-principal-component projection with its sign fixed so that the larger extreme
    is positive: negated where ``|min| > |max|`` (pytorch-grad-cam's
    ``get_2d_projection_with_sign_correction``).

    Args:
      activations: ``(B, h, w, C)`` (weighted) activations.

    Returns:
      The ``(B, h, w)`` projections.
    """
    projection = principal_component_projection(activations)
    axes = tuple(range(1, projection.ndim))
    low = jnp.min(projection, axis=axes, keepdims=True)
    high = jnp.max(projection, axis=axes, keepdims=True)
    return jnp.where(jnp.abs(low) > jnp.abs(high), -projection, projection)


def segeigencam(activations: Any, gradients: Any, *, eigen_smooth: bool = False,
                layout: str | None = None) -> jax.Array:
    """Seg-Eigen-CAM: ``|G| * A`` projected on its first principal component, sign-corrected.

    The SVD's arbitrary sign is fixed so that the extreme of larger magnitude is positive, so,
    unlike Eigen-CAM, the map is determined (up to an exact tie of the extremes).

    Args:
      activations: ``(B, h, w, C)`` activations ``A`` of the target layer.
      gradients: ``(B, h, w, C)`` gradients ``G`` of the target score w.r.t. ``A``.
      eigen_smooth: ignored; the method is already a projection (as in pytorch-grad-cam).
      layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
        PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as NHWC, an
        ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
      The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
      Chung & Ying, "Seg-Eigen-CAM: Eigen-Value-Based Visual Explanations for Semantic
      Segmentation Models", Applied Sciences 15(13) 7562, 2025.
      https://doi.org/10.3390/app15137562
    """
    del eigen_smooth
    layout = resolve_layout(layout, activations=activations, gradients=gradients)
    activations = as_float_array(activations, "activations", layout)
    gradients = as_float_array(gradients, "gradients", layout)
    return sign_corrected_projection(jnp.abs(gradients) * activations)


METHOD = register(Method(
    name="segeigencam", kind="activation_gradient", fn=segeigencam,
    summary="|gradients| x activations on their first principal component, sign-corrected",
    paper="Chung & Ying, Applied Sciences 2025", multi_exit=True, class_name="SegEigenCAM"))

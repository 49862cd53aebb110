"""ShapleyCAM."""

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


def shapleycam(activations: Any, gradients: Any, *, hvp: Any, eigen_smooth: bool = False,
               layout: str | None = None) -> jax.Array:
    """ShapleyCAM: channels weighted by a second-order estimate of their Shapley value.

    ``w_c = mean_ij (G - H A / 2)_ijc``, ``cam_ij = sum_c w_c A_ijc``, where ``H A`` is the
    Hessian of the target score with respect to the activations times the activations. For a
    piecewise-linear head (ReLU, pooling, a linear classifier) and a logit target ``H = 0``
    and ShapleyCAM is Grad-CAM; it differs with a curved target such as
    :class:`jaxcam.targets.ClassifierOutputReST` (the paper's pairing) or a softmax.

    Args:
      activations: ``(B, h, w, C)`` activations ``A`` of the target layer.
      gradients: ``(B, h, w, C)`` gradients ``G`` of the target score w.r.t. ``A``.
      hvp: ``(B, h, w, C)`` Hessian-vector product ``H A`` (the pipeline supplies it).
      eigen_smooth: project ``w_c A_ijc`` on its first principal component instead of summing.
      layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
        PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as NHWC, an
        ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
      The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
      Cai et al., "CAMs as Shapley Value-based Explainers", 2025.
      https://arxiv.org/abs/2501.06261
    """
    layout = resolve_layout(layout, activations=activations, gradients=gradients, hvp=hvp)
    activations = as_float_array(activations, "activations", layout)
    gradients = as_float_array(gradients, "gradients", layout)
    hvp = as_float_array(hvp, "hvp", layout)
    weights = jnp.mean(gradients - 0.5 * hvp, axis=spatial_axes(gradients), keepdims=True)
    return combine_channels(weights * activations, eigen_smooth)


METHOD = register(Method(
    name="shapleycam", kind="activation_gradient", fn=shapleycam,
    summary="channels weighted by gradient minus half the Hessian-activation product",
    paper="Cai et al., arXiv 2501.06261 (2025)", uses_hvp=True, multi_exit=True,
    class_name="ShapleyCAM"))

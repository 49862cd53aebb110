"""LayerCAM."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcam.methods.layer._common import as_float_array, combine_channels, resolve_layout
from jaxcam.registry import Method, register


def layercam(activations: Any, gradients: Any, *, eigen_smooth: bool = False,
             layout: str | None = None) -> jax.Array:
    """LayerCAM: activations weighted pixel by pixel by their positive gradients.

    ``cam_ij = sum_c relu(G_ijc) A_ijc``.

    Args:
        activations: ``(B, h, w, C)`` activations ``A`` of the target layer.
        gradients: ``(B, h, w, C)`` gradients ``G`` of the target score w.r.t. ``A``.
        eigen_smooth: project ``relu(G_ijc) A_ijc`` on its first principal component instead of
            summing over channels.
        layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
            PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as
            NHWC, an ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
        The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
        Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
        IEEE Transactions on Image Processing 30, 2021. https://doi.org/10.1109/TIP.2021.3089943
    """
    layout = resolve_layout(layout, activations=activations, gradients=gradients)
    activations = as_float_array(activations, "activations", layout)
    gradients = as_float_array(gradients, "gradients", layout)
    return combine_channels(jnp.maximum(gradients, 0.0) * activations, eigen_smooth)


METHOD = register(Method(
    name="layercam", kind="activation_gradient", fn=layercam,
    summary="activations weighted by their positive gradients, pixel by pixel",
    paper="Jiang et al., IEEE TIP 2021", multi_exit=True, class_name="LayerCAM"))

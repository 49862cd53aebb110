"""FEM, the Feature Explanation Method."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcam.methods.layer._common import as_float_array, spatial_axes
from jaxcam.registry import Method, register


def fem(activations: Any, gradients: Any | None = None, *, eigen_smooth: bool = False,
        k: float = 2.0, layout: str | None = None) -> jax.Array:
    """FEM: channels weighted by the fraction of their pixels above a k-sigma threshold.

    Per image and channel, ``t_c = mean_ij A_ijc + k std_ij A_ijc`` (population std),
    ``w_c = mean_ij [A_ijc > t_c]`` and ``cam_ij = sum_c w_c A_ijc``: channels with a few
    outstanding responses count. As pytorch-grad-cam's ``FEM``, which has no eigen_smooth.

    Args:
      activations: ``(B, h, w, C)`` activations ``A`` of the target layer.
      gradients: ignored (FEM needs no backward pass).
      eigen_smooth: ignored, as in pytorch-grad-cam.
      k: the number of standard deviations above the mean a response must exceed.
      layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
        PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as NHWC, an
        ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
      The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
      Fuad et al., "Features understanding in 3D CNNs for actions recognition in video", IPTA
      2020. https://hal.science/hal-02963298/document
    """
    del gradients, eigen_smooth
    activations = as_float_array(activations, "activations", layout)
    axes = spatial_axes(activations)
    threshold = (jnp.mean(activations, axis=axes, keepdims=True)
                 + k * jnp.std(activations, axis=axes, keepdims=True))
    weights = jnp.mean(activations > threshold, axis=axes, keepdims=True)
    return jnp.sum(weights * activations, axis=-1)


METHOD = register(Method(
    name="fem", kind="activation_gradient", fn=fem,
    summary="channels weighted by their share of pixels above mean + k std (no gradients)",
    paper="Fuad et al., IPTA 2020", uses_gradients=False, multi_exit=True, class_name="FEM",
    options=("k",)))

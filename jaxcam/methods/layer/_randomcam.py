"""RandomCAM: the random baseline."""

from __future__ import annotations

from typing import Any

import jax

from jaxcam._arrays import as_jax
from jaxcam.methods.layer._common import as_float_array, combine_channels
from jaxcam.registry import Method, register


def random_channel_weights(key: jax.Array, batch: int, channels: int) -> jax.Array:
    """``(B, C)`` weights drawn uniformly from ``[-1, 1)``, RandomCAM's (pytorch-grad-cam draws
    them with ``np.random.uniform(-1, 1, size=(B, C))``)."""
    return jax.random.uniform(key, (batch, channels), minval=-1.0, maxval=1.0)


def randomcam(activations: Any, gradients: Any | None = None, *, key: jax.Array,
              eigen_smooth: bool = False, weights: Any | None = None,
              layout: str | None = None) -> jax.Array:
    """RandomCAM: channels weighted by uniform random numbers, a sanity-check baseline.

    ``w_bc ~ U(-1, 1)`` independently, ``cam_ij = sum_c w_c A_ijc``. pytorch-grad-cam draws the
    weights from NumPy's global generator; here they come from ``key`` (the pipeline's key,
    folded with the layer's index), so a map is reproducible. The same formula with given
    weights is available through ``weights``.

    Args:
      activations: ``(B, h, w, C)`` activations ``A`` of the target layer.
      gradients: ignored.
      key: PRNG key for the weights.
      eigen_smooth: project ``w_c A_ijc`` on its first principal component instead of summing.
      weights: ``(B, C)`` weights to use instead of drawing them.
      layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
        PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as NHWC, an
        ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
      The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
      pytorch-grad-cam's ``RandomCAM`` (Gildenblat et al., 2021), a baseline in the spirit of
      Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    del gradients
    activations = as_float_array(activations, "activations", layout)
    if weights is None:
        weights = random_channel_weights(key, activations.shape[0], activations.shape[-1])
    batch, channels = activations.shape[0], activations.shape[-1]
    weights = as_jax(weights).astype(activations.dtype)
    weights = weights.reshape(batch, *([1] * (activations.ndim - 2)), channels)
    return combine_channels(weights * activations, eigen_smooth)


METHOD = register(Method(
    name="randomcam", kind="activation_gradient", fn=randomcam,
    summary="channels weighted by uniform random numbers in [-1, 1] (a baseline)",
    paper="pytorch-grad-cam (Gildenblat et al.); cf. Adebayo et al., NeurIPS 2018",
    uses_gradients=False, uses_key=True, class_name="RandomCAM"))

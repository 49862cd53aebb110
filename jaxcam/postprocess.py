"""pytorch-grad-cam's default post-processing of raw class activation maps, in pure ``jnp``.

pytorch-grad-cam 1.5.7 (``BaseCAM.compute_cam_per_layer`` then ``BaseCAM.aggregate_multi_layers``)
does, for each target layer ``l`` with raw map ``cam_l`` of shape ``(B, h_l, w_l)``::

    cam_l = relu(cam_l)
    cam_l = (cam_l - min) / (1e-7 + max(cam_l - min))     # per image (``scale_cam_image``)
    cam_l = cv2.resize(cam_l, (W, H), INTER_LINEAR)        # to the input size

and then across layers::

    cam = relu(stack(cam_l))                               # (B, L, H, W)
    cam = mean(cam, over L)
    cam = (cam - min) / (1e-7 + max(cam - min))            # per image, no resize

even when there is a single layer. :func:`postprocess` reproduces exactly that, and every piece is
jittable and vmappable (sizes are static).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._arrays import as_jax

# The constant pytorch-grad-cam adds to the denominator of its min-max scaling.
MINMAX_EPS = 1e-7


def _as_float32(x: Any) -> jax.Array:
    # Maps may arrive in bf16/fp16; pytorch-grad-cam works in float32, and so must the min-max
    # step, whose 1e-7 is below half precision's resolution near 1.
    x = as_jax(x)
    return x.astype(jnp.float32) if x.dtype != jnp.float32 else x


def minmax_normalize(maps: Any, eps: float = MINMAX_EPS) -> jax.Array:
    """Scales each 2-D map to ``[0, 1)``, as pytorch-grad-cam's ``scale_cam_image`` does.

    ``out = (m - min(m)) / (eps + max(m - min(m)))``, over the last two axes. A constant map
    (all zeros included) becomes all zeros, never NaN.

    Args:
        maps: ``(..., h, w)`` maps.
        eps: added to the denominator; pytorch-grad-cam's 1e-7.

    Returns:
        The ``(..., h, w)`` float32 scaled maps.
    """
    maps = _as_float32(maps)
    shifted = maps - jnp.min(maps, axis=(-2, -1), keepdims=True)
    return shifted / (eps + jnp.max(shifted, axis=(-2, -1), keepdims=True))


def interpolation_matrix(in_size: int, out_size: int, *, align_corners: bool = False
                         ) -> np.ndarray:
    """The ``(out_size, in_size)`` linear-interpolation matrix of one axis (float64, rows sum to 1).

    ``align_corners=False`` is ``cv2.resize``'s INTER_LINEAR: output pixel ``o`` samples source
    coordinate ``(o + 0.5) * in/out - 0.5`` (pixel centres aligned), clamped to ``[0, in - 1]``
    (border replicate); downscaling is the same formula, with no antialiasing, unlike
    ``jax.image.resize``. ``align_corners=True`` is PyTorch's rule (``UpsamplingBilinear2d``):
    output ``o`` samples ``o * (in - 1) / (out - 1)`` (0 when ``out == 1``).

    Args:
      in_size: input length along the axis.
      out_size: output length along the axis.
      align_corners: PyTorch's corner-aligned rule instead of OpenCV's centre-aligned one.

    Returns:
      The matrix; each row mixes the two source samples nearest its coordinate.
    """
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        coords = np.arange(out_size, dtype=np.float64) * scale
    else:
        coords = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
        coords = np.clip(coords, 0.0, in_size - 1)
    left = np.minimum(np.floor(coords).astype(np.int64), in_size - 1)
    right = np.minimum(left + 1, in_size - 1)
    frac = coords - left
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, left), 1.0 - frac)
    np.add.at(matrix, (rows, right), frac)
    return matrix


def resize_bilinear(maps: Any, out_size: tuple[int, int]) -> jax.Array:
    """Resizes maps like ``cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR)``.

    Separable linear interpolation with half-pixel centres and clamped borders, done as
    ``Ry @ m @ Rx.T`` with two small interpolation matrices built from the static sizes.

    Args:
        maps: ``(..., h, w)`` maps.
        out_size: ``(H, W)``, height first (cv2 takes width first).

    Returns:
        The ``(..., H, W)`` float32 maps.
    """
    maps = _as_float32(maps)
    out_h, out_w = (int(s) for s in out_size)
    in_h, in_w = maps.shape[-2:]
    if (in_h, in_w) == (out_h, out_w):
        return maps  # cv2 copies too.
    rows = jnp.asarray(interpolation_matrix(in_h, out_h), jnp.float32)
    cols = jnp.asarray(interpolation_matrix(in_w, out_w), jnp.float32)
    # HIGHEST: on GPU/TPU the default matmul precision (TF32/bf16 passes) would cost ~1e-3.
    return jnp.einsum("Hh,...hw,Ww->...HW", rows, maps, cols, precision=jax.lax.Precision.HIGHEST)


def resize_bilinear_align_corners(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Resizes ``(B, h, w)`` maps to ``(B, H, W)``, bilinear with ``align_corners=True``.

    This is ``torch.nn.UpsamplingBilinear2d(size)`` (which pytorch-grad-cam's Score-CAM uses),
    not ``jax.image.resize`` (half-pixel centres, i.e. ``align_corners=False``).

    Args:
      maps: ``(B, h, w)`` arrays.
      size: ``(H, W)`` output size.

    Returns:
      ``(B, H, W)`` resized maps, same dtype.
    """
    rows = jnp.asarray(interpolation_matrix(maps.shape[1], size[0], align_corners=True),
                       maps.dtype)
    cols = jnp.asarray(interpolation_matrix(maps.shape[2], size[1], align_corners=True),
                       maps.dtype)
    return jnp.einsum("Hh,bhw,Ww->bHW", rows, maps, cols, precision=jax.lax.Precision.HIGHEST)


def _split_layers(raw_cams: Any) -> list[jax.Array]:
    if isinstance(raw_cams, (list, tuple)):
        layers = [_as_float32(cam) for cam in raw_cams]
    else:
        stacked = _as_float32(raw_cams)
        if stacked.ndim == 3:
            return [stacked]
        if stacked.ndim != 4:
            raise ValueError(
                f"raw_cams must be (B, h, w) or (L, B, h, w), got shape {stacked.shape}"
            )
        return list(stacked)
    if not layers:
        raise ValueError("raw_cams is an empty sequence of layers")
    for cam in layers:
        if cam.ndim != 3:
            raise ValueError(f"each layer's raw map must be (B, h, w), got shape {cam.shape}")
    return layers


def postprocess(
    raw_cams: Any | Sequence[Any],
    out_size: tuple[int, int] | None,
    *,
    relu: bool = True,
    normalize: bool = True,
    resize: bool = True,
) -> jax.Array:
    """pytorch-grad-cam's default post-processing: raw per-layer maps to one map per image.

    Per layer: ``relu -> min-max -> bilinear resize to out_size``; then across layers:
    ``relu -> mean -> min-max`` (see the module docstring for the exact formulas).

    Args:
        raw_cams: raw maps of one layer ``(B, h, w)``, of several layers of one size
            ``(L, B, h, w)``, or a sequence of ``(B, h_l, w_l)`` maps whose sizes may differ.
        out_size: ``(H, W)`` of the input image, height first; ``None`` means no resize.
        relu: apply both ReLUs; ``False`` keeps negative evidence.
        normalize: apply both min-max scalings; ``False`` keeps the raw scale.
        resize: resize each layer to ``out_size``; ``False`` keeps each layer's own size.

    Returns:
        ``(B, H, W)`` float32 maps (``(B, h, w)`` without resizing).
    """
    layers = _split_layers(raw_cams)
    resize = resize and out_size is not None
    scaled_layers = []
    for cam in layers:
        if relu:
            cam = jnp.maximum(cam, 0.0)
        if normalize:
            cam = minmax_normalize(cam)
        if resize:
            cam = resize_bilinear(cam, out_size)
        scaled_layers.append(cam)
    if len({cam.shape for cam in scaled_layers}) != 1:
        raise ValueError(
            "layers' maps differ in size; pass out_size and resize=True to combine them: "
            f"{[cam.shape for cam in scaled_layers]}"
        )
    stacked = jnp.stack(scaled_layers, axis=0)
    if relu:
        stacked = jnp.maximum(stacked, 0.0)
    combined = jnp.mean(stacked, axis=0)
    if normalize:
        combined = minmax_normalize(combined)
    return combined


def attribution_maps(attributions: Any, *, normalize: bool = True) -> jax.Array:
    """Input-space attributions to maps, as ``jaxcam.explain`` shows them.

    The maximum over colour channels of the absolute attribution (Simonyan et al.'s saliency
    reduction, :func:`jaxcam.methods.input.reduce_channels` ``"max_abs"``), then per-image
    min-max scaling.

    Args:
      attributions: ``(B, H, W, C)`` attributions (gradients, integrated gradients, ...).
      normalize: apply the min-max scaling.

    Returns:
      ``(B, H, W)`` float32 maps, each in ``[0, 1)`` when ``normalize``.
    """
    cam = jnp.max(jnp.abs(_as_float32(attributions)), axis=-1)
    return minmax_normalize(cam) if normalize else cam

"""Bilinear resizing with ``align_corners=True``, as ``torch.nn.UpsamplingBilinear2d`` does it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def align_corners_matrix(size_in: int, size_out: int) -> np.ndarray:
    """The ``(size_out, size_in)`` linear-interpolation matrix of one axis, corners aligned.

    Output sample ``i`` sits at input coordinate ``i * (size_in - 1) / (size_out - 1)`` (0 when
    ``size_out == 1``), PyTorch's ``align_corners=True`` rule; it mixes the two nearest inputs.

    Args:
        size_in: input length along the axis.
        size_out: output length along the axis.

    Returns:
        A float64 matrix whose rows sum to 1.
    """
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    source = np.arange(size_out) * scale
    lower = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    upper = np.minimum(lower + 1, size_in - 1)
    fraction = source - lower
    matrix = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, lower), 1.0 - fraction)
    np.add.at(matrix, (rows, upper), fraction)
    return matrix


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
    rows = jnp.asarray(align_corners_matrix(maps.shape[1], size[0]), maps.dtype)
    cols = jnp.asarray(align_corners_matrix(maps.shape[2], size[1]), maps.dtype)
    return jnp.einsum("Hh,bhw,Ww->bHW", rows, maps, cols, precision=jax.lax.Precision.HIGHEST)

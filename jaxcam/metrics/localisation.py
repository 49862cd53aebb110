"""Localisation against ground-truth masks: pointing game, energy pointing game, IoU.

Maps are ``(B, H, W)``, non-negative (pytorch-grad-cam's maps, in ``[0, 1]``); masks are
``(B, H, W)`` bool, True on the object, at the maps' size. All functions are jittable and return
one value per image (average them, or keep them for confidence intervals).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam.metrics._common import check_maps_masks

__all__ = ["pointing_game", "energy_pointing_game", "iou", "threshold_maps"]


def _dilate(masks: jax.Array, radius: float) -> jax.Array:
    """Pixels within Euclidean distance ``radius`` of a True pixel of ``(B, H, W)`` masks."""
    r = int(np.floor(radius))
    offsets = np.arange(-r, r + 1)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius ** 2
    kernel = jnp.asarray(disk, jnp.float32)[:, :, None, None]
    counts = jax.lax.conv_general_dilated(
        masks.astype(jnp.float32)[..., None], kernel, (1, 1), [(r, r), (r, r)],
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
    return counts[..., 0] > 0.5


@functools.partial(jax.jit, static_argnames=("tolerance",))
def pointing_game(maps: jax.Array, masks: jax.Array, *, tolerance: float = 0) -> jax.Array:
    """Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016).

    A hit when the map's maximum lies on the object, or within ``tolerance`` pixels of it
    (Euclidean distance between pixel centres; Zhang et al. use 15 px at 224 x 224). Ties: the
    maximum may be attained at several pixels; the image is a hit when *any* of them is within
    tolerance of the mask (a constant map is a hit whenever the mask is non-empty). An empty mask
    is a miss.

    Args:
        maps: ``(B, H, W)`` maps.
        masks: ``(B, H, W)`` bool ground truth.
        tolerance: radius in pixels (static); 0 means the maximum must be on the mask itself.

    Returns:
        ``(B,)`` bool hits (their mean is the pointing-game accuracy).
    """
    maps, masks = check_maps_masks(maps, masks)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    target = _dilate(masks, tolerance) if tolerance >= 1 else masks
    is_max = maps >= jnp.max(maps, axis=(1, 2), keepdims=True)
    return jnp.any(is_max & target, axis=(1, 2))


@jax.jit
def energy_pointing_game(maps: jax.Array, masks: jax.Array) -> jax.Array:
    """Energy-based pointing game (Wang et al., "Score-CAM", CVPR Workshops 2020).

    The fraction of the map's energy on the object:
    ``sum(map * mask) / (sum(map * mask) + sum(map * ~mask)) = sum(map * mask) / sum(map)``.
    Maps must be non-negative (the paper uses the bounding box as the mask). A map that sums to
    zero scores 0, never NaN.

    Args:
        maps: ``(B, H, W)`` non-negative maps.
        masks: ``(B, H, W)`` bool ground truth.

    Returns:
        ``(B,)`` float32 proportions in ``[0, 1]``.
    """
    maps, masks = check_maps_masks(maps, masks)
    inside = jnp.sum(jnp.where(masks, maps, 0.0), axis=(1, 2))
    total = jnp.sum(maps, axis=(1, 2))
    return jnp.where(total > 0, inside / jnp.where(total > 0, total, 1.0), 0.0)


def threshold_maps(maps: jax.Array, threshold: float = 0.5) -> jax.Array:
    """``map >= threshold * max(map)`` and ``map > 0``, per image.

    Args:
        maps: ``(B, H, W)`` non-negative maps.
        threshold: fraction of each map's maximum.

    Returns:
        ``(B, H, W)`` bool; an all-zero map selects nothing.
    """
    maps = jnp.asarray(maps, jnp.float32)
    peak = jnp.max(maps, axis=(1, 2), keepdims=True)
    return (maps >= threshold * peak) & (maps > 0)


@jax.jit
def iou(maps: jax.Array, masks: jax.Array, *, threshold: float = 0.5) -> jax.Array:
    """Intersection over union of the thresholded map (:func:`threshold_maps`) and the mask.

    The map is binarised at ``threshold`` times its maximum (Grad-CAM's localisation used 15%
    of the max for boxes; 0.5 is the common segmentation choice) and compared with the mask:
    ``|S & M| / |S | M|``. When both are empty the IoU is 1 (perfect agreement); never NaN.

    Args:
        maps: ``(B, H, W)`` non-negative maps.
        masks: ``(B, H, W)`` bool ground truth.
        threshold: fraction of each map's maximum.

    Returns:
        ``(B,)`` float32 IoU in ``[0, 1]``.
    """
    maps, masks = check_maps_masks(maps, masks)
    selected = threshold_maps(maps, threshold)
    inter = jnp.sum(selected & masks, axis=(1, 2)).astype(jnp.float32)
    union = jnp.sum(selected | masks, axis=(1, 2)).astype(jnp.float32)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)

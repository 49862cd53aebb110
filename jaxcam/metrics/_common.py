"""Argument checks and small helpers shared by the metric modules."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam._arrays import as_jax


def check_images_maps(images: jax.Array, maps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(B, H, W, C)`` float images and ``(B, H, W)`` float32 maps of the same batch and size."""
    images, maps = as_jax(images), as_jax(maps)
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W, C) NHWC, got shape {images.shape}")
    if maps.ndim != 3:
        raise ValueError(f"maps must be (B, H, W), got shape {maps.shape}")
    if images.shape[:3] != maps.shape:
        raise ValueError(f"maps {maps.shape} must match the images' (B, H, W) "
                         f"{images.shape[:3]}; resize the maps to the input size first")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        images = images.astype(jnp.float32)
    return images, maps.astype(jnp.float32)


def check_maps_masks(maps: jax.Array, masks: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(B, H, W)`` float32 maps and ``(B, H, W)`` bool masks of the same shape."""
    maps, masks = as_jax(maps), as_jax(masks)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (B, H, W), got shape {maps.shape}")
    if masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} must have the maps' shape {maps.shape}")
    return maps.astype(jnp.float32), masks.astype(bool)


def check_pair(maps_a: jax.Array, maps_b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two ``(B, H, W)`` float32 batches of maps of one shape."""
    maps_a, maps_b = as_jax(maps_a), as_jax(maps_b)
    if maps_a.ndim != 3 or maps_a.shape != maps_b.shape:
        raise ValueError(f"expected two (B, H, W) batches of one shape, got {maps_a.shape} "
                         f"and {maps_b.shape}")
    return maps_a.astype(jnp.float32), maps_b.astype(jnp.float32)


def reduce_batch(values: jax.Array, reduction: str) -> jax.Array:
    """``"mean"`` over the batch, or ``"none"`` (per image)."""
    if reduction == "mean":
        return jnp.mean(values.astype(jnp.float32))
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")

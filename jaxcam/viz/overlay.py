"""Overlays of a class activation map on its image: pytorch-grad-cam's blend, on NumPy or on
device."""

from __future__ import annotations

import functools
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["show_cam_on_image", "overlay_batch", "colormap_lut", "to_float_image"]


def show_cam_on_image(img: np.ndarray, mask: np.ndarray, use_rgb: bool = False,
                      colormap: int = cv2.COLORMAP_JET, image_weight: float = 0.5) -> np.ndarray:
    """Overlay a class activation map on an image, exactly as pytorch-grad-cam 1.5.7 does.

    The map becomes a heatmap ``cv2.applyColorMap(np.uint8(255 * mask), colormap)``, which is
    BGR (OpenCV's order) unless ``use_rgb`` converts it to RGB; the heatmap is scaled to [0, 1]
    and blended as ``(1 - image_weight) * heatmap + image_weight * img``; the blend is divided
    by its maximum and returned as ``np.uint8(255 * cam)``. So ``img`` must be in the channel
    order of the heatmap: pass an RGB image with ``use_rgb=True``, a BGR one (as ``cv2.imread``
    gives) with the default ``use_rgb=False``.

    Args:
      img: (H, W, 3) float image with values in [0, 1] (not 0..255).
      mask: (H, W) map with values in [0, 1] (e.g. one map of :func:`jaxcam.explain`).
      use_rgb: give the heatmap in RGB order (for an RGB ``img``) rather than BGR.
      colormap: an OpenCV colormap (``cv2.COLORMAP_*``).
      image_weight: weight of the image in the blend, in [0, 1]; the heatmap gets the rest.

    Returns:
      (H, W, 3) uint8 overlay, in the channel order of ``img``.

    Raises:
      ValueError: ``img`` has values above 1 (pass ``img / 255``), or ``image_weight`` is
        outside [0, 1]. (pytorch-grad-cam raises a bare ``Exception`` with the same meaning;
        ``ValueError`` is one.)
    """
    img, mask = np.asarray(img), np.asarray(mask)
    heatmap = cv2.applyColorMap(np.uint8(255 * mask), colormap)
    if use_rgb:
        heatmap = cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB)
    heatmap = np.float32(heatmap) / 255
    if np.max(img) > 1:
        raise ValueError(f"The input image should be np.float32 in the range [0, 1]; got "
                         f"values up to {np.max(img)} (divide a 0..255 image by 255)")
    if image_weight < 0 or image_weight > 1:
        raise ValueError(f"image_weight should be in the range [0, 1]. Got: {image_weight}")
    cam = (1 - image_weight) * heatmap + image_weight * img
    cam = cam / np.max(cam)
    return np.uint8(255 * cam)


@functools.cache
def colormap_lut(colormap: int = cv2.COLORMAP_JET, rgb: bool = True) -> np.ndarray:
    """The (256, 3) uint8 colour table OpenCV's ``applyColorMap`` uses for ``colormap``.

    Args:
      colormap: an OpenCV colormap (``cv2.COLORMAP_*``).
      rgb: RGB order (otherwise OpenCV's BGR).

    Returns:
      Row ``i`` is the colour of value ``i``; read-only.
    """
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), colormap)[:, 0]
    lut = np.ascontiguousarray(lut[:, ::-1] if rgb else lut)
    lut.setflags(write=False)
    return lut


@functools.partial(jax.jit, static_argnames=("use_rgb", "colormap"))
def _overlay_batch(images: jax.Array, masks: jax.Array, heat_weight: jax.Array,
                   image_weight: jax.Array, use_rgb: bool, colormap: int) -> jax.Array:
    # Written so that XLA:CPU gives NumPy's bits: the uint8 conversions are explicit floors (a
    # fused float->uint8 convert may round to nearest), and the divisor is max(cam, max) rather
    # than a broadcast max, which XLA would turn into a multiplication by its reciprocal.
    lut = jnp.asarray(colormap_lut(colormap, use_rgb), jnp.float32) / 255
    index = jnp.floor(jnp.clip(255 * masks, 0, 255)).astype(jnp.int32)
    cam = heat_weight * lut[index] + image_weight * images
    peak = jnp.max(cam, axis=(1, 2, 3), keepdims=True)
    cam = cam / jnp.maximum(cam, peak)
    return jnp.floor(255 * cam).astype(jnp.uint8)


def overlay_batch(images: Any, masks: Any, *, image_weight: float = 0.5, use_rgb: bool = True,
                  colormap: int = cv2.COLORMAP_JET) -> jax.Array:
    """:func:`show_cam_on_image` for a batch, on device, through a colour table taken from cv2.

    Each output image equals ``show_cam_on_image(images[i], masks[i], use_rgb, colormap,
    image_weight)`` for float32 inputs. Unlike that function the default is ``use_rgb=True``,
    since JAX images are RGB. Jittable and vmappable; values are not checked (use
    :func:`show_cam_on_image` to have a 0..255 image rejected).

    Args:
      images: (B, H, W, 3) float images in [0, 1] (JAX or NumPy).
      masks: (B, H, W) maps in [0, 1].
      image_weight: weight of the image in the blend, in [0, 1].
      use_rgb: heatmap colours in RGB order (for RGB images), else BGR.
      colormap: an OpenCV colormap (``cv2.COLORMAP_*``).

    Returns:
      (B, H, W, 3) uint8 overlays.
    """
    images = jnp.asarray(images, jnp.float32)
    masks = jnp.asarray(masks, jnp.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
        raise ValueError(f"overlay_batch needs images (B, H, W, 3) and masks (B, H, W); got "
                         f"{images.shape} and {masks.shape}")
    if isinstance(image_weight, jax.core.Tracer):
        heat_weight = 1 - image_weight
    else:  # as NumPy: 1 - w in double precision, then float32
        heat_weight, image_weight = np.float32(1 - image_weight), np.float32(image_weight)
    return _overlay_batch(images, masks, heat_weight, image_weight, use_rgb, colormap)


def to_float_image(image: Any) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] from a uint8 (0..255) or float ([0, 1]) image."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) or (H, W) image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    return np.clip(image.astype(np.float32), 0.0, 1.0)

"""Pictures of class activation maps: overlays, per-exit grids and a static HTML gallery.

* :func:`show_cam_on_image` is pytorch-grad-cam's function of the same name, pixel for pixel.
* :func:`overlay_batch` does the same blend for a whole batch on device arrays (jittable).
* :func:`exit_grid` draws one image and the map of each exit of a multi-exit model, labelled.
* :func:`write_gallery` writes ``index.html`` linking such grids (see :mod:`jaxcam._gallery`).

NumPy and OpenCV appear only here, at the edge where pictures are made.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._gallery import write_gallery

__all__ = ["show_cam_on_image", "overlay_batch", "colormap_lut", "exit_grid", "write_gallery",
           "to_float_image"]

_GREEN = (0, 150, 0)
_RED = (210, 0, 0)
_INK = (30, 30, 30)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


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


def _fit_text(text: str, width: int, scale: float) -> tuple[str, float]:
    """``text`` (shortened with '..' if need be) and a font scale at which it fits ``width``."""
    for s in (scale, scale * 0.85, scale * 0.72):
        if cv2.getTextSize(text, _FONT, s, 1)[0][0] <= width:
            return text, s
    s = scale * 0.72
    while len(text) > 1 and cv2.getTextSize(text + "..", _FONT, s, 1)[0][0] > width:
        text = text[:-1]
    return text + "..", s


def _put(canvas: np.ndarray, text: str, x: int, y: int, width: int, color: tuple[int, ...],
         scale: float = 0.45) -> int:
    """Draw ``text`` with its baseline at ``y``, fitted into ``width``; returns its width."""
    text, s = _fit_text(text, width, scale)
    cv2.putText(canvas, text, (x, y), _FONT, s, color, 1, cv2.LINE_AA)
    return cv2.getTextSize(text, _FONT, s, 1)[0][0]


def _mark(canvas: np.ndarray, x: int, y: int, ok: bool, size: int = 11) -> None:
    """A check mark (green) or a cross (red) with its lower-left corner at (x, y)."""
    if ok:
        pts = np.array([[x, y - size // 2], [x + size // 3, y], [x + size, y - size]], np.int32)
        cv2.polylines(canvas, [pts], False, _GREEN, 2, cv2.LINE_AA)
    else:
        cv2.line(canvas, (x, y - size), (x + size, y), _RED, 2, cv2.LINE_AA)
        cv2.line(canvas, (x, y), (x + size, y - size), _RED, 2, cv2.LINE_AA)


def _upscale(tile: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    if tile.shape[:2] == size:
        return tile
    return cv2.resize(tile, (size[1], size[0]), interpolation=interpolation)


def exit_grid(image: Any, masks: Any, *, pred: Sequence[int], conf: Sequence[float],
              correct: Sequence[bool | None] | None = None, class_names: Sequence[str],
              scale: int | None = 4, exit_numbers: Sequence[int] | None = None,
              true_label: int | None = None, title: str | None = None,
              extra_rows: Sequence[tuple[str, Any]] = (), image_weight: float = 0.5,
              interpolation: int = cv2.INTER_NEAREST) -> np.ndarray:
    """One image and the map of each exit of a multi-exit model, in one labelled picture.

    The first row holds the image, then one overlay (:func:`show_cam_on_image`, JET) per exit,
    each captioned with the exit's number, its predicted class, its confidence and, where the
    true class is known, a green check mark (right) or a red cross (wrong), with a frame of the
    same colour. Optional extra rows (e.g. other methods) show further maps of the same exits.

    Args:
      image: (H, W, 3) RGB image, uint8 or float in [0, 1].
      masks: (K, H, W) maps in [0, 1], one per exit.
      pred: (K,) predicted class of each exit.
      conf: (K,) confidence (softmax probability) of each prediction.
      correct: (K,) whether each prediction is right; None (or None entries) when unknown.
      class_names: names of the classes.
      scale: integer upscaling of every tile (4 makes 32x32 inputs 128x128); None picks the
        smallest that makes tiles at least 128 pixels.
      exit_numbers: the label of each exit (default 1..K).
      true_label: the true class, shown under the image.
      title: a line above the grid (e.g. the file name and method).
      extra_rows: ``(label, (K, H, W) maps)`` pairs, each drawn as a further row.
      image_weight: weight of the image in each overlay.
      interpolation: how tiles are upscaled (``cv2.INTER_NEAREST`` or ``cv2.INTER_CUBIC``).

    Returns:
      (rows, cols, 3) uint8 RGB picture.
    """
    img = to_float_image(image)
    masks = np.asarray(masks, np.float32)
    k = masks.shape[0]
    if masks.ndim != 3 or masks.shape[1:] != img.shape[:2]:
        raise ValueError(f"masks must be (K, H, W) = (K, {img.shape[0]}, {img.shape[1]}), got "
                         f"{masks.shape}")
    if len(pred) != k or len(conf) != k:
        raise ValueError(f"pred and conf need one entry per exit ({k}); got {len(pred)} and "
                         f"{len(conf)}")
    correct = [None] * k if correct is None else list(correct)
    exit_numbers = list(range(1, k + 1)) if exit_numbers is None else list(exit_numbers)
    h, w = img.shape[:2]
    if scale is None:
        scale = max(1, -(-128 // min(h, w)))
    th, tw = h * scale, w * scale
    pad, cap = 6, 58
    cols = k + 1
    head = 24 if title else 0
    rows = 1 + len(extra_rows)
    row_h = th + cap + pad
    canvas = np.full((head + pad + rows * row_h, pad + cols * (tw + pad), 3), 255, np.uint8)
    if title:
        _put(canvas, title, pad, 18, canvas.shape[1] - 2 * pad, _INK, 0.5)

    def cell(r: int, c: int) -> tuple[int, int]:
        return head + pad + r * row_h, pad + c * (tw + pad)

    y, x = cell(0, 0)
    canvas[y:y + th, x:x + tw] = _upscale(np.uint8(np.round(img * 255)), (th, tw), interpolation)
    _put(canvas, "input", x, y + th + 16, tw, _INK)
    if true_label is not None:
        _put(canvas, f"true: {class_names[true_label]}", x, y + th + 34, tw, _INK)
    for r, (label, row_masks) in enumerate([(None, masks), *extra_rows]):
        row_masks = np.asarray(row_masks, np.float32)
        if row_masks.shape != masks.shape:
            raise ValueError(f"extra row {label!r} has maps of shape {row_masks.shape}, expected "
                             f"{masks.shape}")
        if label is not None:
            y, x = cell(r + 1, 0)
            _put(canvas, str(label), x, y + th // 2, tw, _INK, 0.6)
        for i in range(k):
            y, x = cell(r, i + 1)
            tile = show_cam_on_image(img, row_masks[i], use_rgb=True, image_weight=image_weight)
            canvas[y:y + th, x:x + tw] = _upscale(tile, (th, tw), interpolation)
            ok = correct[i]
            color = _INK if ok is None else (_GREEN if ok else _RED)
            if ok is not None:
                cv2.rectangle(canvas, (x - 2, y - 2), (x + tw + 1, y + th + 1), color, 2)
            if label is not None:
                continue
            _put(canvas, f"exit {exit_numbers[i]}", x, y + th + 16, tw, _INK)
            _put(canvas, class_names[int(pred[i])], x, y + th + 34, tw, color)
            used = _put(canvas, f"{100 * float(conf[i]):.0f}%", x, y + th + 52, tw - 16, color)
            if ok is not None:
                _mark(canvas, x + used + 5, y + th + 52, bool(ok))
    return canvas

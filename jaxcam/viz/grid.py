"""One image and the map of each exit of a multi-exit model, in one labelled picture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from jaxcam.viz.overlay import show_cam_on_image, to_float_image

__all__ = ["exit_grid"]

_GREEN = (0, 150, 0)
_RED = (210, 0, 0)
_INK = (30, 30, 30)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


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
        _draw_row(canvas, img, row_masks, [cell(r, i + 1) for i in range(k)], (th, tw),
                  correct, None if label is not None else
                  [(exit_numbers[i], class_names[int(pred[i])], float(conf[i]))
                   for i in range(k)],
                  image_weight, interpolation)
    return canvas


def _draw_row(canvas: np.ndarray, img: np.ndarray, masks: np.ndarray,
              cells: Sequence[tuple[int, int]], tile: tuple[int, int],
              correct: Sequence[bool | None],
              captions: Sequence[tuple[int, str, float]] | None, image_weight: float,
              interpolation: int) -> None:
    """One overlay per exit at ``cells``, framed by correctness, captioned on the first row."""
    th, tw = tile
    for i, (y, x) in enumerate(cells):
        overlay = show_cam_on_image(img, masks[i], use_rgb=True, image_weight=image_weight)
        canvas[y:y + th, x:x + tw] = _upscale(overlay, (th, tw), interpolation)
        ok = correct[i]
        color = _INK if ok is None else (_GREEN if ok else _RED)
        if ok is not None:
            cv2.rectangle(canvas, (x - 2, y - 2), (x + tw + 1, y + th + 1), color, 2)
        if captions is None:
            continue
        number, name, conf = captions[i]
        _put(canvas, f"exit {number}", x, y + th + 16, tw, _INK)
        _put(canvas, name, x, y + th + 34, tw, color)
        used = _put(canvas, f"{100 * conf:.0f}%", x, y + th + 52, tw - 16, color)
        if ok is not None:
            _mark(canvas, x + used + 5, y + th + 52, bool(ok))

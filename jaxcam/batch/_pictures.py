"""Per-image pictures (``<name>_cam.png``, ``<name>_exits.png``) and gallery entries.

The gallery entries are rebuilt from the shards' own records at the end of a run, so a resumed
run's gallery lists every image.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from jaxcam.batch._extras import GalleryExtras
from jaxcam.batch._names import shown
from jaxcam.batch._reader import Result
from jaxcam.batch._shards import write_file_fast
from jaxcam.extend.images import center_crop_box
from jaxcam.viz import exit_grid, show_cam_on_image

__all__ = ["Pictures", "softmax", "write_pictures", "overlay_on_original", "gallery_entry"]


@dataclasses.dataclass(frozen=True)
class Pictures:
    """What to draw and how to label it.

    Attributes:
      out: output directory.
      overlay: write ``<name>_cam.png`` (exit ``cam_pos``'s map on the original image).
      grid: write ``<name>_exits.png`` (the input and one labelled overlay per exit).
      class_names: the model's classes.
      exit_numbers: the explained exits, numbered from 1.
      cam_pos: position in ``exit_numbers`` of the overlay's exit.
      method: CAM method (for titles).
      target: ``pred``, ``true`` or a class index (for titles).
      compare: further methods drawn as extra grid rows.
      title_prefix: text put before each grid's title.
    """

    out: Path
    overlay: bool
    grid: bool
    class_names: tuple[str, ...]
    exit_numbers: tuple[int, ...]
    cam_pos: int
    method: str
    target: str | int
    compare: tuple[str, ...] = ()
    title_prefix: str = ""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 (no overflow for large logits)."""
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Encode an (H, W, 3) uint8 RGB picture as PNG and write it atomically.

    Raises:
      OSError: OpenCV cannot encode it, or the file cannot be written.
    """
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path.name} as PNG")
    write_file_fast(path, buf.tobytes())


def _unit(image: np.ndarray) -> np.ndarray:
    return np.minimum(np.asarray(image, np.float32) / np.float32(255), np.float32(1))


def overlay_on_original(original: np.ndarray, cam: np.ndarray, crop: bool) -> np.ndarray:
    """A map computed on the model's input, drawn on the original image at its own resolution.

    Args:
      original: (H, W, 3) the decoded file, 0..255.
      cam: (S, S) the map, in [0, 1].
      crop: the model saw ImageNet's centre crop of the image (:func:`center_crop`): the map
        covers that square only, so it is drawn there and the rest of the image, which the
        model never saw, is shown dimmed. Otherwise the map covers the whole image.

    Returns:
      (H, W, 3) uint8 RGB.
    """
    h, w = original.shape[:2]
    image = _unit(original)
    cam = np.asarray(cam, np.float32)
    if not crop:
        big = cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
        return show_cam_on_image(image, big, use_rgb=True)
    top, left, bh, bw = center_crop_box(h, w, cam.shape[0])
    y0, x0 = int(round(top)), int(round(left))
    y1, x1 = min(h, int(round(top + bh))), min(w, int(round(left + bw)))
    out = np.round(image * np.float32(0.35 * 255)).astype(np.uint8)
    box = cv2.resize(cam, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    out[y0:y1, x0:x1] = show_cam_on_image(image[y0:y1, x0:x1], box, use_rgb=True)
    return out


def write_pictures(p: Pictures, name: str, original: np.ndarray, small: np.ndarray,
                   label: int | None, maps: np.ndarray, logits: np.ndarray,
                   extra: Sequence[np.ndarray], crop: bool = False) -> None:
    """Write one image's pictures.

    Args:
      p: the settings.
      name: the image's output name.
      original: (H, W, 3) the decoded file, 0..255.
      small: (S, S, 3) the model input before normalisation, 0..255.
      label: its known class, or None.
      maps: (K, S, S) float maps of the explained exits.
      logits: (K, C) their logits.
      extra: (K, S, S) maps of each compared method.
      crop: ``small`` is ImageNet's centre crop of ``original`` (see
        :func:`overlay_on_original`).

    Raises:
      OSError: a picture could not be encoded or written.
    """
    if p.overlay:
        write_png(p.out / f"{name}_cam.png",
                  overlay_on_original(original, maps[p.cam_pos], crop))
    if p.grid:
        probs = softmax(logits)
        pred = logits.argmax(-1)
        conf = probs[np.arange(len(pred)), pred]
        size = small.shape[0]
        grid = exit_grid(_unit(small), np.asarray(maps, np.float32), pred=pred, conf=conf,
                         correct=None if label is None else [bool(k == label) for k in pred],
                         class_names=list(p.class_names), scale=max(1, -(-128 // size)),
                         exit_numbers=list(p.exit_numbers), true_label=label,
                         title=f"{p.title_prefix}{name}  ({p.method}, target: {p.target})",
                         extra_rows=[(m, np.asarray(e, np.float32))
                                     for m, e in zip(p.compare, extra, strict=True)])
        write_png(p.out / f"{name}_exits.png", grid)


def gallery_entry(p: Pictures, result: Result,
                  extras: GalleryExtras | None = None) -> dict[str, Any]:
    """The gallery's entry for one image, from what its shard records.

    Args:
      p: the settings.
      result: the explained input, as its shard records it.
      extras: the caller's further columns and links.

    Returns:
      The entry :func:`jaxcam.viz.write_gallery` takes.
    """
    name, file, label = result.name, result.file, result.label
    probs = softmax(result.logits)
    pred = result.logits.argmax(-1)
    columns = {} if extras is None or extras.columns is None else extras.columns(result)
    rows = []
    for i, k in enumerate(p.exit_numbers):
        row: dict[str, Any] = {"exit": k, "prediction": p.class_names[int(pred[i])],
                               "confidence": float(probs[i, pred[i]])}
        if label >= 0:
            row["correct"] = bool(pred[i] == label)
        if p.target != "pred":
            row["explained class"] = p.class_names[int(result.targets[i])]
        row.update({column: values[i] for column, values in columns.items()})
        rows.append(row)
    h, w = result.size
    links = {}
    if p.overlay:
        links[f"overlay, exit {p.exit_numbers[p.cam_pos]}, {w}x{h}"] = f"{name}_cam.png"
    try:
        source = os.path.relpath(Path(file).resolve(), p.out.resolve())
    except ValueError:  # another drive, or not a file (a data set image)
        source = None
    if source is not None and not source.startswith("..") and Path(file).is_file() \
            and shown(source) == source:  # a link needs a name that is valid UTF-8
        links["input"] = source
    if extras is not None and extras.links is not None:
        links.update(extras.links(result))
    true = "unknown" if label < 0 else p.class_names[label]
    return {"name": name, "grid": f"{name}_exits.png", "source": shown(str(file)),
            "links": links,
            "rows": rows, "note": f"true class: {true}; original size {w}x{h}"}

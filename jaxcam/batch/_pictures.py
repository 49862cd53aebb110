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
from jaxcam.viz import exit_grid, show_cam_on_image

__all__ = ["Pictures", "softmax", "write_pictures", "gallery_entry"]


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


def write_pictures(p: Pictures, name: str, original: np.ndarray, small: np.ndarray,
                   label: int | None, maps: np.ndarray, logits: np.ndarray,
                   extra: Sequence[np.ndarray]) -> None:
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

    Raises:
      OSError: a picture could not be encoded or written.
    """
    if p.overlay:
        h, w = original.shape[:2]
        big = cv2.resize(np.asarray(maps[p.cam_pos], np.float32), (w, h),
                         interpolation=cv2.INTER_LINEAR)
        write_png(p.out / f"{name}_cam.png", show_cam_on_image(_unit(original), big,
                                                               use_rgb=True))
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

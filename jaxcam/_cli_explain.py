"""The work behind ``jaxcam explain`` (and ``jaxcam demo``): files in, pictures and arrays out."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from jaxcam._cli_io import label_from_parent, read_image, to_model_input, unique_names, write_png
from jaxcam._exits import explain_exits
from jaxcam.viz import exit_grid, show_cam_on_image, write_gallery

__all__ = ["Job", "explain_files"]


@dataclasses.dataclass
class Job:
    """What to explain and how.

    Attributes:
      out: output directory.
      method: an ``explain_exits`` method.
      exits: 0-based indices of the exits to explain.
      target: ``"pred"`` (each exit's own top class), ``"true"`` (the class named by the parent
        folder) or a class index.
      cam_exit: position in ``exits`` of the exit drawn on the full-resolution overlay.
      batch_size: images per jitted call (the last batch is padded, so one compilation serves).
      compare: further methods drawn as extra rows of each grid.
      npz_dtype: ``"float32"`` or ``"float16"`` maps in ``cams.npz``.
      settings: extra lines for the gallery's settings table.
      masks: optional ground-truth object masks by input file, as (mask at the model's input
        size, its PNG file): the gallery gets a "map energy in object" column and a link.
      warning: a line shown at the top of the gallery.
      tag: text put before each grid's title (e.g. that the model is untrained).
    """

    out: Path
    method: str = "gradcam"
    exits: tuple[int, ...] = ()
    target: str | int = "pred"
    cam_exit: int = -1
    batch_size: int = 32
    compare: tuple[str, ...] = ()
    npz_dtype: str = "float32"
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    masks: Mapping[Path, tuple[np.ndarray, Path]] | None = None
    warning: str | None = None
    tag: str = ""


def _progress(done: int, total: int, start: float, final: bool = False) -> None:
    rate = done / max(time.perf_counter() - start, 1e-9)
    line = f"explained {done}/{total} images, {rate:.1f} images/s"
    if sys.stderr.isatty():
        print(f"\r{line}", end="\n" if final else "", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _relative_link(path: Path, out: Path) -> str | None:
    try:
        return os.path.relpath(Path(path).resolve(), out.resolve())
    except ValueError:  # another drive
        return None


def explain_files(model: Any, meta: Mapping[str, Any], files: Sequence[Path], job: Job,
                  input_errors: Sequence[tuple[str, str]] = ()) -> tuple[int, list]:
    """Explain every file, writing the per-image pictures, ``cams.npz``, ``errors.txt`` and
    ``index.html`` into ``job.out``.

    Args:
      model: a multi-exit model in eval mode (``exit_features``/``classify``, ``config``).
      meta: its checkpoint metadata (``class_names``, ``mean``, ``std``).
      files: image files.
      job: the settings.
      input_errors: ``(input, reason)`` pairs found before (e.g. patterns matching nothing).

    Returns:
      ``(number of images explained, [(file, reason), ...] failures)``.
    """
    from msdnet_flax.data import normalize

    out = job.out
    out.mkdir(parents=True, exist_ok=True)
    size = model.config.image_size
    class_names = [str(c) for c in meta["class_names"]]
    names = unique_names(files)
    errors: list[tuple[str, str]] = list(input_errors)
    bucket = max(1, min(job.batch_size, len(files)))
    exit_numbers = [k + 1 for k in job.exits]
    cam_pos = job.cam_exit % len(job.exits)
    kept: dict[str, list] = {"maps": [], "logits": [], "targets": [], "labels": [], "files": [],
                             "names": []}
    entries: list[dict[str, Any]] = []
    pending: list[tuple[int, np.ndarray, np.ndarray, int | None]] = []
    start = time.perf_counter()

    def targets_for(labels: list[int | None]) -> Any:
        if job.target == "pred":
            return None
        if job.target == "true":
            return np.asarray(labels + [0] * (bucket - len(labels)), np.int32)
        return int(job.target)

    def flush() -> None:
        n = len(pending)
        batch = np.stack([p[2].astype(np.float32) for p in pending])
        batch = np.concatenate([batch, np.zeros((bucket - n, *batch.shape[1:]), np.float32)])
        x = normalize(batch, meta["mean"], meta["std"])
        labels = [p[3] for p in pending]
        tgt = targets_for(labels)
        maps, logits = explain_exits(model, x, targets=tgt, method=job.method, exits=job.exits,
                                     return_logits=True)
        maps, logits = np.asarray(maps)[:, :n], np.asarray(logits)[:, :n]
        rows = [(m, np.asarray(explain_exits(model, x, targets=tgt, method=m,
                                             exits=job.exits))[:, :n]) for m in job.compare]
        probs = _softmax(logits)
        pred = logits.argmax(-1)
        used = pred if job.target == "pred" else np.broadcast_to(
            np.asarray(tgt)[:n] if job.target == "true" else np.int64(tgt), pred.shape)
        for j, (i, original, small, label) in enumerate(pending):
            kept["maps"].append(maps[:, j])
            kept["logits"].append(logits[:, j])
            kept["targets"].append(used[:, j])
            kept["labels"].append(-1 if label is None else label)
            kept["files"].append(str(files[i]))
            kept["names"].append(names[i])
            try:
                entries.append(_write_image(files[i], names[i], original, small, label,
                                            maps[:, j], pred[:, j], probs[:, j], used[:, j],
                                            [(m, r[:, j]) for m, r in rows], class_names,
                                            exit_numbers, cam_pos, job))
            except OSError as exc:
                errors.append((str(files[i]), f"cannot write its pictures: {exc}"))
        pending.clear()
        _progress(len(kept["files"]), len(files), start)

    for i, path in enumerate(files):
        try:
            original = read_image(path)
        except ValueError as exc:
            errors.append((str(path), str(exc)))
            continue
        label = label_from_parent(path, class_names)
        if job.target == "true" and label is None:
            errors.append((str(path), f"--target true needs the class as the parent folder's "
                           f"name; {Path(path).parent.name!r} is not one of "
                           f"{', '.join(class_names)}"))
            continue
        pending.append((i, original, to_model_input(original, size), label))
        if len(pending) == bucket:
            flush()
    if pending:
        flush()
    if kept["files"] and sys.stderr.isatty():
        print(file=sys.stderr)
    _write_npz(out / "cams.npz", kept, exit_numbers, class_names, size, job)
    (out / "errors.txt").write_text("".join(f"{f}\t{r}\n" for f, r in errors), encoding="utf-8")
    settings = {**job.settings, "method": job.method, "target": job.target,
                "exits": ", ".join(map(str, exit_numbers)),
                "full-resolution overlay": f"exit {exit_numbers[cam_pos]}",
                "extra rows": ", ".join(job.compare) or "none",
                "images explained": len(kept["files"]), "failed inputs": len(errors),
                "seconds": round(time.perf_counter() - start, 2)}
    write_gallery(out, entries, settings, errors=errors, warning=job.warning)
    return len(kept["files"]), errors


def _write_image(path: Path, name: str, original: np.ndarray, small: np.ndarray,
                 label: int | None, maps: np.ndarray, pred: np.ndarray, probs: np.ndarray,
                 used: np.ndarray, extra_rows: list, class_names: list[str],
                 exit_numbers: list[int], cam_pos: int, job: Job) -> dict[str, Any]:
    """Write ``<name>_cam.png`` and ``<name>_exits.png``; return the gallery entry."""
    h, w = original.shape[:2]
    full = np.minimum(original.astype(np.float32) / np.float32(255), np.float32(1))
    big = cv2.resize(maps[cam_pos], (w, h), interpolation=cv2.INTER_LINEAR)
    write_png(job.out / f"{name}_cam.png", show_cam_on_image(full, big, use_rgb=True))
    conf = probs[np.arange(len(pred)), pred]
    correct = None if label is None else [bool(p == label) for p in pred]
    size = small.shape[0]
    grid = exit_grid(np.minimum(small.astype(np.float32) / np.float32(255), np.float32(1)), maps,
                     pred=pred, conf=conf, correct=correct, class_names=class_names,
                     scale=max(1, -(-128 // size)), exit_numbers=exit_numbers, true_label=label,
                     title=f"{job.tag}{name}  ({job.method}, target: {job.target})",
                     extra_rows=extra_rows)
    write_png(job.out / f"{name}_exits.png", grid)
    mask, mask_png = (None, None) if job.masks is None else job.masks.get(path, (None, None))
    rows = []
    for i, k in enumerate(exit_numbers):
        row: dict[str, Any] = {"exit": k, "prediction": class_names[int(pred[i])],
                               "confidence": float(conf[i])}
        if label is not None:
            row["correct"] = bool(pred[i] == label)
        if job.target != "pred":
            row["explained class"] = class_names[int(used[i])]
        if mask is not None:
            m = maps[i].astype(np.float64)
            row["map energy in object"] = float((m * mask).sum() / max(m.sum(), 1e-12))
        rows.append(row)
    links = {f"overlay, exit {exit_numbers[cam_pos]}, {w}x{h}": f"{name}_cam.png"}
    source = _relative_link(path, job.out)
    if source is not None and not source.startswith(".."):
        links["input"] = source
    if mask_png is not None:
        rel = _relative_link(mask_png, job.out)
        if rel is not None:
            links["object mask"] = rel
    true = "unknown" if label is None else class_names[label]
    return {"name": name, "grid": f"{name}_exits.png", "source": str(path), "links": links,
            "rows": rows, "note": f"true class: {true}; original size {w}x{h}"}


def _write_npz(path: Path, kept: dict[str, list], exit_numbers: list[int],
               class_names: list[str], size: int, job: Job) -> None:
    k = len(exit_numbers)
    if kept["maps"]:
        maps = np.stack(kept["maps"], axis=1)
        logits = np.stack(kept["logits"], axis=1)
        targets = np.stack(kept["targets"], axis=1)
    else:
        maps = np.zeros((k, 0, size, size), np.float32)
        logits = np.zeros((k, 0, len(class_names)), np.float32)
        targets = np.zeros((k, 0), np.int64)
    np.savez_compressed(
        path, maps=maps.astype(job.npz_dtype), logits=logits.astype(np.float32),
        targets=targets.astype(np.int32), labels=np.asarray(kept["labels"], np.int32),
        files=np.asarray(kept["files"], dtype=str), names=np.asarray(kept["names"], dtype=str),
        exits=np.asarray(exit_numbers, np.int32), class_names=np.asarray(class_names, dtype=str),
        method=np.asarray(job.method))

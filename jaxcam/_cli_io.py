"""Files for the ``jaxcam`` command: finding inputs, decoding images, naming outputs, models."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "expand_inputs", "unique_names", "read_image", "decode_image",
           "to_model_input", "load_model", "label_from_parent", "write_png"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files that command-line inputs designate, and the inputs that designate nothing.

    A file is taken whatever its name; a directory gives every file with an image extension
    (:data:`IMAGE_EXTENSIONS`, any case) below it, recursively, hidden ones excepted; anything
    else is a glob pattern (``**`` recursive), of whose matches the files are taken. Files named
    twice are taken once, in first-seen order; directories and patterns are sorted.

    Args:
      inputs: the INPUT arguments.

    Returns:
      ``(files, errors)`` with ``errors`` holding ``(input, reason)`` pairs.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    errors: list[tuple[str, str]] = []

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for item in inputs:
        path = Path(item)
        if path.is_file():
            add(path)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                errors.append((item, f"directory holds no images ({', '.join(IMAGE_EXTENSIONS)})"))
            for p in found:
                add(p)
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                errors.append((item, "pattern matches no files"))
            for p in found:
                add(p)
        else:
            errors.append((item, "no such file or directory"))
    return files, errors


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"


def unique_names(files: Sequence[Path]) -> list[str]:
    """One output name per file, distinct even ignoring case: the file's stem where that is
    unique, else the stem prefixed by as many parent folders as tell the clashing files apart
    (``a__cat`` and ``b__cat`` for ``a/cat.png`` and ``b/cat.png``), or with its extension for
    files of one folder (``cat.png``, ``cat.jpg``), or finally numbered. Characters other than
    letters, digits, ``.``, ``_`` and ``-`` become ``_``."""
    parts = [list(Path(os.path.abspath(f)).parent.parts) for f in files]
    depth = [0] * len(files)
    suffix = [False] * len(files)
    while True:
        names = []
        for i, f in enumerate(files):
            parents = parts[i][len(parts[i]) - depth[i]:] if depth[i] else []
            stem = Path(f).stem + (Path(f).suffix if suffix[i] else "")
            names.append("__".join(_safe(p) for p in [*parents, stem]))
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            groups.setdefault(name.lower(), []).append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            return names
        progressed = False
        for group in clashes:
            for i in group:
                same_folder = any(parts[j] == parts[i] for j in group if j != i)
                if same_folder and not suffix[i]:
                    suffix[i] = True  # a/cat.png, a/cat.jpg: only the extension tells them apart
                    progressed = True
                elif not same_folder and depth[i] < len(parts[i]) - 1:  # never the root
                    depth[i] += 1
                    progressed = True
        if not progressed:
            break
    counts: dict[str, int] = {}
    out = []
    for name in names:  # identical paths up to case or sanitising: number them
        n = counts.get(name.lower(), 0)
        counts[name.lower()] = n + 1
        out.append(name if n == 0 else f"{name}-{n + 1}")
    return out


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to (H, W, 3) RGB on the 0..255 scale.

    8-bit images come back as uint8; 16-bit ones as float32 divided by 257 (so 65535 -> 255,
    keeping their finer steps); float images (TIFF) as float32 times 255. Grayscale is repeated
    into three channels; an alpha channel is dropped (as ``cv2.IMREAD_COLOR`` and the training
    loaders do); EXIF orientation is applied.

    Raises:
      ValueError: the file is empty, unreadable or not an image OpenCV can decode (naming why).
    """
    try:
        raw = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise ValueError(f"cannot read file: {exc.strerror or exc}") from None
    return decode_image(raw)


def decode_image(raw: np.ndarray) -> np.ndarray:
    """Decode an encoded image file's bytes (a uint8 array) as :func:`read_image` does.

    Raises:
      ValueError: empty, or not an image OpenCV can decode (naming why).
    """
    if raw.size == 0:
        raise ValueError("empty file (0 bytes)")
    img = cv2.imdecode(raw, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if img is None or img.size == 0:
        head = bytes(raw[:8])
        kind = "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "binary data"
        raise ValueError(f"not a decodable image ({raw.size} bytes; starts like {kind}: "
                         f"{head!r}); corrupt or not an image format OpenCV reads")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return img.astype(np.float32) / np.float32(257)
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(np.nan_to_num(img.astype(np.float32)), 0, 1) * np.float32(255)
    info = np.iinfo(img.dtype)  # e.g. 8-bit signed
    return ((img.astype(np.float32) - info.min) * (255 / (info.max - info.min))).astype(np.float32)


def to_model_input(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W, 3) 0..255 image (whole, aspect not kept) to (size, size, 3).

    Shrinking uses ``cv2.INTER_AREA`` and enlarging ``cv2.INTER_LINEAR``, as the training
    loaders do; 8-bit images stay uint8 (identical to what training saw), others float32.
    Normalisation (``msdnet_flax.data.normalize`` with the checkpoint's mean/std) comes after.
    """
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if h * w > size * size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def load_model(spec: str) -> tuple[Any, dict[str, Any]]:
    """``(model in eval mode, meta)`` for ``--model``: ``bundled`` or a checkpoint path.

    Raises:
      FileNotFoundError: the bundled model or the checkpoint does not exist.
    """
    if spec == "bundled":
        from msdnet_flax.pretrained import pretrained

        return pretrained()
    from msdnet_flax.checkpoint import load_checkpoint

    model, meta = load_checkpoint(spec)
    model.eval()
    return model, meta


def label_from_parent(path: Path, class_names: Sequence[str]) -> int | None:
    """The class whose name is the file's parent folder (exact, else ignoring case), or None."""
    parent = Path(path).parent.name
    if parent in class_names:
        return list(class_names).index(parent)
    lowered = [c.lower() for c in class_names]
    return lowered.index(parent.lower()) if parent.lower() in lowered else None


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB picture as PNG, raising OSError if OpenCV cannot."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path} as PNG")
    Path(path).write_bytes(buf.tobytes())

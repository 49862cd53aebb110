"""An ImageNet-style image folder: ``root/<class name>/<image>``, decoded with OpenCV."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from jaxcam.extend.images import IMAGE_EXTENSIONS, center_crop
from msdnet_flax.data._dataset import ArrayDataset

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "load_image_folder"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _load(path: Path, size: int, resize: int) -> np.ndarray:
    """Decode one image to RGB, resize its shorter side to ``resize``, centre-crop ``size``."""
    try:
        raw = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise ValueError(f"cannot read image file {path}: {exc}") from exc
    # IMREAD_COLOR gives 3-channel 8-bit BGR for grayscale, RGBA (alpha dropped) and 16-bit.
    img = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
    if img is None:
        raise ValueError(f"cannot decode image file {path}: not a valid image "
                         f"({raw.size} bytes)")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    try:
        return center_crop(img, size, resize)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_image_folder(root: str | os.PathLike, *, size: int, resize: int | None = None,
                      class_names: Sequence[str] | None = None,
                      num_workers: int | None = None) -> ArrayDataset:
    """Load every image under ``root/<class>/`` into memory.

    Args:
      root: directory with one sub-directory per class.
      size: side of the square centre crop.
      resize: the shorter side is resized to this before cropping; default
        ``round(size * 256 / 224)`` (ImageNet's 256 -> 224).
      class_names: the class folders, in label order; default all sub-directories, sorted.
      num_workers: decoding threads; default ``min(8, cpu_count)``.

    Returns:
      An ``ArrayDataset`` of (N, size, size, 3) uint8 RGB images, samples sorted by class then
      file name, with the ImageNet mean/std.

    Raises:
      FileNotFoundError: ``root`` or a named class folder does not exist.
      ValueError: no class folders, a class folder without images, or an image that cannot be
        decoded (naming the file).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if resize is None:
        resize = int(round(size * 256 / 224))
    if isinstance(resize, bool) or not isinstance(resize, int) or resize < size:
        raise ValueError(f"resize must be an integer >= size ({size}), got {resize!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (or is not a directory); "
                                f"expected {root}/<class name>/<images>")
    if class_names is None:
        class_names = sorted(p.name for p in root.iterdir()
                             if p.is_dir() and not p.name.startswith("."))
        if not class_names:
            raise ValueError(f"image folder {root} has no class sub-directories; expected "
                             f"{root}/<class name>/<images>")
    class_names = tuple(class_names)
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"class folder {folder} does not exist")
        found = sorted(p for p in folder.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise ValueError(f"class folder {folder} holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [label] * len(found)
    workers = num_workers or min(8, os.cpu_count() or 1)
    images = np.empty((len(files), size, size, 3), np.uint8)

    def load_into(i: int) -> None:
        images[i] = _load(files[i], size, resize)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(load_into, i) for i in range(len(files))]:
            future.result()  # re-raises the first failure, naming its file
    return ArrayDataset(images=images, labels=np.asarray(labels, np.int32),
                        class_names=class_names, mean=IMAGENET_MEAN, std=IMAGENET_STD)

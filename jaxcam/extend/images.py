"""Image-file conventions shared by the data-set engine and :mod:`msdnet_flax`'s folder loader.

One list of the extensions a folder walk takes and one ImageNet centre crop, so that
``jaxcam explain DIR``, ``imagenet:DIR`` and training on an image folder see the same files and
the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "center_crop", "resize_shorter_side"]

# The extensions (lower case) a folder walk takes; OpenCV decodes all of them.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def resize_shorter_side(image: np.ndarray, side: int) -> np.ndarray:
    """torchvision's ``Resize(int)``: the shorter side becomes ``side``, the aspect is kept.

    INTER_AREA when shrinking, INTER_LINEAR when enlarging.
    """
    h, w = image.shape[:2]
    nh, nw = (side, int(side * w / h)) if h <= w else (int(side * h / w), side)
    if (nh, nw) == (h, w):
        return image
    interp = cv2.INTER_AREA if nh < h else cv2.INTER_LINEAR
    return cv2.resize(image, (nw, nh), interpolation=interp)


def center_crop(image: np.ndarray, size: int, resize: int | None = None) -> np.ndarray:
    """ImageNet evaluation preprocessing: resize the shorter side, cut the central square.

    Args:
      image: (H, W, C) image.
      size: side of the crop.
      resize: the shorter side before cropping (>= size); default ``round(size * 256 / 224)``.

    Returns:
      (size, size, C), the dtype of ``image``.

    Raises:
      ValueError: ``resize`` is smaller than ``size``.
    """
    resize = int(round(size * 256 / 224)) if resize is None else resize
    if resize < size:
        raise ValueError(f"resize={resize} must be >= size={size} (the crop must fit)")
    image = resize_shorter_side(image, resize)
    nh, nw = image.shape[:2]
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return np.ascontiguousarray(image[top:top + size, left:left + size])

"""Image-file conventions shared by the data-set engine and :mod:`msdnet_flax`'s folder loader.

One list of the extensions a folder walk takes and one ImageNet centre crop, so that
``jaxcam explain DIR``, ``imagenet:DIR`` and training on an image folder see the same files and
the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "center_crop", "center_crop_box", "resize_shorter_side"]

# The extensions (lower case) a folder walk takes; OpenCV decodes all of them.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _resized_shape(h: int, w: int, side: int) -> tuple[int, int]:
    return (side, int(side * w / h)) if h <= w else (int(side * h / w), side)


def resize_shorter_side(image: np.ndarray, side: int) -> np.ndarray:
    """torchvision's ``Resize(int)``: the shorter side becomes ``side``, the aspect is kept.

    INTER_AREA when shrinking, INTER_LINEAR when enlarging.
    """
    h, w = image.shape[:2]
    nh, nw = _resized_shape(h, w, side)
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
    resize = _crop_resize(size, resize)
    image = resize_shorter_side(image, resize)
    top, left = _crop_corner(*image.shape[:2], size)
    return np.ascontiguousarray(image[top:top + size, left:left + size])


def _crop_resize(size: int, resize: int | None) -> int:
    resize = int(round(size * 256 / 224)) if resize is None else resize
    if resize < size:
        raise ValueError(f"resize={resize} must be >= size={size} (the crop must fit)")
    return resize


def _crop_corner(nh: int, nw: int, size: int) -> tuple[int, int]:
    return int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))


def center_crop_box(h: int, w: int, size: int, resize: int | None = None
                    ) -> tuple[float, float, float, float]:
    """Where :func:`center_crop`'s square lies in the original ``(h, w)`` image.

    A map computed on the crop belongs on this box of the original, not on the whole image.

    Args:
      h, w: the original image's size.
      size, resize: as for :func:`center_crop`.

    Returns:
      ``(top, left, height, width)`` in the original's pixel coordinates (fractional).
    """
    resize = _crop_resize(size, resize)
    nh, nw = _resized_shape(h, w, resize)
    top, left = _crop_corner(nh, nw, size)
    sy, sx = h / nh, w / nw
    return top * sy, left * sx, size * sy, size * sx

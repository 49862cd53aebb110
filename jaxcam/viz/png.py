"""PNG files of pictures (the one PNG writer of the project)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

__all__ = ["write_png"]


def write_png(path: str | os.PathLike, rgb: np.ndarray, *, smallest: bool = False) -> None:
    """Write an (H, W, 3) uint8 RGB picture as PNG.

    Args:
      path: the file to write.
      rgb: the picture, RGB order.
      smallest: zlib's strongest level with filtered rows instead of OpenCV's fast default
        (lossless either way): for pictures kept in the repository, not for every overlay of a
        run, where encoding time counts.

    Raises:
      OSError: OpenCV cannot encode it, or the file cannot be written.
    """
    params = ([cv2.IMWRITE_PNG_COMPRESSION, 9,
               cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_FILTERED] if smallest else [])
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"cannot encode {path} as PNG")
    Path(path).write_bytes(buf.tobytes())

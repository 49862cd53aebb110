"""PNG files of pictures (the one PNG writer of the project)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

__all__ = ["write_png"]


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB picture as PNG.

    Args:
      path: the file to write.
      rgb: the picture, RGB order.

    Raises:
      OSError: OpenCV cannot encode it, or the file cannot be written.
    """
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path} as PNG")
    Path(path).write_bytes(buf.tobytes())

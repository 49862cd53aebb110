"""The bundled, trained MSD-Net: ``pretrained()`` loads the checkpoint shipped with the package.

The bundle is made by ``python -m msdnet_flax.training.bundle`` from a run of ``python -m
msdnet_flax.training``; its model card (``card.json``: the training command, seeds, time,
per-exit accuracy and FLOPs, the budgeted-batch curve) sits next to the weights and is summarised
in the README.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["BUNDLED_PATH", "Pretrained", "pretrained"]

#: Where the bundled checkpoint lives (a ``msdnet_flax.checkpoint`` directory).
BUNDLED_PATH = Path(__file__).resolve().parent / "assets" / "bundled"


class Pretrained(NamedTuple):
    """The bundled model and everything needed to feed it; unpacks as ``model, meta``."""

    model: Any  # msdnet_flax.MSDNet in eval mode
    meta: dict[str, Any]  # the checkpoint's metadata, with the model card under "card"

    @property
    def image_size(self) -> int:
        return 32 if self.meta["model_config"]["data"] == "cifar" else 224

    def preprocess(self, images: Any) -> jax.Array:
        """The model's input from (N, S, S, 3) or (S, S, 3) RGB images at the model's size S.

        uint8 images are on the 0..255 scale; float images must be on the [0, 1] scale. Returns
        float32 NHWC normalised with the training run's mean and std. Files of any size, mode or
        bit depth are converted by ``jaxcam explain`` (``jaxcam.batch``).
        """
        from msdnet_flax.data import normalize

        x = images if isinstance(images, jax.Array) else np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        s = self.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (s, s, 3):
            raise ValueError(f"preprocess expects RGB images of shape (N, {s}, {s}, 3) or "
                             f"({s}, {s}, 3), got shape {tuple(np.shape(images))}")
        if np.issubdtype(x.dtype, np.floating):
            x = x * 255.0
        elif x.dtype != np.uint8:
            raise ValueError(f"preprocess expects uint8 (0..255) or float ([0, 1]) images, got "
                             f"dtype {x.dtype}")
        return normalize(x, self.meta["mean"], self.meta["std"])


def pretrained(path: str | Path | None = None) -> Pretrained:
    """The bundled model, its preprocessing and its metadata, offline.

    Args:
      path: the bundle directory (default: :data:`BUNDLED_PATH`, the one shipped in the
        package).

    Returns:
      A :class:`Pretrained`: ``model`` (the MSDNet in eval mode), ``meta`` (the checkpoint's
      metadata: ``model_config``, ``mean``, ``std``, ``class_names``, ..., and ``card``, the model
      card) and ``preprocess(images)``. ``model, meta = pretrained()`` also works.

    Raises:
      FileNotFoundError: no checkpoint at ``path``.
    """
    from msdnet_flax.checkpoint import load_checkpoint, resolve_checkpoint

    path = BUNDLED_PATH if path is None else Path(path)
    try:
        resolve_checkpoint(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no bundled model at {path}: train one with `python -m msdnet_flax.training` and "
            f"bundle it with `python -m msdnet_flax.training.bundle` (see the README's model card)"
        ) from None
    model, meta = load_checkpoint(path)
    card = Path(path) / "card.json"
    meta["card"] = json.loads(card.read_text()) if card.is_file() else None
    return Pretrained(model, meta)

"""An in-memory image classification data set, and the normalisation every loader shares."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ArrayDataset", "normalize"]


def _check_triple(name: str, value: Any, *, positive: bool) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in value)
    except TypeError:
        raise TypeError(f"ArrayDataset.{name} must be 3 floats (one per RGB channel), "
                        f"got {value!r}") from None
    if len(triple) != 3:
        raise ValueError(f"ArrayDataset.{name} must be 3 floats (one per RGB channel), "
                         f"got {len(triple)}: {value!r}")
    if not all(np.isfinite(triple)) or (positive and min(triple) <= 0):
        kind = "finite and > 0" if positive else "finite"
        raise ValueError(f"ArrayDataset.{name} must be {kind}, got {value!r}")
    return triple  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """Images, labels and (optionally) ground-truth object masks, held as numpy arrays.

    Attributes:
      images: (N, H, W, 3) uint8 RGB images.
      labels: (N,) int32 class indices into ``class_names``.
      class_names: the name of each class.
      mean: per-channel normalisation mean, on the [0, 1] pixel scale.
      std: per-channel normalisation standard deviation, on the [0, 1] pixel scale.
      masks: optional (N, H, W) bool ground-truth mask of each image's object (visible pixels).
      difficulty: optional (N,) float32 per-sample difficulty in [0, 1].

    Raises:
      TypeError / ValueError (from ``__post_init__``) naming the field whose shape, dtype or
      values are wrong.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    masks: np.ndarray | None = None
    difficulty: np.ndarray | None = None

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray):
            raise TypeError(f"ArrayDataset.images must be a numpy array, got "
                            f"{type(images).__name__}")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"ArrayDataset.images must have shape (N, H, W, 3) (RGB, channels "
                             f"last), got {images.shape}")
        if images.dtype != np.uint8:
            raise TypeError(f"ArrayDataset.images must be uint8 (0..255), got {images.dtype}")
        n = images.shape[0]
        if not isinstance(labels, np.ndarray):
            raise TypeError(f"ArrayDataset.labels must be a numpy array, got "
                            f"{type(labels).__name__}")
        if labels.shape != (n,):
            raise ValueError(f"ArrayDataset.labels must have shape ({n},) to match {n} images, "
                             f"got {labels.shape}")
        if labels.dtype != np.int32:
            raise TypeError(f"ArrayDataset.labels must be int32, got {labels.dtype} "
                            f"(convert with labels.astype(np.int32))")
        names = self.class_names
        if isinstance(names, str) or not all(isinstance(c, str) for c in names):
            raise TypeError(f"ArrayDataset.class_names must be a sequence of str, got {names!r}")
        object.__setattr__(self, "class_names", tuple(names))
        if not self.class_names:
            raise ValueError("ArrayDataset.class_names is empty")
        if n and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ValueError(f"ArrayDataset.labels must lie in [0, {len(self.class_names)}) "
                             f"(one per class name), got range [{labels.min()}, {labels.max()}]")
        object.__setattr__(self, "mean", _check_triple("mean", self.mean, positive=False))
        object.__setattr__(self, "std", _check_triple("std", self.std, positive=True))
        if self.masks is not None:
            masks = self.masks
            if not isinstance(masks, np.ndarray) or masks.shape != images.shape[:3]:
                raise ValueError(f"ArrayDataset.masks must be a numpy array of shape "
                                 f"{images.shape[:3]} (N, H, W), got "
                                 f"{getattr(masks, 'shape', type(masks).__name__)}")
            if masks.dtype != np.bool_:
                raise TypeError(f"ArrayDataset.masks must be bool, got {masks.dtype}")
        if self.difficulty is not None:
            diff = self.difficulty
            if not isinstance(diff, np.ndarray) or diff.shape != (n,):
                raise ValueError(f"ArrayDataset.difficulty must be a numpy array of shape ({n},),"
                                 f" got {getattr(diff, 'shape', type(diff).__name__)}")
            if diff.dtype != np.float32:
                raise TypeError(f"ArrayDataset.difficulty must be float32, got {diff.dtype}")
            if n and not (np.all(diff >= 0) and np.all(diff <= 1)):
                raise ValueError(f"ArrayDataset.difficulty must lie in [0, 1], got range "
                                 f"[{diff.min()}, {diff.max()}]")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(class_names)``."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: Sequence[int] | np.ndarray | slice) -> ArrayDataset:
        """A new data set of the selected samples (in the given order).

        Args:
          indices: integer indices, a boolean mask of length N, or a slice.

        Returns:
          An ``ArrayDataset`` with the same class names and normalisation.
        """
        if not isinstance(indices, slice):
            indices = np.asarray(indices)
            if indices.dtype == np.bool_:
                if indices.shape != (len(self),):
                    raise ValueError(f"a boolean subset mask must have shape ({len(self)},), "
                                     f"got {indices.shape}")
            elif indices.size == 0:
                indices = indices.astype(np.intp)
            elif not np.issubdtype(indices.dtype, np.integer) or indices.ndim != 1:
                raise TypeError(f"subset indices must be a 1-D integer array, a boolean mask or "
                                f"a slice, got dtype {indices.dtype}, shape {indices.shape}")

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[indices]

        return dataclasses.replace(self, images=self.images[indices],
                                   labels=self.labels[indices], masks=take(self.masks),
                                   difficulty=take(self.difficulty))


def normalize(images_uint8: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """``(x / 255 - mean) / std`` in float32; jittable.

    Args:
      images_uint8: (..., 3) images with values in 0..255 (uint8 or any numeric dtype).
      mean: per-channel mean on the [0, 1] scale (e.g. ``dataset.mean``).
      std: per-channel standard deviation on the [0, 1] scale.

    Returns:
      float32 array of the same shape.
    """
    x = jnp.asarray(images_uint8).astype(jnp.float32) * (1.0 / 255.0)
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)

"""What the model expects of its input, given by the caller rather than read from a model."""

from __future__ import annotations

import dataclasses

__all__ = ["Preprocessing"]


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How decoded images become model inputs, and what the model's outputs mean.

    The engine knows no model family: the caller (``jaxcam explain`` builds it from an
    MSD-Net checkpoint) says what size, normalisation and classes apply.

    Attributes:
      image_size: side of the (square) model input.
      mean: per-channel mean on the [0, 1] scale, subtracted before dividing by ``std``.
      std: per-channel standard deviation on the [0, 1] scale.
      class_names: the model's classes, in logit order.
      crop: ImageNet's resize-and-centre-crop for inputs whose source does not say; False
        resizes the whole image (aspect not kept).
    """

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    crop: bool = False

    def __post_init__(self) -> None:
        # Tuples of plain Python values: the record is hashed into a run's fingerprint and
        # compared between processes, so no NumPy scalars or lists.
        object.__setattr__(self, "image_size", int(self.image_size))
        for field in ("mean", "std"):
            object.__setattr__(self, field, tuple(float(v) for v in getattr(self, field)))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))

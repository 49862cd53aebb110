"""What is explained: turning a model output into one score per image.

``targets`` may be None (each image's top class), an int (one class for every image), an int
array of shape (B,), or a callable mapping the whole batch output to (B,) scores. The classes
below mirror pytorch-grad-cam's ``ClassifierOutputTarget`` family for people switching, but are
batched: they take the (B, num_classes) output, not one row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ScoreFn = Callable[[jax.Array], jax.Array]
"""Maps images ``(B, H, W, C)`` to one score per image ``(B,)`` (the model's score for that
image's target); image ``b``'s score must depend on image ``b`` alone (true of any per-example
model in inference mode)."""

__all__ = [
    "ScoreFn",
    "ClassifierOutputTarget",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputReST",
    "BinaryClassifierOutputTarget",
    "SoftmaxOutputTarget",
    "RawScoresOutputTarget",
    "SemanticSegmentationTarget",
    "FinerWeightedTarget",
    "finer_weighted_scores",
    "TargetSpec",
    "prepare_targets",
    "target_scores",
]


@dataclasses.dataclass(frozen=True)
class ClassifierOutputTarget:
    """The logit of ``category`` (pytorch-grad-cam's ``ClassifierOutputTarget``, batched)."""

    category: int

    def __call__(self, output: jax.Array) -> jax.Array:
        return output[:, self.category]


@dataclasses.dataclass(frozen=True)
class ClassifierOutputSoftmaxTarget:
    """The softmax probability of ``category``."""

    category: int

    def __call__(self, output: jax.Array) -> jax.Array:
        return jax.nn.softmax(output, axis=-1)[:, self.category]


@dataclasses.dataclass(frozen=True)
class ClassifierOutputReST:
    """The logit of ``category`` minus its cross-entropy loss, ``z_c + log softmax(z)_c``
    (pytorch-grad-cam's ``ClassifierOutputReST``, batched): "ReLU-Softmax-Target", both the
    pre- and post-softmax score, proposed with ShapleyCAM (Cai et al., arXiv 2501.06261)."""

    category: int

    def __call__(self, output: jax.Array) -> jax.Array:
        return output[:, self.category] + jax.nn.log_softmax(output, axis=-1)[:, self.category]


@dataclasses.dataclass(frozen=True)
class BinaryClassifierOutputTarget:
    """A one-logit binary classifier's score: the logit for ``category == 1``, its negation
    otherwise (pytorch-grad-cam's ``BinaryClassifierOutputTarget``, batched). ``output`` is
    ``(B,)`` or ``(B, 1)``."""

    category: int

    def __call__(self, output: jax.Array) -> jax.Array:
        if output.ndim == 2 and output.shape[1] == 1:
            output = output[:, 0]
        if output.ndim != 1:
            raise ValueError("BinaryClassifierOutputTarget needs (B,) or (B, 1) logits, got "
                             f"shape {output.shape}")
        return output if self.category == 1 else -output


@dataclasses.dataclass(frozen=True)
class SoftmaxOutputTarget:
    """Every class's softmax probability, ``(B, K)`` (pytorch-grad-cam's
    ``SoftmaxOutputTarget``). A vector per image: for the vector-valued metrics
    (:class:`jaxcam.metrics.DropInConfidence`), not for a gradient method, which needs one
    score per image (pytorch-grad-cam's own ``backward`` fails on it too)."""

    def __call__(self, output: jax.Array) -> jax.Array:
        return jax.nn.softmax(output, axis=-1)


@dataclasses.dataclass(frozen=True)
class RawScoresOutputTarget:
    """The whole output, ``(B, K)`` (pytorch-grad-cam's ``RawScoresOutputTarget``); as
    :class:`SoftmaxOutputTarget`, for vector-valued metrics."""

    def __call__(self, output: jax.Array) -> jax.Array:
        return output


@dataclasses.dataclass(frozen=True, eq=False)
class SemanticSegmentationTarget:
    """The sum of ``category``'s scores over the pixels of ``mask`` (pytorch-grad-cam's
    ``SemanticSegmentationTarget``, batched and NHWC): ``output`` is ``(B, H, W, K)``
    segmentation logits, ``mask`` ``(H, W)`` (every image) or ``(B, H, W)``, 0/1 or weights.

    Hashed by identity (the mask is an array), so one instance is one compiled computation.
    """

    category: int
    mask: Any

    def __call__(self, output: jax.Array) -> jax.Array:
        mask = jnp.asarray(self.mask, output.dtype)
        return jnp.sum(output[..., self.category] * mask, axis=(1, 2))


def finer_weighted_scores(output: jax.Array, main: jax.Array, comparisons: jax.Array,
                          alpha: float) -> jax.Array:
    """Finer-CAM's weighted difference between a class and its comparison classes.

    ``score = sum_m p_m (z_main - alpha z_m) / (sum_m p_m + 1e-9)`` with ``p = softmax(z)``
    (differentiated through, as pytorch-grad-cam's ``FinerWeightedTarget``).

    Args:
      output: ``(B, K)`` logits ``z``.
      main: ``(B,)`` main classes.
      comparisons: ``(B, M)`` comparison classes.
      alpha: the comparison strength.

    Returns:
      ``(B,)`` scores.
    """
    main = jnp.asarray(main, jnp.int32)
    comparisons = jnp.asarray(comparisons, jnp.int32)
    main_logit = jnp.take_along_axis(output, main[:, None], axis=-1)
    other_logits = jnp.take_along_axis(output, comparisons, axis=-1)
    weights = jnp.take_along_axis(jax.nn.softmax(output, axis=-1), comparisons, axis=-1)
    numerator = jnp.sum(weights * (main_logit - alpha * other_logits), axis=-1)
    return numerator / (jnp.sum(weights, axis=-1) + 1e-9)


@dataclasses.dataclass(frozen=True)
class FinerWeightedTarget:
    """pytorch-grad-cam's ``FinerWeightedTarget``, batched: the same main and comparison
    classes for every image (see :func:`finer_weighted_scores`; the method ``"finercam"``
    chooses them per image)."""

    main_category: int
    comparison_categories: tuple[int, ...]
    alpha: float = 1.0

    def __post_init__(self) -> None:
        # A list would make the target unhashable, and jax.jit keys on it.
        object.__setattr__(self, "comparison_categories",
                           tuple(int(c) for c in self.comparison_categories))

    def __call__(self, output: jax.Array) -> jax.Array:
        batch = output.shape[0]
        main = jnp.full((batch,), self.main_category, jnp.int32)
        comparisons = jnp.broadcast_to(jnp.asarray(self.comparison_categories, jnp.int32),
                                       (batch, len(self.comparison_categories)))
        return finer_weighted_scores(output, main, comparisons, self.alpha)


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """The static part of a target choice: 'argmax', 'index' (classes passed as an array) or
    a callable. Hashable, so it can be a static argument of ``jax.jit``."""

    kind: str
    fn: Callable[[Any], jax.Array] | None = None


def prepare_targets(targets: Any, batch: int
                    ) -> tuple[TargetSpec, np.ndarray | jax.Array | None]:
    """Split ``targets`` into a static spec and a (B,) int32 array of classes (or None).

    The classes are a NumPy array when they came from the host (ints, lists, NumPy arrays) and a
    ``jax.Array`` (or tracer) when they came as one.

    Args:
      targets: None, an int, an int array ``(B,)``, a callable, or a list of
        :class:`ClassifierOutputTarget`.
      batch: the batch size B.

    Returns:
      ``(spec, classes)``.

    Raises:
      ValueError: a class array of the wrong shape or negative class indices.
      TypeError: anything else that is not a valid target.
    """
    if targets is None:
        return TargetSpec("argmax"), None
    if callable(targets):
        return TargetSpec("callable", targets), None
    if isinstance(targets, (list, tuple)) and targets and all(callable(t) for t in targets):
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} per-image targets for a batch of {batch}")
        if all(isinstance(t, ClassifierOutputTarget) for t in targets):
            targets = [t.category for t in targets]
        else:
            raise TypeError("a list of per-image callables is only supported for "
                            "ClassifierOutputTarget; pass one batched callable instead")
    if isinstance(targets, (bool, np.bool_)):
        raise TypeError("targets must be class indices, not a bool")
    if isinstance(targets, (int, np.integer)):
        classes = np.full((batch,), int(targets))
    else:
        classes = targets
        if isinstance(classes, (list, tuple)):
            classes = np.asarray(classes)
        if not hasattr(classes, "dtype") or not jnp.issubdtype(classes.dtype, jnp.integer):
            raise TypeError(f"targets must be None, an int, an int array of shape ({batch},) or "
                            f"a callable; got {type(targets).__name__}"
                            + (f" of dtype {classes.dtype}" if hasattr(classes, "dtype") else ""))
        if classes.ndim == 0:  # a 0-d array (e.g. jnp.argmax of one row) is one class for all
            broadcast = np.broadcast_to if isinstance(classes, np.ndarray) else jnp.broadcast_to
            classes = broadcast(classes, (batch,))
        if tuple(classes.shape) != (batch,):
            raise ValueError(f"targets has shape {tuple(classes.shape)}; expected ({batch},), "
                             "one class per image")
    if isinstance(classes, np.ndarray):
        if classes.size and classes.min() < 0:
            raise ValueError(f"target class {int(classes.min())} is negative")
        # Host classes stay on the host: their range is checked there, with no device sync,
        # and jax.jit moves them to the device with the call.
        return TargetSpec("index"), classes.astype(np.int32)
    return TargetSpec("index"), jnp.asarray(classes, dtype=jnp.int32)


def check_target_range(classes: np.ndarray | jax.Array | None, num_classes: int) -> None:
    """Raise if any requested class is outside ``[0, num_classes)``.

    Free for NumPy classes; a ``jax.Array`` is copied to the host, which waits for whatever
    computes it (not for the explanation: call this before reading any result).

    Args:
      classes: ``(B,)`` or ``(K, B)`` classes, or None (nothing to check).
      num_classes: the width of the output they index.

    Raises:
      ValueError: a class out of range.
    """
    if classes is None:
        return
    host = np.asarray(classes)
    bad = host[(host < 0) | (host >= num_classes)]
    if bad.size:
        raise ValueError(f"target class {int(bad[0])} is out of range: the model has "
                         f"{num_classes} classes (0..{num_classes - 1})")


def target_scores(spec: TargetSpec, output: Any, classes: jax.Array | None) -> jax.Array:
    """(B,) scores of ``output`` for the chosen targets.

    Args:
      spec: the static target choice.
      output: the model output (``(B, num_classes)`` logits unless ``spec`` is a callable).
      classes: the ``(B,)`` classes for ``spec.kind == 'index'``, else ignored.

    Returns:
      The ``(B,)`` scores.

    Raises:
      ValueError: an output that is not ``(B, num_classes)``, or a callable's result not (B,).
    """
    if spec.kind == "callable":
        scores = spec.fn(output)
        if not hasattr(scores, "ndim") or scores.ndim != 1:
            raise ValueError("a targets callable must map the model output to one score per "
                             f"image (B,), got shape {getattr(scores, 'shape', None)}")
        return scores
    if not isinstance(output, jax.Array) or output.ndim != 2:
        raise ValueError(
            "the model output is "
            + (f"an array of shape {output.shape}" if isinstance(output, jax.Array)
               else f"a {type(output).__name__}")
            + ", not (B, num_classes) logits; pass targets=a callable mapping the output to "
              "(B,) scores (e.g. lambda out: out[-1][:, 3])")
    if spec.kind == "argmax":
        classes = jnp.argmax(output, axis=-1)
    return jnp.take_along_axis(output, classes[:, None].astype(jnp.int32), axis=-1)[:, 0]

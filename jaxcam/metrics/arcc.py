"""ARCC and its parts (complexity, coherency), and pytorch-grad-cam's confidence metrics.

* ARCC (pytorch-grad-cam 1.5.7's ``ARCC``, after RefineCAM, arXiv 2605.14641): the harmonic mean
  of coherency, ``1 - complexity`` and the ROAD score scaled to ``[0, 1]``. Complexity and
  coherency follow Poppi et al., "Revisiting The Evaluation of Class Activation Mapping for
  Explainability: A Novel Metric and Experimental Analysis", CVPR workshops 2021
  (https://arxiv.org/abs/2104.10252); ROAD is Rong et al., ICML 2022.
* :class:`DropInConfidence` and :class:`IncreaseInConfidence`: pytorch-grad-cam's
  ``CamMultImageConfidenceChange`` family, ``score(x * map) - score(x)`` made a drop
  (``relu(-change)``) or an indicator (``change > 0``).

Every function is batched over images; ``score_fn`` and ``explain_fn`` are called on whole
batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxcam.metrics._common import check_images_maps
from jaxcam.metrics.faithfulness import confidence_change
from jaxcam.metrics.road import road_combined
from jaxcam.targets import ScoreFn

__all__ = [
    "ARCC_ROAD_PERCENTILES",
    "DropInConfidence",
    "IncreaseInConfidence",
    "arcc",
    "coherency",
    "complexity",
    "drop_in_confidence",
    "pgc_pearson",
]

ExplainFn = Callable[[jax.Array], jax.Array]
"""Maps images ``(B, H, W, C)`` to their ``(B, H, W)`` maps in ``[0, 1]`` (the explanation
method being evaluated, with its targets: e.g. ``lambda x: jaxcam.explain(model, x, ...)``)."""

ARCC_ROAD_PERCENTILES = (20, 40, 60, 80)
# pytorch-grad-cam's guards: in the Pearson denominator and in ARCC's harmonic mean.
PEARSON_EPS = 1e-8
ARCC_EPS = 1e-8


def complexity(maps: jax.Array) -> jax.Array:
    """Complexity: the mean absolute value of each map (its L1 norm over the pixel count).

    0 for an all-zero map, 1 for an all-one map; lower is a more concise explanation.

    Args:
      maps: ``(B, H, W)`` maps.

    Returns:
      ``(B,)`` complexities.
    """
    maps = jnp.asarray(maps)
    return jnp.mean(jnp.abs(maps.reshape(maps.shape[0], -1)), axis=-1)


def pgc_pearson(maps_a: jax.Array, maps_b: jax.Array) -> jax.Array:
    """Per-image Pearson correlation as pytorch-grad-cam's ``batch_pearson_coherency``:
    ``cov / (std_a std_b + 1e-8)``, with ``n - 1`` denominators.

    Args:
      maps_a, maps_b: ``(B, ...)`` arrays of one shape.

    Returns:
      ``(B,)`` correlations (0 where either map is constant).
    """
    a = jnp.asarray(maps_a, jnp.float32)
    b = jnp.asarray(maps_b, jnp.float32)
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    n = a.shape[1]
    a = a - jnp.mean(a, axis=1, keepdims=True)
    b = b - jnp.mean(b, axis=1, keepdims=True)
    cov = jnp.sum(a * b, axis=1) / (n - 1)
    std_a = jnp.sqrt(jnp.sum(a * a, axis=1) / (n - 1))
    std_b = jnp.sqrt(jnp.sum(b * b, axis=1) / (n - 1))
    return cov / (std_a * std_b + PEARSON_EPS)


def coherency(explain_fn: ExplainFn, images: jax.Array, maps: jax.Array) -> jax.Array:
    """Coherency: how well a map survives being applied to its own image, in ``[0, 1]``.

    The images are multiplied by their maps, explained again with the same method, and the new
    maps correlated with the old: ``(pearson(explain(x * map), map) + 1) / 2``.

    Args:
      explain_fn: the method under evaluation, images -> maps (with the same targets).
      images: ``(B, H, W, C)`` model inputs.
      maps: ``(B, H, W)`` maps of those images by ``explain_fn``.

    Returns:
      ``(B,)`` coherencies; higher is better.
    """
    images, maps = check_images_maps(images, maps)
    remapped = explain_fn(images * maps[..., None].astype(images.dtype))
    return (pgc_pearson(remapped, maps) + 1.0) / 2.0


def arcc(score_fn: ScoreFn, explain_fn: ExplainFn, images: jax.Array, maps: jax.Array, *,
         road_percentiles: Sequence[float] = ARCC_ROAD_PERCENTILES, noise: float = 0.01,
         key: jax.Array | None = None, batch_size: int | None = None) -> jax.Array:
    """ARCC: the harmonic mean of coherency, ``1 - complexity`` and the scaled ROAD score.

    ``road = clip(2 road_combined, 0, 1)`` (ROAD lies in ``[-0.5, 0.5]``) and
    ``arcc = 3 / (1/(coherency + e) + 1/(1 - complexity + e) + 1/(road + e))``, ``e = 1e-8``,
    as pytorch-grad-cam 1.5.7's ``ARCC``. Higher is better.

    Args:
      score_fn: images -> ``(B,)`` scores of each image's target (ROAD's; pytorch-grad-cam's
        examples use the softmax probability).
      explain_fn: the method under evaluation, images -> maps (for coherency).
      images: ``(B, H, W, C)`` model inputs.
      maps: ``(B, H, W)`` maps in ``[0, 1]``.
      road_percentiles: ROAD's percentiles (pytorch-grad-cam's ARCC: 20, 40, 60, 80).
      noise: ROAD's imputation noise (pytorch-grad-cam: 0.01).
      key: PRNG key for that noise.
      batch_size: ROAD's percentiles scored together (memory only).

    Returns:
      ``(B,)`` ARCC scores in ``[0, 1]``.
    """
    images, maps = check_images_maps(images, maps)
    road = road_combined(score_fn, images, maps, percentiles=tuple(road_percentiles),
                         noise=noise, key=key, batch_size=batch_size)
    road = jnp.clip(road * 2.0, 0.0, 1.0)
    inverse = (1.0 / (coherency(explain_fn, images, maps) + ARCC_EPS)
               + 1.0 / ((1.0 - complexity(maps)) + ARCC_EPS)
               + 1.0 / (road + ARCC_EPS))
    return 3.0 / inverse


def drop_in_confidence(score_fn: ScoreFn, images: jax.Array, maps: jax.Array) -> jax.Array:
    """pytorch-grad-cam's ``DropInConfidence``: ``relu(score(x) - score(x * map))``.

    Args:
      score_fn: images -> ``(B,)`` scores (or ``(B, K)`` with a vector target such as
        :class:`jaxcam.targets.SoftmaxOutputTarget`, element-wise).
      images: ``(B, H, W, C)`` model inputs.
      maps: ``(B, H, W)`` maps in ``[0, 1]``.

    Returns:
      The drops, one per score.
    """
    return jax.nn.relu(-confidence_change(score_fn, images, maps))


@dataclasses.dataclass(frozen=True)
class DropInConfidence:
    """pytorch-grad-cam's ``DropInConfidence`` as a callable: ``metric(score_fn, images,
    maps)``, where pytorch-grad-cam's ``(input_tensor, cams, targets, model)`` becomes
    ``score_fn = lambda x: targets(model(x))``. See :func:`drop_in_confidence`."""

    def __call__(self, score_fn: ScoreFn, images: jax.Array, maps: jax.Array) -> jax.Array:
        return drop_in_confidence(score_fn, images, maps)


@dataclasses.dataclass(frozen=True)
class IncreaseInConfidence:
    """pytorch-grad-cam's ``IncreaseInConfidence``: 1.0 where ``score(x * map) > score(x)``,
    else 0.0, per score (float32). As :class:`DropInConfidence`, called as
    ``metric(score_fn, images, maps)``; :func:`jaxcam.metrics.increase_in_confidence` is the
    same indicator from precomputed scores, averaged over the batch by default."""

    def __call__(self, score_fn: ScoreFn, images: jax.Array, maps: jax.Array) -> jax.Array:
        return (confidence_change(score_fn, images, maps) > 0).astype(jnp.float32)

"""Faithfulness of maps to the model: deletion / insertion (RISE) and confidence change.

* Deletion and insertion (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for
  Explanation of Black-box Models", BMVC 2018): pixels are removed (deletion: replaced by a
  baseline) or inserted (insertion: copied from the image onto a blurred copy of it) in order of
  decreasing saliency, and the model's score is recorded after each of ``steps`` equal fractions;
  the area under that curve is the metric (low is good for deletion, high for insertion). RISE
  scores with the softmax probability of the class.
* Average Drop and Increase in Confidence (Chattopadhay et al., "Grad-CAM++: Generalized
  Gradient-Based Visual Explanations for Deep Convolutional Networks", WACV 2018): the model
  scores the image multiplied by its map; these use the class probability (softmax), as the
  paper and torchcam's ``ClassificationMetric`` do.

Every function here is batched over images, jittable, and calls ``score_fn`` on whole batches.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._arrays import map_in_chunks
from jaxcam.metrics._common import check_images_maps, reduce_batch
from jaxcam.targets import ScoreFn

__all__ = [
    "deletion_curve",
    "insertion_curve",
    "curve_fractions",
    "auc",
    "saliency_ranks",
    "rise_blur",
    "rise_blur_kernel",
    "masked_scores",
    "confidence_change",
    "average_drop",
    "increase_in_confidence",
]

# torchcam's ClassificationMetric divides by ``full + 1e-7``.
DROP_EPS = 1e-7


def curve_fractions(n_pixels: int, steps: int) -> np.ndarray:
    """Fractions of the pixels perturbed at each point of a curve: ``floor(k N / steps) / N``.

    Args:
        n_pixels: ``N = H * W``.
        steps: number of equal steps; the curve has ``steps + 1`` points, ``0`` to ``N`` pixels.

    Returns:
        ``(steps + 1,)`` float32 fractions from 0 to 1 (exactly ``k / steps`` when ``steps``
        divides ``N``).
    """
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    counts = (np.arange(steps + 1, dtype=np.int64) * n_pixels) // steps
    return (counts / n_pixels).astype(np.float32)


def _counts(n_pixels: int, steps: int) -> np.ndarray:
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    return ((np.arange(steps + 1, dtype=np.int64) * n_pixels) // steps).astype(np.int32)


def saliency_ranks(maps: jax.Array) -> jax.Array:
    """Each pixel's position in the order of decreasing saliency, ``(B, H, W)`` int32.

    Ties are broken deterministically by a stable sort: of equal values, the pixel first in
    row-major order comes first (as torchcam's ``argsort(descending=True, stable=True)``).

    Args:
        maps: ``(B, H, W)`` saliency maps.

    Returns:
        ``ranks`` with ``ranks[b, i, j] = r`` when pixel ``(i, j)`` is the ``r``-th most salient
        (0-based) of image ``b``.
    """
    b, h, w = maps.shape
    order = jnp.argsort(maps.reshape(b, h * w), axis=-1, descending=True, stable=True)
    ranks = jnp.zeros((b, h * w), jnp.int32)
    ranks = jax.vmap(lambda r, o: r.at[o].set(jnp.arange(h * w, dtype=jnp.int32)))(ranks, order)
    return ranks.reshape(b, h, w)


def rise_blur_kernel(klen: int = 11, sigma: float = 5.0) -> np.ndarray:
    """RISE's blur kernel: ``scipy.ndimage.gaussian_filter`` of a centred delta, reflect mode.

    RISE's ``gkern(klen, nsig)`` smooths a ``klen x klen`` delta with a Gaussian of ``sigma``
    (truncated at 4 sigma) with scipy's default ``'reflect'`` boundary, which folds the tails back
    in: the kernel sums to 1 and is flatter than a truncated Gaussian. Computed here in NumPy (no
    SciPy) as the outer product of the 1-D kernel.

    Args:
        klen: kernel size (odd); RISE uses 11.
        sigma: Gaussian standard deviation in pixels; RISE uses 5.

    Returns:
        ``(klen, klen)`` float32 kernel.
    """
    if klen < 1 or klen % 2 == 0:
        raise ValueError(f"klen must be a positive odd integer, got {klen}")
    radius = int(4.0 * sigma + 0.5)  # scipy's truncate=4.0
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    centre = klen // 2
    k1 = np.zeros(klen)
    period = 2 * klen  # scipy 'reflect' (d c b a | a b c d | d c b a) has period 2 * klen
    for i in range(klen):
        for tap, wt in zip(taps, weights, strict=True):
            p = (i + tap) % period
            if p >= klen:
                p = period - 1 - p
            if p == centre:
                k1[i] += wt
    return np.outer(k1, k1).astype(np.float32)


def rise_blur(images: jax.Array, klen: int = 11, sigma: float = 5.0) -> jax.Array:
    """RISE's insertion start: each channel convolved with :func:`rise_blur_kernel`.

    As RISE's ``conv2d(x, kern, padding=klen // 2)``: zero padding, so borders darken.

    Args:
        images: ``(B, H, W, C)``.
        klen: kernel size (odd); RISE uses 11.
        sigma: Gaussian standard deviation; RISE uses 5.

    Returns:
        The blurred ``(B, H, W, C)`` images, in the images' dtype.
    """
    c = images.shape[-1]
    kernel = jnp.asarray(rise_blur_kernel(klen, sigma))
    kernel = jnp.broadcast_to(kernel[:, :, None, None], (klen, klen, 1, c))
    out = jax.lax.conv_general_dilated(
        images.astype(jnp.float32), kernel, (1, 1), [(klen // 2, klen // 2)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
        precision=jax.lax.Precision.HIGHEST)
    return out.astype(images.dtype)


def _curve(score_fn: ScoreFn, start: jax.Array, finish: jax.Array, ranks: jax.Array,
           counts: np.ndarray, batch_size: int | None) -> jax.Array:
    """Scores of ``start`` with its ``counts[k]`` most salient pixels taken from ``finish``."""

    def step_scores(count: jax.Array) -> jax.Array:
        moved = (ranks < count)[..., None]
        return score_fn(jnp.where(moved, finish, start))

    scores = map_in_chunks(step_scores, jnp.asarray(counts), batch_size)  # (steps + 1, B)
    return jnp.moveaxis(scores, 0, -1)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _perturbation_curve(score_fn: ScoreFn, steps: int, batch_size: int | None, insertion: bool,
                        images: jax.Array, maps: jax.Array,
                        baseline: jax.Array | None) -> jax.Array:
    """Deletion (``insertion=False``) or insertion curve; ``baseline=None`` is RISE's blur."""
    if baseline is None:
        baseline = rise_blur(images)
    baseline = jnp.broadcast_to(baseline.astype(images.dtype), images.shape)
    start, finish = (baseline, images) if insertion else (images, baseline)
    counts = _counts(maps.shape[1] * maps.shape[2], steps)
    return _curve(score_fn, start, finish, saliency_ranks(maps), counts, batch_size)


def deletion_curve(score_fn: ScoreFn, images: jax.Array, maps: jax.Array, *, steps: int = 50,
                   baseline: float | jax.Array = 0.0, batch_size: int | None = 8) -> jax.Array:
    """RISE's deletion curve: the score as the most salient pixels are removed.

    Point ``k`` (``k = 0 .. steps``) scores the image whose ``floor(k N / steps)`` most salient
    pixels (all channels) are replaced by ``baseline``; point 0 is the image itself, the last
    point the baseline. Pixels are ordered by :func:`saliency_ranks` (stable, ties in row-major
    order). The ``steps + 1`` scores of a batch come from ``vmap`` over steps, ``batch_size`` steps
    at a time (``jax.lax.map``), each step one ``score_fn`` call on all ``B`` images. Jitted, with
    ``score_fn``, ``steps`` and ``batch_size`` static.

    Reference: Petsiuk et al., "RISE", BMVC 2018 (deletion with a zero substrate and the softmax
    probability of the class; torchcam's ``DeletionInsertionMetric`` is the same curve).

    Args:
        score_fn: images ``(B, H, W, C)`` -> ``(B,)`` scores of each image's class; RISE uses the
            softmax probability.
        images: ``(B, H, W, C)``.
        maps: ``(B, H, W)`` saliency maps at the images' size.
        steps: number of equal steps (the curve has ``steps + 1`` points).
        baseline: what removed pixels become: a scalar or an array broadcastable to the images
            (a per-channel mean ``(C,)``, a blurred image ``(B, H, W, C)``); default zeros.
        batch_size: steps scored together (each is ``B`` images); ``None`` does all at once.

    Returns:
        ``(B, steps + 1)`` float scores; x positions are :func:`curve_fractions`.
    """
    images, maps = check_images_maps(images, maps)
    _counts(1, steps)  # checks steps
    return _perturbation_curve(score_fn, int(steps), batch_size, False, images, maps,
                               jnp.asarray(baseline, images.dtype))


def insertion_curve(score_fn: ScoreFn, images: jax.Array, maps: jax.Array, *, steps: int = 50,
                    baseline: float | jax.Array | None = None,
                    batch_size: int | None = 8) -> jax.Array:
    """RISE's insertion curve: the score as the most salient pixels are restored.

    Point ``k`` scores the start image with the image's ``floor(k N / steps)`` most salient pixels
    (all channels) copied in; point 0 is the start image, the last point the image itself. The
    start is RISE's blurred image (:func:`rise_blur`, 11 x 11, sigma 5) unless ``baseline`` is
    given. Ordering and batching as :func:`deletion_curve`.

    Reference: Petsiuk et al., "RISE", BMVC 2018.

    Args:
        score_fn: images -> ``(B,)`` scores of each image's class (RISE: softmax probability).
        images: ``(B, H, W, C)``.
        maps: ``(B, H, W)`` saliency maps at the images' size.
        steps: number of equal steps (the curve has ``steps + 1`` points).
        baseline: the start image: ``None`` for RISE's blur, else a scalar or an array
            broadcastable to the images (``0.0`` is torchcam's default insertion start).
        batch_size: steps scored together; ``None`` does all at once.

    Returns:
        ``(B, steps + 1)`` float scores; x positions are :func:`curve_fractions`.
    """
    images, maps = check_images_maps(images, maps)
    _counts(1, steps)  # checks steps
    start = None if baseline is None else jnp.asarray(baseline, images.dtype)
    return _perturbation_curve(score_fn, int(steps), batch_size, True, images, maps, start)


def auc(curve: jax.Array, fractions: jax.Array | None = None) -> jax.Array:
    """Area under a deletion or insertion curve, by the trapezoidal rule over ``[0, 1]``.

    With evenly spaced points this is RISE's ``(sum(c) - c[0] / 2 - c[-1] / 2) / (n - 1)``.

    Args:
        curve: ``(..., n)`` scores.
        fractions: ``(n,)`` x positions; default evenly spaced in ``[0, 1]`` (exact when
            ``steps`` divides ``H * W``; otherwise pass :func:`curve_fractions`).

    Returns:
        ``(...)`` areas.
    """
    curve = jnp.asarray(curve, jnp.float32)
    n = curve.shape[-1]
    if n < 2:
        raise ValueError(f"a curve needs at least 2 points, got {n}")
    x = jnp.linspace(0.0, 1.0, n) if fractions is None else jnp.asarray(fractions, jnp.float32)
    return jnp.trapezoid(curve, x=x, axis=-1)


@functools.partial(jax.jit, static_argnames=("score_fn",))
def masked_scores(score_fn: ScoreFn, images: jax.Array, maps: jax.Array) -> jax.Array:
    """The scores of the images multiplied by their maps: ``score_fn(images * maps[..., None])``.

    The explanation map is the multiplicative mask of Grad-CAM++'s Average Drop (Chattopadhay
    et al. 2018), torchcam's ``ClassificationMetric`` and pytorch-grad-cam's
    ``CamMultImageConfidenceChange`` (applied to the model's normalised input).

    Args:
        score_fn: images -> ``(B,)`` scores.
        images: ``(B, H, W, C)`` model inputs.
        maps: ``(B, H, W)`` maps in ``[0, 1]`` at the images' size.

    Returns:
        ``(B,)`` scores of the masked images.
    """
    images, maps = check_images_maps(images, maps)
    return score_fn(images * maps[..., None].astype(images.dtype))


@functools.partial(jax.jit, static_argnames=("score_fn",))
def confidence_change(score_fn: ScoreFn, images: jax.Array, maps: jax.Array) -> jax.Array:
    """pytorch-grad-cam's ``CamMultImageConfidenceChange``: ``score(x * map) - score(x)``.

    pytorch-grad-cam's ``DropInConfidence`` is ``relu(-change)`` and its ``IncreaseInConfidence``
    is ``change > 0``; both work with whatever score the target gives (logit or probability).

    Args:
        score_fn: images -> ``(B,)`` scores.
        images: ``(B, H, W, C)``.
        maps: ``(B, H, W)`` maps in ``[0, 1]``.

    Returns:
        ``(B,)`` score differences.
    """
    images, maps = check_images_maps(images, maps)
    return masked_scores(score_fn, images, maps) - score_fn(images)


def average_drop(scores_full: jax.Array, scores_masked: jax.Array, *,
                 reduction: str = "mean") -> jax.Array:
    """Average Drop: ``relu(Y - O) / Y`` (Chattopadhay et al., Grad-CAM++, WACV 2018).

    ``Y`` is the class probability of the image, ``O`` that of the image multiplied by its map
    (:func:`masked_scores`). As torchcam's ``ClassificationMetric``, exactly:
    ``relu(Y - O) / (Y + 1e-7)`` per image, averaged (the paper reports it x 100, in %).

    Args:
        scores_full: ``(B,)`` softmax probabilities of the class on the images.
        scores_masked: ``(B,)`` the same on the masked images.
        reduction: ``"mean"`` over the batch, or ``"none"`` for per-image values.

    Returns:
        The mean drop (a scalar), or ``(B,)`` drops.
    """
    full = jnp.asarray(scores_full, jnp.float32)
    masked = jnp.asarray(scores_masked, jnp.float32)
    return reduce_batch(jax.nn.relu(full - masked) / (full + DROP_EPS), reduction)


def increase_in_confidence(scores_full: jax.Array, scores_masked: jax.Array, *,
                           reduction: str = "mean") -> jax.Array:
    """Increase in Confidence: the fraction of images with ``Y < O`` (Grad-CAM++, WACV 2018).

    As torchcam's ``ClassificationMetric`` (strict inequality: equal scores are no increase).

    Args:
        scores_full: ``(B,)`` softmax probabilities of the class on the images.
        scores_masked: ``(B,)`` the same on the images multiplied by their maps.
        reduction: ``"mean"`` over the batch, or ``"none"`` for per-image 0/1 values.

    Returns:
        The fraction (a scalar), or ``(B,)`` float32 indicators.
    """
    full = jnp.asarray(scores_full, jnp.float32)
    masked = jnp.asarray(scores_masked, jnp.float32)
    return reduce_batch((full < masked).astype(jnp.float32), reduction)

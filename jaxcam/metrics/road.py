"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, ICML 2022).

"A Consistent and Efficient Evaluation Strategy for Attribution Methods": pixels are removed by
*noisy linear imputation* -- each removed pixel becomes the weighted average of its 8 neighbours
(1/6 for the 4 direct ones, 1/12 for the diagonals), a sparse linear system coupling the removed
pixels, plus Gaussian noise -- so that the removal itself leaks no information about which
pixels were removed. Definitions follow pytorch-grad-cam 1.5.7 (``metrics/road.py`` and
``metrics/perturbation_confidence.py``) exactly:

* ``NoisyLinearImputer``: for each removed pixel ``i`` with in-image neighbours ``N(i)``,
  ``sum_{j in N(i)} w_j x_i - sum_{j in N(i), removed} w_j x_j = sum_{j in N(i), kept} w_j v_j``:
  neighbours outside the image are dropped and the remaining weights renormalised (the diagonal
  is the sum of in-image weights), kept pixels enter the right-hand side with their values; each
  channel is its own system; then ``noise * N(0, 1)`` (``noise = 0.01``) is added to every
  removed value.
* ``ROADMostRelevantFirst(p)``: ``threshold = np.percentile(map, p)`` (linear interpolation),
  pixels with ``map >= threshold`` are removed, i.e. the top ``100 - p`` percent.
* ``ROADLeastRelevantFirst(p)``: the same on ``1 - map``: pixels with
  ``1 - map >= percentile(1 - map, p)``, the least relevant ``100 - p`` percent, are removed.
* Both report ``score(imputed) - score(image)``; the ``...Average`` classes average it over
  percentiles ``10, 20, ..., 90``, and ``ROADCombined`` is ``(LeRF - MoRF) / 2``.

The system is solved here in JAX for all images and channels at once (``vmap`` of a
Jacobi-preconditioned conjugate gradient whose matrix-vector product is an 8-neighbour stencil),
not by scipy one image at a time. The matrix restricted to the
removed pixels is a principal submatrix of a weighted graph Laplacian, symmetric positive definite
whenever at least one pixel is kept.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._arrays import map_in_chunks
from jaxcam.metrics._common import check_images_maps
from jaxcam.targets import ScoreFn

__all__ = [
    "NEIGHBOUR_WEIGHTS",
    "noisy_linear_imputation",
    "road_keep_masks",
    "road_morf",
    "road_lerf",
    "road_combined",
    "DEFAULT_PERCENTILES",
]

# pytorch-grad-cam's ``neighbors_weights``: ((row offset, column offset), weight).
NEIGHBOUR_WEIGHTS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
)
DEFAULT_PERCENTILES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def _neighbour_sum(x: jax.Array) -> jax.Array:
    """``sum_j w_j x[i + offset_j]`` over the 8 neighbours of every pixel of ``(H, W)``, zero
    outside the image."""
    h, w = x.shape
    padded = jnp.pad(x, 1)
    total = jnp.zeros_like(x)
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS:
        total = total + weight * padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    return total


def _pcg(matvec: Callable[[jax.Array], jax.Array], rhs: jax.Array, x0: jax.Array,
         precondition: Callable[[jax.Array], jax.Array], tol: float, maxiter: int) -> jax.Array:
    """Preconditioned conjugate gradient until ``||r|| <= tol ||rhs||`` or ``maxiter`` steps.

    A plain ``lax.while_loop`` (under ``vmap`` each system stops on its own residual); lighter to
    compile than ``jax.scipy.sparse.linalg.cg``, which gives the same iterates.
    """
    r = rhs - matvec(x0)
    z = precondition(r)
    threshold = tol * tol * jnp.vdot(rhs, rhs)

    def not_done(state: tuple) -> jax.Array:
        _, r, _, _, k = state
        return (jnp.vdot(r, r) > threshold) & (k < maxiter)

    def step(state: tuple) -> tuple:
        x, r, p, rz, k = state
        ap = matvec(p)
        alpha = rz / jnp.vdot(p, ap)
        x, r = x + alpha * p, r - alpha * ap
        z = precondition(r)
        rz_next = jnp.vdot(r, z)
        return x, r, z + (rz_next / rz) * p, rz_next, k + 1

    x, *_ = jax.lax.while_loop(not_done, step, (x0, r, z, jnp.vdot(r, z), 0))
    return x


def _solve_channel(values: jax.Array, removed: jax.Array, tol: float,
                   maxiter: int) -> jax.Array:
    """One channel ``(H, W)``: removed pixels solved for, kept ones unchanged."""
    removed = removed.astype(values.dtype)
    kept = 1.0 - removed
    degree = _neighbour_sum(jnp.ones_like(values))  # sum of in-image weights (> 0)

    def matvec(x: jax.Array) -> jax.Array:
        return removed * (degree * x - _neighbour_sum(removed * x))

    rhs = removed * _neighbour_sum(kept * values)
    solution = _pcg(matvec, rhs, rhs / degree, lambda r: r / degree, tol, maxiter)
    return kept * values + removed * solution


def noisy_linear_imputation(images: jax.Array, keep: jax.Array, *, noise: float = 0.01,
                            key: jax.Array | None = None, tol: float = 1e-6,
                            maxiter: int | None = None) -> jax.Array:
    """ROAD's noisy linear imputation of the pixels where ``keep`` is False, batched in JAX.

    Exactly pytorch-grad-cam's ``NoisyLinearImputer`` (see the module docstring): each removed
    pixel equals the weighted average of its in-image 8 neighbours (direct 1/6, diagonal 1/12,
    renormalised at borders), known neighbours entering with their values; solved per image and
    channel by preconditioned conjugate gradient to relative residual ``tol``; then
    ``noise * N(0, 1)`` added to the removed pixels. Kept pixels are returned unchanged.

    Reference: Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
    Methods", ICML 2022.

    Args:
        images: ``(B, H, W, C)``.
        keep: ``(B, H, W)`` bool (or 0/1): True where the pixel is kept; at least one pixel of
            each image must be kept, else its system is singular.
        noise: standard deviation of the added Gaussian noise (pytorch-grad-cam: 0.01; 0 for the
            noise-free imputation).
        key: PRNG key for the noise; ``None`` uses ``jax.random.key(0)``.
        tol: relative residual ``||r|| <= tol ||b||`` at which the solve stops.
        maxiter: most conjugate-gradient iterations; default ``10 * (H + W) + 100``, beyond what
            the solve needs at ``tol = 1e-6`` (it needs about ``O(H + W)``).

    Returns:
        ``(B, H, W, C)`` imputed images, float32.
    """
    images = jnp.asarray(images, jnp.float32)
    keep = jnp.asarray(keep).astype(bool)
    if images.ndim != 4 or keep.shape != images.shape[:3]:
        raise ValueError(f"expected images (B, H, W, C) and keep (B, H, W), got {images.shape} "
                         f"and {keep.shape}")
    h, w = keep.shape[1:]
    maxiter = 10 * (h + w) + 100 if maxiter is None else int(maxiter)
    key = jax.random.key(0) if key is None else key
    return _impute(float(tol), maxiter, images, keep, jnp.asarray(noise, jnp.float32), key)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _impute(tol: float, maxiter: int, images: jax.Array, keep: jax.Array, noise: jax.Array,
            key: jax.Array) -> jax.Array:
    removed = ~keep
    solve = functools.partial(_solve_channel, tol=tol, maxiter=maxiter)
    per_channel = jax.vmap(solve, in_axes=(2, None), out_axes=2)  # (H, W, C), (H, W)
    imputed = jax.vmap(per_channel)(images, removed)
    eps = jax.random.normal(key, images.shape, jnp.float32)
    return imputed + noise * removed[..., None] * eps


def _numpy_percentile(sorted_values: jax.Array, q: float) -> jax.Array:
    """``np.percentile(values, q)`` (method 'linear') of each row of sorted ``(B, N)`` values.

    The virtual index ``(N - 1) * (q / 100)`` and its fraction are computed in Python (float64)
    as NumPy does, and NumPy's ``_lerp`` is reproduced in the values' dtype, so a threshold that
    falls on a value equals it exactly (the pixel is then removed, as in pytorch-grad-cam).
    """
    n = sorted_values.shape[-1]
    virtual = (n - 1) * (q / 100)
    if virtual >= n - 1:
        return sorted_values[:, -1]
    lo = int(np.floor(virtual))
    gamma = virtual - lo
    a, b = sorted_values[:, lo], sorted_values[:, lo + 1]
    diff = b - a
    dtype = sorted_values.dtype
    if gamma >= 0.5:
        return b - diff * np.asarray(1 - gamma, dtype)
    return a + diff * np.asarray(gamma, dtype)


def road_keep_masks(maps: jax.Array, percentiles: Sequence[float], *,
                    most_relevant_first: bool) -> jax.Array:
    """Which pixels ROAD keeps at each percentile, as pytorch-grad-cam's ``RemoveMostRelevantFirst``
    / ``RemoveLeastRelevantFirst``.

    MoRF at ``p``: keep ``map < np.percentile(map, p)`` (so the top ``100 - p`` percent is
    removed). LeRF: the same on ``1 - map`` (the bottom ``100 - p`` percent is removed).

    Args:
        maps: ``(B, H, W)`` maps in ``[0, 1]``.
        percentiles: the percentiles ``p`` (static), in ``[0, 100]``.
        most_relevant_first: MoRF if True, else LeRF.

    Returns:
        ``(P, B, H, W)`` bool, True where kept.
    """
    maps = jnp.asarray(maps, jnp.float32)
    return _keep_masks(maps if most_relevant_first else 1.0 - maps, percentiles)


def _keep_masks(values: jax.Array, percentiles: Sequence[float]) -> jax.Array:
    """``values < np.percentile(values, p)`` per image and percentile, ``(P, B, H, W)``."""
    b = values.shape[0]
    sorted_values = jnp.sort(values.reshape(b, -1), axis=-1)
    masks = []
    for q in percentiles:
        if not 0 <= q <= 100:
            raise ValueError(f"percentiles must lie in [0, 100], got {q}")
        threshold = _numpy_percentile(sorted_values, float(q))
        masks.append(values < threshold[:, None, None])
    return jnp.stack(masks)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _road(score_fn: ScoreFn, percentiles: tuple[float, ...], return_diff: bool,
          batch_size: int | None, tol: float, images: jax.Array, maps: jax.Array,
          most_relevant_first: jax.Array, noise: jax.Array, key: jax.Array) -> jax.Array:
    # MoRF ranks the map, LeRF ``1 - map``; a traced flag lets both share one compilation.
    keep = _keep_masks(jnp.where(most_relevant_first, maps, 1.0 - maps), percentiles)
    keys = jax.random.split(key, len(percentiles))

    def percentile_scores(args: tuple[jax.Array, jax.Array]) -> jax.Array:
        keep_p, key_p = args
        imputed = noisy_linear_imputation(images, keep_p, noise=noise, key=key_p, tol=tol)
        return score_fn(imputed.astype(images.dtype))

    scores = map_in_chunks(percentile_scores, (keep, keys), batch_size)  # (P, B)
    if return_diff:
        scores = scores - score_fn(images)[None]
    return jnp.moveaxis(scores, 0, -1)


def _road_call(score_fn: ScoreFn, images: jax.Array, maps: jax.Array,
               percentiles: Sequence[float], most_relevant_first: bool, noise: float,
               key: jax.Array | None, return_diff: bool, batch_size: int | None,
               tol: float) -> jax.Array:
    """Normalises the arguments so that every entry point shares one compiled computation."""
    images, maps = check_images_maps(images, maps)
    key = jax.random.key(0) if key is None else key
    return _road(score_fn, tuple(float(p) for p in percentiles), bool(return_diff), batch_size,
                 float(tol), images, maps, jnp.asarray(bool(most_relevant_first)),
                 jnp.asarray(noise, jnp.float32), key)


def road_morf(score_fn: ScoreFn, images: jax.Array, maps: jax.Array, *,
              percentiles: Sequence[float] = DEFAULT_PERCENTILES, noise: float = 0.01,
              key: jax.Array | None = None, return_diff: bool = True,
              batch_size: int | None = None, tol: float = 1e-6) -> jax.Array:
    """ROAD, most relevant first, as pytorch-grad-cam's ``ROADMostRelevantFirst(p)`` for each p.

    At percentile ``p`` the pixels with ``map >= np.percentile(map, p)`` (the most relevant
    ``100 - p`` percent) are imputed (:func:`noisy_linear_imputation`) and the model scores the
    result. A faithful map makes the score fall fast: lower is better. pytorch-grad-cam's
    ``ROADMostRelevantFirstAverage`` is ``road_morf(...).mean(-1)``. Jitted (``score_fn``,
    ``percentiles``, ``return_diff``, ``batch_size`` and ``tol`` static).

    Reference: Rong et al., ICML 2022.

    Args:
        score_fn: images -> ``(B,)`` scores of each image's class (pytorch-grad-cam's examples
            use the softmax probability, ``ClassifierOutputSoftmaxTarget``).
        images: ``(B, H, W, C)``.
        maps: ``(B, H, W)`` maps at the images' size.
        percentiles: percentiles in ``[0, 100]``. MoRF at 0 (LeRF likewise) removes every
            pixel: with nothing known the imputation returns zeros (pytorch-grad-cam's sparse
            solve is singular there).
        noise: imputation noise std (0.01 as pytorch-grad-cam; 0 for none).
        key: PRNG key for the noise (``None``: ``jax.random.key(0)``); split per percentile.
        return_diff: report ``score(imputed) - score(image)`` (pytorch-grad-cam's default), else
            ``score(imputed)``.
        batch_size: percentiles imputed and scored together; ``None`` does all at once.
        tol: relative residual of the imputation solve.

    Returns:
        ``(B, P)`` scores, one column per percentile.
    """
    return _road_call(score_fn, images, maps, percentiles, True, noise, key, return_diff,
                      batch_size, tol)


def road_lerf(score_fn: ScoreFn, images: jax.Array, maps: jax.Array, *,
              percentiles: Sequence[float] = DEFAULT_PERCENTILES, noise: float = 0.01,
              key: jax.Array | None = None, return_diff: bool = True,
              batch_size: int | None = None, tol: float = 1e-6) -> jax.Array:
    """ROAD, least relevant first, as pytorch-grad-cam's ``ROADLeastRelevantFirst(p)``.

    At percentile ``p`` the pixels with ``1 - map >= np.percentile(1 - map, p)`` (the least
    relevant ``100 - p`` percent) are imputed. A faithful map keeps the score: higher is better.
    Arguments and return value as :func:`road_morf`.

    Reference: Rong et al., ICML 2022.

    Returns:
        ``(B, P)`` scores, one column per percentile.
    """
    return _road_call(score_fn, images, maps, percentiles, False, noise, key, return_diff,
                      batch_size, tol)


def road_combined(score_fn: ScoreFn, images: jax.Array, maps: jax.Array, *,
                  percentiles: Sequence[float] = DEFAULT_PERCENTILES, noise: float = 0.01,
                  key: jax.Array | None = None, batch_size: int | None = None,
                  tol: float = 1e-6) -> jax.Array:
    """pytorch-grad-cam's ``ROADCombined``: ``(mean LeRF - mean MoRF) / 2`` over percentiles.

    Reference: Rong et al., ICML 2022. Higher is better.

    Args:
        score_fn, images, maps, percentiles, noise, batch_size, tol: as :func:`road_morf`.
        key: PRNG key (``None``: ``jax.random.key(0)``), split between LeRF and MoRF.

    Returns:
        ``(B,)`` combined scores.
    """
    key = jax.random.key(0) if key is None else key
    key_lerf, key_morf = jax.random.split(key)
    lerf = _road_call(score_fn, images, maps, percentiles, False, noise, key_lerf, True,
                      batch_size, tol)
    morf = _road_call(score_fn, images, maps, percentiles, True, noise, key_morf, True,
                      batch_size, tol)
    return (jnp.mean(lerf, -1) - jnp.mean(morf, -1)) / 2

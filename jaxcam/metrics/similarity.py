"""Similarity of two batches of maps: Spearman rank correlation and SSIM, per image, in JAX.

Used by the sanity checks of Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018),
which compare the maps of a model with those of a randomised one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam.metrics._common import check_pair

__all__ = ["average_ranks", "pearson_correlation", "spearman_rank_correlation", "ssim",
           "gaussian_window"]


def average_ranks(values: jax.Array) -> jax.Array:
    """Ranks (1-based) of each row of ``(B, N)`` values, ties given their average rank.

    As ``scipy.stats.rankdata(method="average")``: a value with ``l`` values below it and ``e``
    equal to it (itself included) gets rank ``l + (e + 1) / 2``.

    Args:
        values: ``(B, N)``.

    Returns:
        ``(B, N)`` float32 ranks.
    """
    def one(row: jax.Array) -> jax.Array:
        s = jnp.sort(row)
        below = jnp.searchsorted(s, row, side="left")
        up_to = jnp.searchsorted(s, row, side="right")
        return (below + up_to + 1).astype(jnp.float32) / 2

    return jax.vmap(one)(values)


def pearson_correlation(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pearson correlation of each pair of rows of ``(B, N)`` arrays; 0 where either is constant.

    Args:
        a: ``(B, N)``.
        b: ``(B, N)``.

    Returns:
        ``(B,)`` float32 correlations in ``[-1, 1]``.
    """
    a = a - jnp.mean(a, axis=-1, keepdims=True)
    b = b - jnp.mean(b, axis=-1, keepdims=True)
    norm = jnp.sqrt(jnp.sum(a * a, axis=-1) * jnp.sum(b * b, axis=-1))
    ok = norm > 0
    r = jnp.sum(a * b, axis=-1) / jnp.where(ok, norm, 1.0)
    return jnp.where(ok, jnp.clip(r, -1.0, 1.0), 0.0)


@jax.jit
def spearman_rank_correlation(maps_a: jax.Array, maps_b: jax.Array) -> jax.Array:
    """Spearman's rank correlation between ``maps_a[b]`` and ``maps_b[b]``, over pixels.

    The Pearson correlation of the average ranks (ties share their mean rank), as
    ``scipy.stats.spearmanr`` computes it. Where either map is constant the correlation is
    undefined (scipy gives NaN); it is 0 here, so that batch means stay finite. Adebayo et al.
    (NeurIPS 2018) use it to compare maps before and after randomisation.

    Args:
        maps_a: ``(B, H, W)``.
        maps_b: ``(B, H, W)``.

    Returns:
        ``(B,)`` float32 correlations in ``[-1, 1]``.
    """
    maps_a, maps_b = check_pair(maps_a, maps_b)
    n = maps_a.shape[1] * maps_a.shape[2]
    ranks_a = average_ranks(maps_a.reshape(-1, n)) / n  # scaled to (0, 1] for float32 sums
    ranks_b = average_ranks(maps_b.reshape(-1, n)) / n
    return pearson_correlation(ranks_a, ranks_b)


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
    """The normalised 1-D Gaussian of SSIM: radius ``int(truncate * sigma + 0.5)`` (11 taps for
    Wang et al.'s sigma 1.5, as scikit-image's ``structural_similarity(gaussian_weights=True)``).

    Args:
        sigma: standard deviation in pixels.
        truncate: radius in standard deviations.

    Returns:
        ``(2 r + 1,)`` float32 weights summing to 1.
    """
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, window: jax.Array) -> jax.Array:
    """Separable 'valid' filtering of ``(B, H, W)`` with a 1-D window along both axes."""
    k = window.shape[0]
    conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1),
                             padding="VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                             precision=jax.lax.Precision.HIGHEST)
    x = conv(x[..., None], window.reshape(k, 1, 1, 1))
    return conv(x, window.reshape(1, k, 1, 1))[..., 0]


@functools.partial(jax.jit, static_argnames=("data_range", "sigma", "k1", "k2"))
def ssim(maps_a: jax.Array, maps_b: jax.Array, *, data_range: float = 1.0, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> jax.Array:
    """Mean structural similarity of each pair of maps (Wang et al., IEEE TIP 2004).

    Local means, variances and covariance under an 11 x 11 Gaussian window (sigma 1.5,
    normalised), ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2`` with ``L = data_range``::

        SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))

    averaged over the positions where the window fits inside the map. This is scikit-image's
    ``structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1)`` (its border pixels are cropped before the mean). Identical maps give 1.

    Args:
        maps_a: ``(B, H, W)`` maps in ``[0, data_range]``; H and W at least the window size.
        maps_b: ``(B, H, W)``.
        data_range: ``L``, the dynamic range of the maps (1 for maps in ``[0, 1]``).
        sigma: the Gaussian window's standard deviation.
        k1: Wang et al.'s ``K1``.
        k2: Wang et al.'s ``K2``.

    Returns:
        ``(B,)`` float32 mean SSIM.
    """
    maps_a, maps_b = check_pair(maps_a, maps_b)
    window = jnp.asarray(gaussian_window(sigma))
    if min(maps_a.shape[1:]) < window.shape[0]:
        raise ValueError(f"maps {maps_a.shape[1:]} are smaller than the SSIM window "
                         f"({window.shape[0]} px)")
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    # Moments of the maps less their global means (shift-invariant), so that E[x^2] - E[x]^2
    # does not cancel catastrophically in float32; the means are added back to mu.
    mean_a = jnp.mean(maps_a, axis=(1, 2), keepdims=True)
    mean_b = jnp.mean(maps_b, axis=(1, 2), keepdims=True)
    a, b = maps_a - mean_a, maps_b - mean_b
    da, db = _filter_valid(a, window), _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - da * da
    var_b = _filter_valid(b * b, window) - db * db
    cov = _filter_valid(a * b, window) - da * db
    mu_a, mu_b = da + mean_a, db + mean_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
         / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)))
    return jnp.mean(s, axis=(1, 2))

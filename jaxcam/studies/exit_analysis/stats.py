"""Bootstrap confidence intervals of means, vectorised over metrics and resamples."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["bootstrap_counts", "bootstrap_means", "summarise", "CI_LEVEL"]

#: Two-sided level of every confidence interval in the report.
CI_LEVEL = 0.95


def bootstrap_counts(key: jax.Array, n: int, n_boot: int) -> np.ndarray:
    """How often each of ``n`` items is drawn in each of ``n_boot`` resamples with replacement.

    The counts of a resample of ``n`` draws with replacement are multinomial(n, 1/n each); all
    resamples are drawn at once by NumPy, from a generator seeded by ``key``.

    Args:
      key: JAX PRNG key.
      n: number of items (images).
      n_boot: number of resamples.

    Returns:
      ``(n_boot, n)`` float64 counts; every row sums to ``n``.
    """
    if n == 0:
        return np.zeros((n_boot, 0))
    seed = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel().tolist()
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def bootstrap_means(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample means and the percentile-bootstrap interval of each row of ``values``.

    The resampled means are ``mean + counts @ (values - mean) / n``: one matrix product for all
    rows and resamples, and a constant row gets exactly ``[mean, mean]``.

    Args:
      values: ``(M, n)`` per-image values of ``M`` quantities (finite).
      counts: ``(n_boot, n)`` from :func:`bootstrap_counts` (the same resamples for every row, so
        intervals of paired quantities come from the same draws).

    Returns:
      ``(M,)`` means and ``(M, 2)`` lower and upper bounds at :data:`CI_LEVEL`.
    """
    values = np.asarray(values, np.float64)
    n = values.shape[1]
    mean = values.mean(axis=1)
    boot = mean[None, :] + counts @ (values - mean[:, None]).T / n  # (n_boot, M)
    tail = 100 * (1 - CI_LEVEL) / 2
    lo, hi = np.percentile(boot, [tail, 100 - tail], axis=0)
    # Rounding only: a resampled mean lies within [min, max] of the values, and values - mean is
    # not exactly 0 for a constant row (the mean is rounded), so clip the interval into the
    # values' range and around the mean it belongs to.
    lo = np.clip(lo, values.min(axis=1), mean)
    hi = np.clip(hi, mean, values.max(axis=1))
    return mean, np.stack([lo, hi], axis=1)


def summarise(values: np.ndarray, key: jax.Array, n_boot: int) -> list[dict[str, Any]]:
    """One ``{'mean', 'lo', 'hi', 'n'}`` per row of ``(M, n)`` values (``None`` when ``n == 0``).

    Args:
      values: ``(M, n)`` per-image values (e.g. one row per exit).
      key: PRNG key of the resamples.
      n_boot: number of bootstrap resamples.

    Returns:
      ``M`` dictionaries of JSON-ready floats.
    """
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[None]
    m, n = values.shape
    if n == 0:
        return [{"mean": None, "lo": None, "hi": None, "n": 0} for _ in range(m)]
    mean, ci = bootstrap_means(values, bootstrap_counts(key, n, n_boot))
    return [{"mean": float(a), "lo": float(b), "hi": float(c), "n": int(n)}
            for a, (b, c) in zip(mean, ci, strict=True)]

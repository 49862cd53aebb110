"""Per-image measures of a batch of maps: localisation, spread, and agreement between exits.

Everything here is jitted and works on ``(K, B, H, W)`` stacks of maps (one per exit) at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam.metrics import average_ranks, energy_pointing_game, pointing_game, threshold_maps
from jaxcam.studies.exit_analysis.metric_table import keys

__all__ = ["MAP_METRICS", "map_metrics", "area_above_half_max", "normalised_entropy",
           "rank_agreement"]

#: The per-image map measures :func:`map_metrics` returns, in report order.
MAP_METRICS = keys("map")


@jax.jit
def area_above_half_max(maps: jax.Array) -> jax.Array:
    """Fraction of the image where the map is at least half its maximum (0 for an empty map).

    Args:
      maps: ``(B, H, W)`` non-negative maps.

    Returns:
      ``(B,)`` fractions in ``[0, 1]``.
    """
    return jnp.mean(threshold_maps(maps, 0.5), axis=(1, 2)).astype(jnp.float32)


@jax.jit
def normalised_entropy(maps: jax.Array) -> jax.Array:
    """Shannon entropy of each map normalised to a distribution, divided by ``log(H W)``.

    1 is a flat map (attention everywhere), 0 all mass on one pixel. A map that sums to zero is
    taken as flat (it singles out nothing) and scores 1.

    Args:
      maps: ``(B, H, W)`` non-negative maps.

    Returns:
      ``(B,)`` values in ``[0, 1]``.
    """
    b, h, w = maps.shape
    flat = jnp.maximum(maps.reshape(b, h * w).astype(jnp.float32), 0.0)
    total = jnp.sum(flat, axis=1, keepdims=True)
    p = jnp.where(total > 0, flat / jnp.where(total > 0, total, 1.0), 1.0 / (h * w))
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=1)
    return jnp.clip(ent / np.log(h * w), 0.0, 1.0)


@jax.jit
def map_metrics(maps: jax.Array, masks: jax.Array) -> dict[str, jax.Array]:
    """Localisation and spread of every exit's map of every image.

    Args:
      maps: ``(K, B, H, W)`` maps, one stack per exit (or ``(B, H, W)`` for one exit).
      masks: ``(B, H, W)`` bool object masks.

    Returns:
      ``{name: (K, B) float32}`` for the names in :data:`MAP_METRICS`: pointing game hit (0/1),
      energy on the object, area above half the maximum, normalised entropy.
    """
    maps = jnp.asarray(maps, jnp.float32)
    if maps.ndim == 3:
        maps = maps[None]
    masks = jnp.asarray(masks, bool)

    def one(m: jax.Array) -> dict[str, jax.Array]:
        return {"pointing": pointing_game(m, masks).astype(jnp.float32),
                "energy": energy_pointing_game(m, masks),
                "area_half_max": area_above_half_max(m),
                "entropy": normalised_entropy(m)}

    return jax.lax.map(one, maps)


@jax.jit
def rank_agreement(maps: jax.Array) -> jax.Array:
    """Spearman rank correlation over pixels between every pair of exits' maps, per image.

    The same number as :func:`jaxcam.metrics.spearman_rank_correlation` (Pearson correlation of
    average ranks, 0 where a map is constant), with each map ranked once.

    Args:
      maps: ``(K, B, H, W)``.

    Returns:
      ``(K, K, B)`` correlations in ``[-1, 1]``.
    """
    k, b, h, w = maps.shape
    n = h * w
    ranks = jax.vmap(average_ranks)(maps.reshape(k, b, n).astype(jnp.float32)) / n
    centred = ranks - jnp.mean(ranks, axis=-1, keepdims=True)
    norm = jnp.sqrt(jnp.sum(centred * centred, axis=-1))  # (K, B)
    ok = norm > 0
    unit = centred / jnp.where(ok, norm, 1.0)[..., None]
    corr = jnp.einsum("kbn,lbn->klb", unit, unit, precision=jax.lax.Precision.HIGHEST)
    both = ok[:, None, :] & ok[None, :, :]
    return jnp.where(both, jnp.clip(corr, -1.0, 1.0), 0.0)

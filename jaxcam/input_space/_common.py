"""Helpers shared by the input-space methods: input gradients, channel reductions, chunked maps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

import jax
import jax.numpy as jnp

ScoreFn = Callable[[jax.Array], jax.Array]
"""Maps images ``(B, H, W, C)`` to one score per image ``(B,)``; image ``b``'s score must depend
on image ``b`` alone (true of any per-example model in inference mode)."""

Reduction = Literal["max_abs", "sum_abs", "sum", "none"]

_Out = TypeVar("_Out")


def input_gradient(score_fn: ScoreFn, images: jax.Array) -> jax.Array:
    """Returns ``d score_fn(images)[b] / d images[b]`` for every image, shape ``(B, H, W, C)``.

    Summing the scores before differentiating gives every image its own gradient in one backward
    pass, because image ``b``'s score does not depend on the other images.

    Args:
        score_fn: images ``(B, H, W, C)`` -> scores ``(B,)``.
        images: the images ``(B, H, W, C)``.

    Returns:
        The gradient of each image's score with respect to that image, ``(B, H, W, C)``.
    """
    return jax.grad(lambda x: jnp.sum(score_fn(x)))(images)


def reduce_channels(attributions: jax.Array, reduce: Reduction) -> jax.Array:
    """Collapses the channel axis of ``(B, H, W, C)`` attributions into a ``(B, H, W)`` map.

    Args:
        attributions: per-pixel, per-channel attributions ``(B, H, W, C)``.
        reduce: ``"max_abs"`` (max over channels of the absolute value, Simonyan et al. 2014),
            ``"sum_abs"`` (sum of absolute values), ``"sum"`` (signed sum, keeps the
            completeness of integrated gradients) or ``"none"`` (returned unchanged).

    Returns:
        ``(B, H, W)``, or the input ``(B, H, W, C)`` for ``"none"``.
    """
    if reduce == "max_abs":
        return jnp.max(jnp.abs(attributions), axis=-1)
    if reduce == "sum_abs":
        return jnp.sum(jnp.abs(attributions), axis=-1)
    if reduce == "sum":
        return jnp.sum(attributions, axis=-1)
    if reduce == "none":
        return attributions
    raise ValueError(f"reduce must be 'max_abs', 'sum_abs', 'sum' or 'none', got {reduce!r}")


def map_in_chunks(fn: Callable[[Any], _Out], xs: Any, batch_size: int | None) -> _Out:
    """``jax.vmap(fn)(xs)``, evaluated ``batch_size`` rows of ``xs`` at a time to bound memory.

    Args:
        fn: function of one row of ``xs``.
        xs: the rows, stacked on axis 0 (an array or a pytree of arrays of equal length).
        batch_size: rows evaluated together; ``None`` (or at least ``len(xs)``) vmaps all rows.

    Returns:
        The stacked results, as ``jax.vmap(fn)(xs)`` would return them.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size}")
    n_rows = jax.tree.leaves(xs)[0].shape[0]
    if batch_size is None or batch_size >= n_rows:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=batch_size)


def sum_in_chunks(
    fn: Callable[[jax.Array], jax.Array], xs: jax.Array, batch_size: int | None
) -> jax.Array:
    """``jnp.sum(jax.vmap(fn)(xs), axis=0)`` holding only ``batch_size`` results at a time.

    A ``lax.scan`` over chunks keeps a running sum, so memory does not grow with ``len(xs)``
    (``lax.map`` would stack every result before the sum).

    Args:
        fn: function of one row of ``xs``, returning one array.
        xs: the rows, stacked on axis 0.
        batch_size: rows evaluated together; ``None`` (or at least ``len(xs)``) vmaps all rows.

    Returns:
        The sum over rows of ``fn(row)``.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size}")
    n_rows = xs.shape[0]
    if batch_size is None or batch_size >= n_rows:
        return jnp.sum(jax.vmap(fn)(xs), axis=0)
    n_chunks = n_rows // batch_size
    n_chunked = n_chunks * batch_size
    chunks = xs[:n_chunked].reshape(n_chunks, batch_size, *xs.shape[1:])

    def add_chunk(total: jax.Array, chunk: jax.Array) -> tuple[jax.Array, None]:
        return total + jnp.sum(jax.vmap(fn)(chunk), axis=0), None

    result = jax.eval_shape(fn, xs[0])
    total, _ = jax.lax.scan(add_chunk, jnp.zeros(result.shape, result.dtype), chunks)
    if n_chunked < n_rows:
        total = total + jnp.sum(jax.vmap(fn)(xs[n_chunked:]), axis=0)
    return total

"""Bringing arrays from NumPy, PyTorch and other frameworks into JAX; mapping rows in chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

_Out = TypeVar("_Out")


def as_jax(x: Any, *, copy: bool = False) -> jax.Array:
    """Returns ``x`` as a ``jax.Array``, without a copy where the source allows it.

    JAX arrays pass through unchanged; NumPy arrays (and Python scalars or nested lists) go through
    ``jnp.asarray``; anything else that speaks DLPack (a PyTorch, CuPy or TensorFlow tensor) goes
    through ``jax.dlpack.from_dlpack``. A tensor with a ``detach`` method (PyTorch) is detached
    first, since PyTorch refuses to export a tensor that requires grad; torch is never imported.

    A DLPack import shares the source's memory: mutating the source in place afterwards (an
    ``inplace=True`` ReLU, say) would change the JAX array too, which JAX assumes never happens.
    Pass ``copy=True`` when the source may still be written to.

    Args:
        x: the array or tensor to bring in.
        copy: always copy. Otherwise the source's buffer is shared where JAX can take it as it
            is, and copied where it cannot (misaligned, strided, or on another device).

    Returns:
        A ``jax.Array`` with the same shape and values (float64 becomes float32 unless
        ``jax_enable_x64`` is on, as everywhere in JAX).
    """
    if isinstance(x, jax.Array):
        return jnp.array(x, copy=True) if copy else x
    # NumPy first: ndarray also speaks DLPack, but jnp.asarray copes with any striding and with
    # read-only or object inputs, where DLPack only takes compact layouts.
    if isinstance(x, (np.ndarray, np.generic, int, float, complex, bool, list, tuple)):
        return jnp.array(x) if copy else jnp.asarray(x)
    detach = getattr(x, "detach", None)
    if callable(detach):
        x = detach()
    if hasattr(x, "__dlpack__"):
        imported = _from_dlpack(x)
        if imported is not None:
            if copy:
                # from_dlpack(copy=True) still aliases an aligned CPU buffer (jax 0.10), so copy
                # here, and wait: the copy is dispatched asynchronously and the caller may write
                # to the source as soon as we return.
                imported = jnp.array(imported, copy=True).block_until_ready()
            return imported
    return jnp.array(np.asarray(x)) if copy else jnp.asarray(np.asarray(x))


def _from_dlpack(x: Any) -> jax.Array | None:
    """Imports a DLPack tensor (sharing its buffer where JAX can), or None if it cannot."""
    try:
        return jax.dlpack.from_dlpack(x)
    except (jax.errors.JaxRuntimeError, BufferError, TypeError, ValueError):
        # JAX only imports compact (possibly transposed) layouts; a sliced or broadcast view
        # needs a contiguous copy first, which torch and CuPy tensors offer as `contiguous`.
        contiguous = getattr(x, "contiguous", None)
        if callable(contiguous):
            return jax.dlpack.from_dlpack(contiguous())
    return None


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

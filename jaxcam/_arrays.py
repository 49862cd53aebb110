"""Bringing arrays from NumPy, PyTorch and other frameworks into JAX, and layout helpers."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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


def nchw_to_nhwc(x: Any) -> jax.Array:
    """Moves the channel axis of a ``(B, C, H, W)`` array last: ``(B, H, W, C)``.

    Args:
        x: a 4-D array or tensor in channels-first layout (anything ``as_jax`` accepts).

    Returns:
        The ``(B, H, W, C)`` ``jax.Array``.
    """
    x = as_jax(x)
    if x.ndim != 4:
        raise ValueError(f"nchw_to_nhwc expects a 4-D (B, C, H, W) array, got shape {x.shape}")
    return jnp.transpose(x, (0, 2, 3, 1))


def nhwc_to_nchw(x: Any) -> jax.Array:
    """Moves the channel axis of a ``(B, H, W, C)`` array second: ``(B, C, H, W)``.

    Args:
        x: a 4-D array or tensor in channels-last layout (anything ``as_jax`` accepts).

    Returns:
        The ``(B, C, H, W)`` ``jax.Array``.
    """
    x = as_jax(x)
    if x.ndim != 4:
        raise ValueError(f"nhwc_to_nchw expects a 4-D (B, H, W, C) array, got shape {x.shape}")
    return jnp.transpose(x, (0, 3, 1, 2))

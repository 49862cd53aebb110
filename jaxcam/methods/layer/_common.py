"""Shared pieces of the activation-gradient CAM methods: inputs, channel reduction, projection."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcam._arrays import as_jax


def as_float_array(x: Any, name: str, layout: str = "NHWC") -> jax.Array:
    """Brings ``x`` into JAX as a floating array of at least float32 with a batch and channel axis.

    Half-precision inputs are upcast: the methods sum over thousands of channels and pixels and
    add epsilons of 1e-6 and 1e-7, all of which bf16/fp16 would swamp.

    Args:
      x: the array (NumPy, JAX, DLPack).
      name: its name, for messages.
      layout: ``"NHWC"`` (channels last, returned as it is) or ``"NCHW"`` (channels on axis 1,
        e.g. hooked from PyTorch: moved last).

    Returns:
      ``(B, ..spatial.., C)``, float32 or wider.

    Raises:
      ValueError: None, rank below 3, or an unknown layout.
    """
    if x is None:
        raise ValueError(f"{name} is required by this method")
    if layout not in ("NHWC", "NCHW"):
        raise ValueError(f"layout must be 'NHWC' (channels last, the default) or 'NCHW' "
                         f"(channels first, as hooked from PyTorch); got {layout!r}")
    x = as_jax(x)
    if x.ndim < 3:
        raise ValueError(f"{name} must be (B, ..spatial.., C), got shape {x.shape}")
    if layout == "NCHW":
        x = jnp.moveaxis(x, 1, -1)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def spatial_axes(x: jax.Array) -> tuple[int, ...]:
    """The axes between the batch axis and the channel axis: ``(1, 2)`` for NHWC."""
    return tuple(range(1, x.ndim - 1))


def principal_component_projection(activations: Any) -> jax.Array:
    """Projects each image's activations on their first principal component.

    pytorch-grad-cam's ``get_2d_projection``, batched: per image, the ``(h*w, C)`` matrix of
    pixel activations is centred (each channel's mean over pixels subtracted), decomposed by SVD,
    and projected on the first right singular vector. NaNs are zeroed first, as pytorch-grad-cam
    does. The sign of a singular vector is arbitrary, so the map may come out negated relative to
    pytorch-grad-cam's (LAPACK's choice); a following ReLU then keeps the other half.

    Args:
        activations: ``(B, ..spatial.., C)`` activations (typically weighted ones).

    Returns:
        The ``(B, ..spatial..)`` projections, float32 or wider.
    """
    activations = as_float_array(activations, "activations")
    activations = jnp.where(jnp.isnan(activations), 0.0, activations)
    batch, *spatial, channels = activations.shape
    pixels = activations.reshape(batch, -1, channels)
    centred = pixels - jnp.mean(pixels, axis=1, keepdims=True)

    def first_component(matrix: jax.Array) -> jax.Array:
        # Only the first right singular vector is needed, so skip the (h*w, h*w) U.
        _, _, vt = jnp.linalg.svd(matrix, full_matrices=False)
        return jnp.matmul(matrix, vt[0], precision=jax.lax.Precision.HIGHEST)

    projection = jax.vmap(first_component)(centred)
    return projection.reshape(batch, *spatial)


def combine_channels(weighted_activations: jax.Array, eigen_smooth: bool) -> jax.Array:
    """Turns ``(B, ..spatial.., C)`` weighted activations into a ``(B, ..spatial..)`` map.

    The channel sum, or with ``eigen_smooth`` the projection on the first principal component
    (pytorch-grad-cam's ``BaseCAM.get_cam_image``).
    """
    if eigen_smooth:
        return principal_component_projection(weighted_activations)
    return jnp.sum(weighted_activations, axis=-1)

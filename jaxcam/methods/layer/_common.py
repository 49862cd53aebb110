"""Shared pieces of the activation-gradient CAM methods: inputs, channel reduction, projection."""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._arrays import as_jax

LAYOUTS = ("NHWC", "NCHW")

# The layout of the maps the explain pipelines hand to the methods (set by maps_layout).
_MAPS_LAYOUT: contextvars.ContextVar[str | None] = contextvars.ContextVar("jaxcam_maps_layout",
                                                                          default=None)

LAYOUT_RULE = """\
Without a layout (``layout=None``, the default) the layout is decided safely, never silently
wrong on a rank-4 ``(B, a, b, c)`` input:

* a ``torch.Tensor`` is channels-first, PyTorch's own order: read as NCHW (``(B, C, h, w)``)
  -- unless it is plainly channels-last, which is an error: ``a == b != c`` (a square map read
  the other way), or strides that show a ``permute(0, 2, 3, 1)`` view of a contiguous tensor
  (the last axis outermost in memory; a ``torch.channels_last`` NCHW tensor is not such a view
  and stays NCHW). A rank-3 tensor (tokens ``(B, N, D)`` or a ``(B, C, L)`` map?) is an error
  too. A permuted view made ``.contiguous()`` carries no trace of the permutation: pass its
  layout;
* any other array (NumPy, JAX) is read as NHWC (``(B, h, w, C)``) when that reading is the
  plausible one: a square map (``a == b``) or more channels than either side (``c > a`` and
  ``c > b``). Any other shape (``b == c != a``: a square channels-first map; or no square side
  and ``c`` not the largest) is a ``ValueError`` naming both readings and the fix;
* an explicit ``layout="NHWC"`` or ``"NCHW"`` is always used as given, never second-guessed.
"""


@contextlib.contextmanager
def maps_layout(layout: str) -> Iterator[None]:
    """Inside the block, arrays given to the methods without a layout are read in ``layout``,
    unchecked: the explain pipelines enter it around their method calls, whose ``(B, h, w, C)``
    maps are channels-last by construction (a registered method's ``fn`` is not passed a
    layout).

    Args:
      layout: ``"NHWC"`` or ``"NCHW"``.
    """
    token = _MAPS_LAYOUT.set(_checked(layout))
    try:
        yield
    finally:
        _MAPS_LAYOUT.reset(token)


def _checked(layout: Any) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'NHWC' (channels last), 'NCHW' (channels first, as "
                         f"hooked from PyTorch) or None (decided from the input, refusing an "
                         f"ambiguous one); got {layout!r}")
    return layout


def _is_torch_tensor(x: Any) -> bool:
    """Whether ``x`` is a ``torch.Tensor`` (torch is never imported here)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_permuted_view(x: Any, shape: tuple[int, ...]) -> bool:
    """Whether a rank-4 tensor's memory order (outermost first) of its non-batch axes is
    (3, 1, 2), that of a ``permute(0, 2, 3, 1)`` view of a contiguous ``(B, C, h, w)`` tensor;
    NCHW tensors, contiguous (1, 2, 3) or ``channels_last`` (2, 3, 1), are never so. An axis of
    size 1 makes the orders indistinguishable, and then nothing is inferred."""
    if min(shape[1:]) == 1:
        return False
    strides = tuple(x.stride())
    return sorted((1, 2, 3), key=lambda i: -strides[i]) == [3, 1, 2]


def _default_layout(x: Any, name: str) -> str:
    """The layout :data:`LAYOUT_RULE` decides for ``x``, or its ValueError."""
    shape = tuple(int(d) for d in (x.shape if hasattr(x, "shape") else np.shape(x)))
    if _is_torch_tensor(x):
        if len(shape) == 3:
            raise ValueError(
                f"{name} is a torch.Tensor of shape {shape}: tokens (B, N, D), channels last, "
                f"or a channels-first (B, C, L) map? Pass layout='NHWC' for channels last or "
                f"layout='NCHW' for channels first (or bring tokens to a (B, h, w, C) map "
                f"first, e.g. with jaxcam.reshape.vit())")
        square = len(shape) == 4 and shape[1] == shape[2] != shape[3]
        if square or (len(shape) == 4 and _is_permuted_view(x, shape)):
            _, a, b, c = shape
            why = ("a permute(0, 2, 3, 1) view?" if square else
                   f"its strides {tuple(x.stride())} are those of a permute(0, 2, 3, 1) view")
            raise ValueError(
                f"{name} is a torch.Tensor of shape {shape}, which looks channels-last: read "
                f"as PyTorch's NCHW it is a {b}x{c} map of {a} channels, read as NHWC a "
                f"{a}x{b} map of {c} channels ({why}). Pass layout='NHWC' if it is channels "
                f"last, or layout='NCHW' to confirm channels first (or pass the tensor as "
                f"hooked, (B, C, h, w))")
        return "NCHW"
    if len(shape) == 4:
        _, a, b, c = shape
        if a == b or c > max(a, b):
            return "NHWC"
        raise ValueError(
            f"{name} of shape {shape} is ambiguous: read as NHWC it is a {a}x{b} map of {c} "
            f"channels, read as NCHW a {b}x{c} map of {a} channels"
            + (" (square, as channels-first maps hooked from PyTorch are)" if b == c else "")
            + ". Pass layout='NCHW' if it is channels first (e.g. hooked from PyTorch), or "
            "layout='NHWC' to confirm channels last. (Without a layout, a non-PyTorch array "
            "is read as NHWC only when its map is square, shape[1] == shape[2], or it has "
            "more channels than either side, shape[3] > shape[1], shape[2].)")
    return "NHWC"


def resolve_layout(layout: str | None, **arrays: Any) -> str:
    """The layout to read a method's inputs in.

    Args:
      layout: ``"NHWC"``, ``"NCHW"`` or None: decided from the inputs by :data:`LAYOUT_RULE`
        (inside :func:`maps_layout`, that block's layout).
      **arrays: the inputs by name (None entries are skipped).

    Returns:
      ``"NHWC"`` or ``"NCHW"``.

    Raises:
      ValueError: an unknown layout; without one, an input the rule refuses, or inputs read in
        different layouts (a torch tensor next to a NumPy array).
    """
    if layout is not None:
        return _checked(layout)
    known = _MAPS_LAYOUT.get()
    if known is not None:
        return known
    readings = {name: _default_layout(x, name) for name, x in arrays.items() if x is not None}
    if len(set(readings.values())) > 1:
        described = ", ".join(f"{name} as {value}" for name, value in readings.items())
        raise ValueError(f"the inputs would be read in different layouts ({described}: a "
                         f"torch.Tensor is NCHW, another array NHWC); pass layout='NHWC' or "
                         f"layout='NCHW' for all of them")
    return next(iter(readings.values()), "NHWC")


def as_float_array(x: Any, name: str, layout: str | None = None) -> jax.Array:
    """Brings ``x`` into JAX as a floating array of at least float32 with a batch and channel axis.

    Half-precision inputs are upcast: the methods sum over thousands of channels and pixels and
    add epsilons of 1e-6 and 1e-7, all of which bf16/fp16 would swamp.

    Args:
      x: the array (NumPy, JAX, DLPack).
      name: its name, for messages.
      layout: ``"NHWC"`` (channels last, returned as it is), ``"NCHW"`` (channels on axis 1,
        e.g. hooked from PyTorch: moved last) or None (decided by :func:`resolve_layout`; a
        method with several inputs resolves it once for all of them and passes it here).

    Returns:
      ``(B, ..spatial.., C)``, float32 or wider.

    Raises:
      ValueError: None, rank below 3, an unknown layout, or (layout None) an ambiguous input.
    """
    if x is None:
        raise ValueError(f"{name} is required by this method")
    layout = resolve_layout(layout, **{name: x})
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
    activations = as_float_array(activations, "activations", "NHWC")
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

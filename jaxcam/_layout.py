"""Layouts and layer views: what turns a tapped layer's output into the ``(B, h, w, C)`` map.

The explain pipeline works in NHWC on ``(B, h, w, C)`` maps. A model fed channels-first images
(``layout="NCHW"``, PyTorch's order) or a layer that outputs tokens (a ViT block) is explained
through :class:`MapAdapter`, which wraps any model adapter: it hands the model its images in the
model's layout, taps each layer *before* the ``reshape_transform`` and applies the transform
inside the traced computation, so that the gradient with respect to the map is the layer's
gradient pushed through the transform (for a rearrangement of the tokens, the transform of the
gradient: what pytorch-grad-cam computes by applying its ``reshape_transform`` to the hooked
gradient). A layer whose output is no map, and no transform given, is an error naming the fix,
never a silently wrong map.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcam.reshape import channels_first

__all__ = ["LAYOUTS", "MapAdapter", "check_image_layout", "check_output_shape", "image_size",
           "resolve_layout", "to_nhwc"]

LAYOUTS = ("NHWC", "NCHW")
# Channel counts of real images: a (B, 3, 224, 224) batch under NHWC would be 3 px high.
_IMAGE_CHANNELS = (1, 2, 3, 4)


def resolve_layout(layout: str | None, adapter: Any) -> tuple[str, bool]:
    """The layout to use and whether the caller chose it.

    Args:
      layout: ``"NHWC"``, ``"NCHW"`` or None (the adapter's ``default_layout``: ``"NCHW"`` for
        a PyTorch model, else ``"NHWC"``).
      adapter: the model's adapter.

    Returns:
      ``(layout, explicit)``.

    Raises:
      ValueError: an unknown layout.
    """
    if layout is None:
        return getattr(adapter, "default_layout", "NHWC"), False
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise ValueError(f"layout must be 'NHWC' (images (B, H, W, C), the default) or 'NCHW' "
                         f"(images (B, C, H, W), PyTorch's order); got {layout!r}")
    return layout.upper(), True


def image_size(shape: Sequence[int], layout: str) -> tuple[int, int]:
    """``(H, W)`` of images of ``shape`` in ``layout``."""
    return (int(shape[1]), int(shape[2])) if layout == "NHWC" else (int(shape[2]), int(shape[3]))


def to_nhwc(images: jax.Array, layout: str) -> jax.Array:
    """Images in ``layout`` as NHWC (the pipeline's order)."""
    return images if layout == "NHWC" else jnp.transpose(images, (0, 2, 3, 1))


def check_image_layout(shape: Sequence[int], layout: str, explicit: bool) -> None:
    """Refuse images that are plainly in the other layout when the caller did not choose one.

    A (B, 3, 224, 224) batch read as NHWC is 3 pixels high and 224 channels deep: its maps
    would be (B, 3, 224), silently wrong. Only the unambiguous case is refused (one side of 1-4
    "pixels" and the channel axis wider); ``layout=`` given explicitly is always trusted.

    Args:
      shape: the images' shape (rank 4).
      layout: the layout in use.
      explicit: whether the caller passed ``layout``.

    Raises:
      ValueError: images that look like the other layout.
    """
    if explicit:
        return
    if layout == "NHWC":
        channels, first = shape[3], shape[1]
        other = "NCHW"
    else:
        channels, first = shape[1], shape[3]
        other = "NHWC"
    if first in _IMAGE_CHANNELS and channels not in _IMAGE_CHANNELS:
        side = "first" if other == "NCHW" else "last"
        raise ValueError(
            f"images of shape {tuple(shape)} look {other} (channels {side}), but this model's "
            f"layout is {layout}; pass layout={other!r} (or layout={layout!r} if they really "
            f"are {layout})")


def check_output_shape(maps: jax.Array, expected: tuple[int, ...], what: str) -> None:
    """The last check of every entry point: the maps have the shape promised.

    Args:
      maps: the result.
      expected: its shape; -1 for a free axis (the layer's size when not resized).
      what: the entry point, for the message.

    Raises:
      AssertionError: another shape (an internal error: the message says what came out).
    """
    shape = tuple(maps.shape)
    if len(shape) != len(expected) or any(
            e not in (-1, s) for s, e in zip(shape, expected, strict=True)):
        want = "(" + ", ".join("?" if e == -1 else str(e) for e in expected) + ")"
        raise AssertionError(f"internal error in {what}: the maps have shape {shape}, expected "
                             f"{want}; please report it with the model and the call")


def _token_hint(shape: tuple[int, ...]) -> str:
    """The fix to suggest for a (B, N, D) token output."""
    n = shape[1]
    if n > 1 and math.isqrt(n - 1) ** 2 == n - 1:
        return "pass reshape_transform=jaxcam.reshape.vit()"
    if math.isqrt(n) ** 2 == n:
        return "pass reshape_transform=jaxcam.reshape.swin()"
    return ("pass reshape_transform=jaxcam.reshape.vit(height=..., width=..., skip_tokens=...) "
            "or a function giving a (B, h, w, C) map")


def not_a_map_error(name: str, raw: tuple[int, ...], result: tuple[int, ...] | None,
                    layout: str, batch: int) -> ValueError:
    """The error for a layer whose output (or transformed output) is not a (B, h, w, C) map."""
    order = "(B, h, w, C)" if layout == "NHWC" else "(B, C, h, w) (layout='NCHW')"
    if result is not None:  # a user's transform gave something else
        return ValueError(f"reshape_transform turned the output {raw} of layer {name!r} into "
                          f"{result}, not a {order} map of the batch of {batch}; it must "
                          f"return one")
    if len(raw) == 3:
        return ValueError(f"layer {name!r} outputs {raw}: tokens, not a {order} map; "
                          f"{_token_hint(raw)}")
    if len(raw) == 2:
        return ValueError(f"layer {name!r} outputs {raw}: one vector per image, no spatial map "
                          f"to explain; choose an earlier layer (a convolution or a block)")
    if raw and raw[0] != batch:
        return ValueError(f"layer {name!r} outputs {raw}, whose first axis is not the batch of "
                          f"{batch}; choose a layer that keeps the batch axis first or pass a "
                          f"reshape_transform giving a (B, h, w, C) map")
    return ValueError(f"layer {name!r} outputs {raw}, not a {order} map; pass a "
                      f"reshape_transform giving a (B, h, w, C) map")


@dataclasses.dataclass(frozen=True)
class MapAdapter:
    """Any model adapter, seen through a layout and a ``reshape_transform``.

    Hashable (a ``jax.jit`` static argument): the transform is compared as an object, so a
    ready one (:mod:`jaxcam.reshape`, equal when their arguments are) or a function defined once
    keeps one compilation; a new ``lambda`` per call recompiles.

    Attributes:
      inner: the wrapped adapter (its ``forward`` takes images in ``layout``).
      layout: the images' and layers' layout, ``"NHWC"`` or ``"NCHW"``.
      transform: the ``reshape_transform`` (None: the layer's output is the map, channels-first
        under NCHW). Its result is read in ``layout``'s order -- channels-first under NCHW, as
        pytorch-grad-cam's transforms are written -- unless it has an ``output_layout``
        attribute saying otherwise (:mod:`jaxcam.reshape`'s are ``"NHWC"`` whatever the layout).
      converts: whether this wrapper converts the layout (the inner model takes ``layout``
        images and outputs ``layout`` maps); False for an adapter that takes NHWC images and
        hands out channels-last maps itself (``layout`` is then only the caller's images').
    """

    inner: Any
    layout: str = "NHWC"
    transform: Callable[[jax.Array], jax.Array] | None = None
    converts: bool = True

    def __getattr__(self, name: str) -> Any:
        # Everything else (layers, kind, check_call, new_state, model, ...) is the inner
        # adapter's. Guarded: during construction 'inner' itself is not set yet.
        if name == "inner" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def identity(self) -> bool:
        """Whether the layer outputs are the maps as they are (no conversion, no transform)."""
        return not self._channels_first and self.transform is None

    @property
    def _channels_first(self) -> bool:
        """Whether this wrapper turns channels-first images and layers around."""
        return self.converts and self.layout == "NCHW"

    @property
    def _order(self) -> str:
        """The order the layers' outputs are read in, for messages."""
        return "NCHW" if self._channels_first else "NHWC"

    def _view(self) -> Callable[[jax.Array], jax.Array]:
        if self.transform is not None:
            read_as = getattr(self.transform, "output_layout", self.layout)
            if read_as == "NCHW":
                return lambda a: _channels_last(self.transform(a))
            return self.transform
        if self._channels_first:
            return channels_first_if_map
        return lambda a: a

    def to_map(self, a: jax.Array, name: str, batch: int) -> jax.Array:
        """Layer ``name``'s output ``a`` as its ``(B, h, w, C)`` map, or a clear error.

        Args:
          a: the layer's output.
          name: the layer's name, for messages.
          batch: B.

        Returns:
          The map.

        Raises:
          ValueError: the output (or the transform's result) is not a map of the batch.
        """
        raw = tuple(a.shape)
        if self.transform is None and (len(raw) != 4 or raw[0] != batch):
            raise not_a_map_error(name, raw, None, self._order, batch)
        m = self._view()(a)
        if m.ndim != 4 or m.shape[0] != batch:
            raise not_a_map_error(name, raw, tuple(m.shape), self._order, batch)
        return m

    def map_gradient(self, a: jax.Array, g: jax.Array, name: str, batch: int) -> jax.Array:
        """The gradient with respect to the map, from ``g``, the gradient with respect to the
        layer's output ``a``: ``g`` pushed through the transform's Jacobian at ``a``."""
        return jax.jvp(lambda t: self.to_map(t, name, batch), (a,), (g,))[1]

    def forward(self, state: Any, images: jax.Array, edits: Sequence[Any] | None = None
                ) -> tuple[Any, list[jax.Array]]:
        """The model's output and the tapped layers' maps.

        Args:
          state: the inner adapter's state.
          images: ``(B, H, W, C)`` NHWC images (the pipeline's order; transposed here for a
            channels-first model).
          edits: ``edits[i]`` acts on layer i's *map*; it reaches the layer's output through
            the transform (``a + J^T (edit(m) - m)``, J the transform's Jacobian at ``a``): an
            added delta's gradient is the map's gradient, and a replaced map replaces the
            tokens it was read from.

        Returns:
          The model output and the layers' ``(B, h, w, C)`` maps (before ``edits``).
        """
        x = jnp.transpose(images, (0, 3, 1, 2)) if self._channels_first else images
        batch = images.shape[0]
        names = ["/".join(layer) for layer in self.inner.layers]
        if self.identity:
            output, acts = self.inner.forward(state, x, edits)
            return output, [self.to_map(a, n, batch) for a, n in zip(acts, names, strict=True)]
        if edits is None:
            output, acts = self.inner.forward(state, x)
            return output, [self.to_map(a, n, batch) for a, n in zip(acts, names, strict=True)]
        maps: list[Any] = [None] * len(names)

        def through(i: int, edit: Callable[[jax.Array], jax.Array]
                    ) -> Callable[[jax.Array], jax.Array]:
            def raw_edit(a: jax.Array) -> jax.Array:
                m, pullback = jax.vjp(lambda t: self.to_map(t, names[i], batch), a)
                maps[i] = m
                return a + pullback(edit(m) - m)[0]
            return raw_edit

        output, _ = self.inner.forward(state, x, [through(i, e) for i, e in enumerate(edits)])
        return output, maps


def channels_first_if_map(a: jax.Array) -> jax.Array:
    """A channels-first layer's output as channels-last (checked to be rank 4 by the caller)."""
    return channels_first()(a)


def _channels_last(m: jax.Array) -> jax.Array:
    """A user transform's channels-first result (pytorch-grad-cam's convention) channels-last;
    a result of another rank is left for the caller's check."""
    return jnp.transpose(m, (0, 2, 3, 1)) if m.ndim == 4 else m


def with_view(adapter: Any, layout: str | None, transform: Any, exits: bool = False
              ) -> tuple[MapAdapter, bool]:
    """``adapter`` seen through ``layout`` and ``transform``.

    An adapter with a ``layout`` attribute of its own (a PyTorch or Equinox model's: it takes
    NHWC images and hands out channels-last maps itself) keeps doing so, its layout replaced by
    an explicit one; any other adapter is converted by the wrapper.

    Args:
      adapter: the model's adapter.
      layout: the caller's ``layout=`` (None: the adapter's own, else NHWC).
      transform: the ``reshape_transform`` or None.
      exits: a multi-exit adapter (its model takes the images as the caller passes them).

    Returns:
      The wrapped adapter and whether the layout was the caller's choice.

    Raises:
      ValueError: an unknown layout, or one the adapter cannot take.
      TypeError: a transform that is not callable.
    """
    if transform is not None and not callable(transform):
        raise TypeError(f"reshape_transform must be a function (a layer's output -> its "
                        f"(B, h, w, C) map, e.g. jaxcam.reshape.vit()), got "
                        f"{type(transform).__name__}")
    own = getattr(adapter, "layout", None)
    if own is None or exits:
        resolved, explicit = resolve_layout(layout, adapter)
        return MapAdapter(adapter, resolved, transform, converts=True), explicit
    resolved, explicit = resolve_layout(layout if layout is not None else own, adapter)
    explicit = layout is not None
    if resolved != own:
        fields = {f.name for f in dataclasses.fields(adapter)} if dataclasses.is_dataclass(
            adapter) else set()
        if "layout" not in fields:
            raise ValueError(f"this {adapter.kind} model takes {own} images; layout="
                             f"{resolved!r} is not available for it")
        adapter = dataclasses.replace(adapter, layout=resolved)
    return MapAdapter(adapter, resolved, transform, converts=False), explicit

"""Ready ``reshape_transform`` functions: a layer's output as the ``(B, h, w, C)`` map CAMs need.

Vision Transformers output tokens, ``(B, 1 + h*w, D)``; Swin blocks output ``(B, h, w, C)`` or
``(B, h*w, C)``; PyTorch-style layers output ``(B, C, h, w)``. pytorch-grad-cam asks its users
for a ``reshape_transform`` applied to the hooked layer's activations and gradients
(Chefer et al.'s and Jacob Gildenblat's ViT tutorial: ``tensor[:, 1:, :].reshape(B, h, w, D)``);
jaxcam takes the same keyword (:func:`jaxcam.explain`, :class:`jaxcam.Explainer`, the
pytorch-grad-cam-style classes) and these ready ones:

* :func:`vit`: skip the class token(s), lay the rest out on the grid.
* :func:`swin`: tokens on a grid (already ``(B, h, w, C)``) or flattened ``(B, h*w, C)``.
* :func:`channels_first`: ``(B, C, h, w)`` to ``(B, h, w, C)``.

Each is a small frozen dataclass: equal arguments give equal (and equally hashed) transforms,
so ``jax.jit`` reuses one compilation across calls that build a fresh ``vit()`` each time (a new
``lambda`` each call would recompile every time). Their output is always channels-last,
whatever the explanation's ``layout``.

The transform is applied to the tapped layer's output inside the traced computation and
differentiated through: the gradient with respect to the map is the layer's gradient pushed
through the transform's Jacobian, which for these rearrangements is the transform applied to
the gradient, as pytorch-grad-cam computes it.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

__all__ = ["ChannelsFirst", "Swin", "ViT", "channels_first", "grid_size", "swin", "vit"]


def grid_size(n_tokens: int, height: int | None, width: int | None, what: str
              ) -> tuple[int, int]:
    """The ``(h, w)`` grid of ``n_tokens`` tokens: as given, or square when not given.

    Args:
      n_tokens: the number of grid tokens.
      height, width: the grid's size, either, both or neither (then the grid is square).
      what: the transform's name, for messages.

    Returns:
      ``(h, w)`` with ``h * w == n_tokens``.

    Raises:
      ValueError: the tokens do not fill that grid (or no square grid).
    """
    if height is None and width is None:
        side = math.isqrt(n_tokens)
        if side * side != n_tokens:
            raise ValueError(f"{what}: {n_tokens} grid tokens are not a square grid; pass "
                             f"height= and width=")
        return side, side
    if height is None:
        height = n_tokens // width if width else 0
    if width is None:
        width = n_tokens // height if height else 0
    if height * width != n_tokens:
        raise ValueError(f"{what}: {n_tokens} grid tokens do not fill a {height} x {width} grid")
    return height, width


@dataclasses.dataclass(frozen=True)
class ViT:
    """ViT tokens ``(B, skip_tokens + h*w, D)`` -> ``(B, h, w, D)`` (see :func:`vit`).

    Attributes:
      height, width: the patch grid (None: square).
      skip_tokens: leading tokens that are not patches (class token, distillation token,
        registers).
    """

    height: int | None = None
    width: int | None = None
    skip_tokens: int = 1
    output_layout = "NHWC"

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """The patch tokens laid out on their grid, row-major as the patches were flattened."""
        if tokens.ndim != 3:
            raise ValueError(f"jaxcam.reshape.vit() takes (B, tokens, D) tokens, got shape "
                             f"{tuple(tokens.shape)}")
        batch, n_tokens, dim = tokens.shape
        h, w = grid_size(n_tokens - self.skip_tokens, self.height, self.width,
                         f"jaxcam.reshape.vit(skip_tokens={self.skip_tokens}) on {n_tokens} "
                         "tokens")
        return tokens[:, self.skip_tokens:, :].reshape(batch, h, w, dim)


@dataclasses.dataclass(frozen=True)
class Swin:
    """Swin tokens ``(B, h, w, C)`` (kept) or ``(B, h*w, C)`` -> ``(B, h, w, C)`` (see
    :func:`swin`).

    Attributes:
      height, width: the grid of flattened tokens (None: square).
    """

    height: int | None = None
    width: int | None = None
    output_layout = "NHWC"

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """The tokens on their grid."""
        if tokens.ndim == 4:
            return tokens
        if tokens.ndim != 3:
            raise ValueError(f"jaxcam.reshape.swin() takes (B, h, w, C) or (B, h*w, C) tokens, "
                             f"got shape {tuple(tokens.shape)}")
        batch, n_tokens, dim = tokens.shape
        h, w = grid_size(n_tokens, self.height, self.width,
                         f"jaxcam.reshape.swin() on {n_tokens} tokens")
        return tokens.reshape(batch, h, w, dim)


@dataclasses.dataclass(frozen=True)
class ChannelsFirst:
    """``(B, C, h, w)`` -> ``(B, h, w, C)`` (see :func:`channels_first`)."""

    output_layout = "NHWC"

    def __call__(self, x: jax.Array) -> jax.Array:
        """The map channels-last."""
        if x.ndim != 4:
            raise ValueError(f"jaxcam.reshape.channels_first() takes a (B, C, h, w) map, got "
                             f"shape {tuple(x.shape)}")
        return jnp.transpose(x, (0, 2, 3, 1))


def vit(height: int | None = None, width: int | None = None, skip_tokens: int = 1) -> ViT:
    """The ``reshape_transform`` of a Vision Transformer block: class token(s) off, patches on
    their grid.

    pytorch-grad-cam's ViT tutorial transform, channels-last:
    ``tokens[:, skip_tokens:, :].reshape(B, height, width, D)``.

    Example::

        maps = jaxcam.explain(vit_model, images, target_layer="blocks/3",
                              reshape_transform=jaxcam.reshape.vit())

    Args:
      height, width: the patch grid, e.g. 14 x 14 for 224 px images in 16 px patches; None
        (default) for a square grid worked out from the number of tokens.
      skip_tokens: how many leading tokens are not patches (1: the class token; 2 for DeiT's
        class and distillation tokens; 0 for a ViT without a class token).

    Returns:
      The transform ``(B, skip_tokens + h*w, D) -> (B, h, w, D)``.

    References:
      Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
      Scale", ICLR 2021. https://arxiv.org/abs/2010.11929
    """
    if skip_tokens < 0:
        raise ValueError(f"skip_tokens must be >= 0, got {skip_tokens}")
    return ViT(height, width, int(skip_tokens))


def swin(height: int | None = None, width: int | None = None) -> Swin:
    """The ``reshape_transform`` of a Swin Transformer stage: its tokens on their grid.

    A stage whose blocks keep the grid (``(B, h, w, C)``, as timm's and most JAX Swins do) is
    taken as it is; flattened tokens ``(B, h*w, C)`` are laid out row-major (pytorch-grad-cam's
    Swin tutorial transform, channels-last). No class token.

    Args:
      height, width: the grid of flattened tokens; None (default) for a square grid.

    Returns:
      The transform ``(B, h, w, C) or (B, h*w, C) -> (B, h, w, C)``.

    References:
      Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
      ICCV 2021. https://arxiv.org/abs/2103.14030
    """
    return Swin(height, width)


def channels_first() -> ChannelsFirst:
    """The ``reshape_transform`` of a channels-first layer: ``(B, C, h, w) -> (B, h, w, C)``.

    What ``layout="NCHW"`` uses for every layer without a ``reshape_transform``; useful alone
    for a model fed NHWC images whose inner layer is channels-first.

    Returns:
      The transform.
    """
    return ChannelsFirst()

"""A small Vision Transformer in Flax NNX and its PyTorch twin, with the same weights.

For tests and benchmarks (the library never imports it): Grad-CAM at a block's tokens through
``reshape_transform=jaxcam.reshape.vit()`` is checked against pytorch-grad-cam on the twin.

The architecture is ViT-B/16's (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021,
https://arxiv.org/abs/2010.11929) in timm's module names, made small: 16 px patches, a class
token, learned position embeddings, pre-norm blocks (``x + attn(norm1(x))``,
``x + mlp(norm2(x))``) with multi-head self-attention and a GELU MLP, a final LayerNorm and a
linear head on the class token. Defaults: 112 px images (a 7 x 7 patch grid), width 192, 3 heads,
depth 4 (ViT-Tiny's width and heads, fewer blocks). The NNX model is NHWC, the twin NCHW.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from torch import nn as tnn

__all__ = ["ViTConfig", "FlaxViT", "TorchViT", "copy_torch_to_flax", "twins"]

_LN_EPS = 1e-6  # timm's ViT LayerNorm epsilon


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """The twins' shape.

    Attributes:
      image_size: square input side in pixels.
      patch: patch side in pixels.
      width: token width D.
      depth: number of blocks.
      heads: attention heads (D must divide by it).
      mlp_ratio: MLP hidden width over D.
      num_classes: head outputs.
    """

    image_size: int = 112
    patch: int = 16
    width: int = 192
    depth: int = 4
    heads: int = 3
    mlp_ratio: int = 4
    num_classes: int = 10

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch


# ---------------------------------------------------------------------------------------------
# Flax NNX


class FlaxAttention(nnx.Module):
    """Multi-head self-attention with one fused qkv projection (timm's ``Attention``)."""

    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.proj = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, n, width = x.shape
        head_dim = width // self.heads
        # (B, N, 3, heads, hd) -> 3 x (B, heads, N, hd), as timm splits its qkv.
        qkv = self.qkv(x).reshape(batch, n, 3, self.heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) * head_dim ** -0.5, axis=-1)
        out = (attn @ v).transpose(0, 2, 1, 3).reshape(batch, n, width)
        return self.proj(out)


class FlaxMlp(nnx.Module):
    """``fc2(gelu(fc1(x)))`` with the exact (erf) GELU, as ``torch.nn.GELU()``."""

    def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(width, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class FlaxBlock(nnx.Module):
    """A pre-norm transformer block; its output is the (B, 1 + h*w, D) tokens."""

    def __init__(self, width: int, heads: int, hidden: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(width, epsilon=_LN_EPS, rngs=rngs)
        self.attn = FlaxAttention(width, heads, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, epsilon=_LN_EPS, rngs=rngs)
        self.mlp = FlaxMlp(width, hidden, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FlaxPatchEmbed(nnx.Module):
    """Non-overlapping patches by a stride-``patch`` convolution, flattened row-major."""

    def __init__(self, patch: int, width: int, *, rngs: nnx.Rngs):
        self.proj = nnx.Conv(3, width, (patch, patch), strides=(patch, patch), padding="VALID",
                             rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.proj(x)  # (B, h, w, D)
        return y.reshape(y.shape[0], -1, y.shape[-1])


class FlaxViT(nnx.Module):
    """The NNX ViT: NHWC images -> (B, num_classes) logits. Layers: ``blocks/<i>`` (a block's
    output tokens), ``blocks/<i>/norm1`` (pytorch-grad-cam's ViT tutorial layer), ``norm``."""

    def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
        d = config.width
        self.patch_embed = FlaxPatchEmbed(config.patch, d, rngs=rngs)
        self.cls_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, d)))
        self.pos_embed = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (1, 1 + config.grid ** 2, d)))
        self.blocks = nnx.List([FlaxBlock(d, config.heads, config.mlp_ratio * d, rngs=rngs)
                                for _ in range(config.depth)])
        self.norm = nnx.LayerNorm(d, epsilon=_LN_EPS, rngs=rngs)
        self.head = nnx.Linear(d, config.num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        tokens = self.patch_embed(x)
        cls = jnp.broadcast_to(self.cls_token[...], (tokens.shape[0], 1, tokens.shape[-1]))
        x = jnp.concatenate([cls.astype(tokens.dtype), tokens], axis=1) + self.pos_embed[...]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


# ---------------------------------------------------------------------------------------------
# PyTorch


class TorchAttention(tnn.Module):
    """timm's ``Attention``, written out."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = tnn.Linear(width, 3 * width)
        self.proj = tnn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n, width = x.shape
        head_dim = width // self.heads
        qkv = self.qkv(x).reshape(batch, n, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-2, -1) * head_dim ** -0.5, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(batch, n, width))


class TorchMlp(tnn.Module):
    """``fc2(gelu(fc1(x)))``."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = tnn.Linear(width, hidden)
        self.act = tnn.GELU()
        self.fc2 = tnn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TorchBlock(tnn.Module):
    """A pre-norm transformer block."""

    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = tnn.LayerNorm(width, eps=_LN_EPS)
        self.attn = TorchAttention(width, heads)
        self.norm2 = tnn.LayerNorm(width, eps=_LN_EPS)
        self.mlp = TorchMlp(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TorchPatchEmbed(tnn.Module):
    """Stride-``patch`` convolution, flattened row-major (timm's ``PatchEmbed``)."""

    def __init__(self, patch: int, width: int):
        super().__init__()
        self.proj = tnn.Conv2d(3, width, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, h*w, D)


class TorchViT(tnn.Module):
    """The PyTorch twin: NCHW images -> logits; ``blocks[i]`` output (B, 1 + h*w, D)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        d = config.width
        self.patch_embed = TorchPatchEmbed(config.patch, d)
        self.cls_token = tnn.Parameter(0.02 * torch.randn(1, 1, d))
        self.pos_embed = tnn.Parameter(0.02 * torch.randn(1, 1 + config.grid ** 2, d))
        self.blocks = tnn.Sequential(*[TorchBlock(d, config.heads, config.mlp_ratio * d)
                                       for _ in range(config.depth)])
        self.norm = tnn.LayerNorm(d, eps=_LN_EPS)
        self.head = tnn.Linear(d, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        x = self.blocks(x + self.pos_embed)
        return self.head(self.norm(x)[:, 0])


# ---------------------------------------------------------------------------------------------
# Weights


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _linear(dst: nnx.Linear, src: tnn.Linear) -> None:
    dst.kernel[...] = jnp.asarray(_np(src.weight).T)
    dst.bias[...] = jnp.asarray(_np(src.bias))


def _norm(dst: nnx.LayerNorm, src: tnn.LayerNorm) -> None:
    dst.scale[...] = jnp.asarray(_np(src.weight))
    dst.bias[...] = jnp.asarray(_np(src.bias))


def copy_torch_to_flax(src: TorchViT, dst: FlaxViT) -> None:
    """Every weight of the PyTorch twin into the NNX model, in place (exact float32 copies).

    Raises:
      ValueError: the two models' shapes differ.
    """
    if len(src.blocks) != len(dst.blocks):
        raise ValueError(f"depths differ: {len(src.blocks)} vs {len(dst.blocks)}")
    conv = _np(src.patch_embed.proj.weight)  # (D, 3, p, p) -> (p, p, 3, D)
    if conv.transpose(2, 3, 1, 0).shape != dst.patch_embed.proj.kernel.shape:
        raise ValueError("patch embeddings differ in shape")
    dst.patch_embed.proj.kernel[...] = jnp.asarray(conv.transpose(2, 3, 1, 0))
    dst.patch_embed.proj.bias[...] = jnp.asarray(_np(src.patch_embed.proj.bias))
    dst.cls_token[...] = jnp.asarray(_np(src.cls_token))
    dst.pos_embed[...] = jnp.asarray(_np(src.pos_embed))
    for s, d in zip(src.blocks, dst.blocks, strict=True):
        _norm(d.norm1, s.norm1)
        _norm(d.norm2, s.norm2)
        _linear(d.attn.qkv, s.attn.qkv)
        _linear(d.attn.proj, s.attn.proj)
        _linear(d.mlp.fc1, s.mlp.fc1)
        _linear(d.mlp.fc2, s.mlp.fc2)
    _norm(dst.norm, src.norm)
    _linear(dst.head, src.head)


def twins(config: ViTConfig, seed: int) -> tuple[TorchViT, FlaxViT]:
    """A PyTorch ViT with random weights (seeded) in eval mode, and its NNX copy.

    The LayerNorms get random affine parameters too (not timm's ones and zeros), so that a
    mistake in copying them shows.
    """
    torch.manual_seed(seed)
    src = TorchViT(config).eval()
    with torch.no_grad():
        for module in src.modules():
            if isinstance(module, tnn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    dst = FlaxViT(config, rngs=nnx.Rngs(seed))
    copy_torch_to_flax(src, dst)
    return src, dst

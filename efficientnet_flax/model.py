"""EfficientNet-Lite0 in Flax NNX (NHWC, float32).

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019;
the Lite variant is the TensorFlow TPU repository's 2020 release for mobile and quantised use (no
squeeze-and-excitation, ReLU6, fixed stem and head). Layout: :mod:`efficientnet_flax.arch`.

Module paths (what a Grad-CAM target layer is named by)::

    stem                      3x3/2 conv + BN + ReLU6            (B, 112, 112, 32) at 224 px
    blocks/<i>                16 MBConv blocks, i = 0..15         (B, 7, 7, 320) after blocks/15
    blocks/<i>/expand         1x1 conv + BN + ReLU6 (absent in blocks/0)
    blocks/<i>/depthwise      kxk depthwise conv + BN + ReLU6
    blocks/<i>/project        1x1 conv + BN (linear)
    head_conv                 1x1 conv + BN + ReLU6              (B, 7, 7, 1280): ``features(x)``
    classifier                global average pool, dropout, linear -> 1000 logits: ``head(f)``
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from efficientnet_flax import arch
from efficientnet_flax.arch import BlockSpec

__all__ = ["ConvBN", "EfficientNetLite0", "MBConv"]


class ConvBN(nnx.Module):
    """Convolution (TensorFlow SAME padding, no bias), BatchNorm, and optionally ReLU6.

    Args:
      n_in, n_out: channels.
      kernel, stride: square kernel size and stride.
      groups: ``n_in`` for a depthwise convolution, else 1.
      act: apply ReLU6 after the BatchNorm.
      rngs: initialisers' random streams.
    """

    def __init__(self, n_in: int, n_out: int, kernel: int = 1, stride: int = 1, *,
                 groups: int = 1, act: bool = True, rngs: nnx.Rngs):
        self.conv = nnx.Conv(n_in, n_out, (kernel, kernel), strides=(stride, stride),
                             padding="SAME", feature_group_count=groups, use_bias=False,
                             rngs=rngs)
        self.bn = nnx.BatchNorm(n_out, momentum=arch.BN_MOMENTUM, epsilon=arch.BN_EPSILON,
                                rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.bn(self.conv(x))
        return jax.nn.relu6(x) if self.act else x


class MBConv(nnx.Module):
    """Mobile inverted bottleneck (Sandler et al., 2018) without squeeze-and-excitation.

    Args:
      spec: the block's widths, kernel, stride and expand ratio.
      rngs: initialisers' random streams.
    """

    def __init__(self, spec: BlockSpec, *, rngs: nnx.Rngs):
        self.spec = spec
        self.expand = (ConvBN(spec.n_in, spec.n_mid, rngs=rngs) if spec.expand != 1 else None)
        self.depthwise = ConvBN(spec.n_mid, spec.n_mid, spec.kernel, spec.stride,
                                groups=spec.n_mid, rngs=rngs)
        self.project = ConvBN(spec.n_mid, spec.n_out, act=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.spec.residual else y


class EfficientNetLite0(nnx.Module):
    """EfficientNet-Lite0: 4.65 M parameters, 1000 ImageNet classes at 224 x 224.

    Takes NHWC float32 images already normalised as the weights expect, ``(x - 127) / 128`` on
    0..255 RGB (:func:`efficientnet_flax.imagenet.preprocess`). Any spatial size works (SAME
    padding); the feature map is the input size / 32, rounded up.

    Args:
      num_classes: classifier outputs.
      dropout_rate: dropout before the classifier (training only).
      rngs: initialisers' random streams.

    Call ``model.eval()`` for inference (BatchNorm's running statistics, no dropout); the
    converter's models come back in eval mode. Training-time stochastic depth of the original
    is not modelled.
    """

    def __init__(self, num_classes: int = arch.NUM_CLASSES, *,
                 dropout_rate: float = arch.DROPOUT_RATE, rngs: nnx.Rngs):
        self.stem = ConvBN(3, arch.STEM_CHANNELS, 3, 2, rngs=rngs)
        specs = arch.block_specs()
        self.blocks = nnx.List([MBConv(s, rngs=rngs) for s in specs])
        self.head_conv = ConvBN(specs[-1].n_out, arch.HEAD_CHANNELS, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate)
        self.classifier = nnx.Linear(arch.HEAD_CHANNELS, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """The last convolutional feature map, before pooling.

        Args:
          x: (B, H, W, 3) normalised images.

        Returns:
          (B, ceil(H/32), ceil(W/32), 1280): ``head_conv``'s output (ReLU6 applied), the layer
          Grad-CAM explains; (B, 7, 7, 1280) at 224 px.
        """
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head_conv(x)

    def head(self, f: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Global average pooling, dropout and the linear classifier.

        Args:
          f: (B, h, w, 1280) feature maps from :meth:`features`.
          rngs: dropout's random stream; needed only in training mode.

        Returns:
          (B, num_classes) logits.
        """
        pooled = jnp.mean(f, axis=(1, 2))
        return self.classifier(self.dropout(pooled, rngs=rngs))

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits of (B, H, W, 3) normalised images: ``head(features(x))``."""
        return self.head(self.features(x), rngs=rngs)

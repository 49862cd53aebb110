"""EfficientNet-Lite0's layout, shared by the Flax model and its PyTorch twin (no JAX, no torch).

EfficientNet-B0's seven MBConv stages (Tan & Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML 2019) as changed for the Lite family (TensorFlow TPU
repository, ``models/official/efficientnet/lite``, March 2020): no squeeze-and-excitation, ReLU6
instead of swish, and the stem (32) and head (1280) widths kept fixed. Convolutions use
TensorFlow's SAME padding, BatchNorm has epsilon 1e-3.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BN_EPSILON", "BlockSpec", "HEAD_CHANNELS", "NUM_CLASSES", "STAGES", "STEM_CHANNELS",
           "block_specs"]

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # TensorFlow's decay; PyTorch's momentum is 1 - 0.99
DROPOUT_RATE = 0.2

# (repeats, kernel, stride of the first block, expand ratio, output channels) per stage.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block: 1x1 expand (absent when ``expand == 1``), kxk depthwise, 1x1 project.

    The block adds its input to its output when ``residual`` (stride 1 and equal widths).
    """

    n_in: int
    n_out: int
    kernel: int
    stride: int
    expand: int

    @property
    def n_mid(self) -> int:
        return self.n_in * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.n_in == self.n_out


def block_specs() -> tuple[BlockSpec, ...]:
    """The 16 MBConv blocks of EfficientNet-Lite0, in order."""
    specs, n_in = [], STEM_CHANNELS
    for repeats, kernel, stride, expand, n_out in STAGES:
        for r in range(repeats):
            specs.append(BlockSpec(n_in, n_out, kernel, stride if r == 0 else 1, expand))
            n_in = n_out
    return tuple(specs)

"""The layer-by-layer plan of an MSD-Net, shared by the Flax model, the PyTorch twin and the cost
counter, so that the three can never disagree about channels, scales or pruning.

It follows kalviny/MSDNet-PyTorch ``models/msdnet.py`` (``MSDNet._build_block``): block 0 starts
with the multi-scale stem; every MSD layer adds ``growth_rate * gr_factor[s]`` channels at scale
``s``; 'max' pruning drops the finest scale at regular intervals and puts a compressing transition
after each drop; 'min' pruning drops scales only near the end and compresses at 1/3 and 2/3 depth.
"""

from __future__ import annotations

import dataclasses
import math

from msdnet_flax.model.config import MSDNetConfig

__all__ = [
    "ConvBNSpec",
    "ScaleConvSpec",
    "MSDLayerSpec",
    "StemSpec",
    "TransitionSpec",
    "ClassifierSpec",
    "BlockSpec",
    "build_plan",
    "block_steps",
]


@dataclasses.dataclass(frozen=True)
class ConvBNSpec:
    """Optional 1x1 bottleneck, then a 3x3 convolution (stride 2 if ``down``); BN-ReLU after each.
    """

    n_in: int
    n_out: int
    down: bool
    bottleneck: bool
    bn_width: int

    @property
    def n_inner(self) -> int:
        return min(self.n_in, self.bn_width * self.n_out) if self.bottleneck else self.n_in


@dataclasses.dataclass(frozen=True)
class ScaleConvSpec:
    """One output scale of an MSD layer.

    ``down`` is None for kalviny's ConvNormal (output ``[x, normal(x)]``) and set for
    ConvDownNormal (output ``[x_same, down(x_finer), normal(x_same)]``, in that order).
    """

    normal: ConvBNSpec
    down: ConvBNSpec | None


@dataclasses.dataclass(frozen=True)
class MSDLayerSpec:
    in_scales: int
    out_scales: int
    convs: tuple[ScaleConvSpec, ...]

    @property
    def discard(self) -> int:
        return self.in_scales - self.out_scales


@dataclasses.dataclass(frozen=True)
class StemSpec:
    """The first layer: one output per scale, each from the previous (stride 2 after the first)."""

    channels: tuple[int, ...]
    imagenet: bool


@dataclasses.dataclass(frozen=True)
class TransitionSpec:
    """A 1x1 ConvBasic per remaining scale, compressing the channels."""

    n_in: tuple[int, ...]
    n_out: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
    """Two 3x3/2 ConvBasic, a 2x2 average pool and a linear layer, on the coarsest scale."""

    n_in: int
    n_inter: int
    num_classes: int


LayerSpec = StemSpec | MSDLayerSpec | TransitionSpec


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    layers: tuple[LayerSpec, ...]
    classifier: ClassifierSpec
    out_scales: int


def block_steps(config: MSDNetConfig) -> list[int]:
    """Number of MSD layers in each block."""
    steps = [config.base]
    for i in range(1, config.n_blocks):
        steps.append(config.step if config.step_mode == "even" else config.step * i + 1)
    return steps


def _scales(config: MSDNetConfig, n_layers_all: int, n_layer_curr: int) -> tuple[int, int]:
    """(in_scales, out_scales) of the ``n_layer_curr``-th MSD layer (1-based)."""
    n = config.num_scales
    if config.prune == "min":
        return (min(n, n_layers_all - n_layer_curr + 2), min(n, n_layers_all - n_layer_curr + 1))
    interval = math.ceil(n_layers_all / n)
    in_scales = n - math.floor(max(0, n_layer_curr - 2) / interval)
    out_scales = n - math.floor((n_layer_curr - 1) / interval)
    return in_scales, out_scales


def _msd_layer(config: MSDNetConfig, n_in: int, in_scales: int, out_scales: int) -> MSDLayerSpec:
    gr, bn, n = config.gr_factor, config.bn_factor, config.num_scales
    growth = config.growth_rate
    offset = n - out_scales
    convs = []
    for s in range(offset, n):
        # Scale s's first output (s == offset) comes from the finer scale too only when a scale
        # is being discarded; otherwise the finest remaining scale has no finer neighbour.
        with_down = s > offset or in_scales > out_scales
        if with_down:
            half = growth * gr[s] // 2
            down = ConvBNSpec(n_in * gr[s - 1], half, True, config.bottleneck, bn[s - 1])
            normal = ConvBNSpec(n_in * gr[s], half, False, config.bottleneck, bn[s])
            convs.append(ScaleConvSpec(normal=normal, down=down))
        else:
            normal = ConvBNSpec(n_in * gr[s], growth * gr[s], False, config.bottleneck, bn[s])
            convs.append(ScaleConvSpec(normal=normal, down=None))
    return MSDLayerSpec(in_scales=in_scales, out_scales=out_scales, convs=tuple(convs))


def build_plan(config: MSDNetConfig) -> tuple[BlockSpec, ...]:
    """Every block of the network, in order, with its exit's classifier."""
    gr, n = config.gr_factor, config.num_scales
    steps = block_steps(config)
    n_layers_all = sum(steps)
    n_in = config.n_channels
    n_layer_curr = 0
    out_scales = n
    blocks = []
    for b, step in enumerate(steps):
        layers: list[LayerSpec] = []
        if b == 0:
            channels = tuple(config.n_channels * f for f in gr)
            layers.append(StemSpec(channels=channels, imagenet=config.data == "imagenet"))
        for _ in range(step):
            n_layer_curr += 1
            in_scales, out_scales = _scales(config, n_layers_all, n_layer_curr)
            layers.append(_msd_layer(config, n_in, in_scales, out_scales))
            n_in += config.growth_rate
            if config.reduction > 0 and (
                (config.prune == "max" and in_scales > out_scales)
                or (
                    config.prune == "min"
                    and n_layer_curr
                    in (math.floor(n_layers_all / 3), math.floor(2 * n_layers_all / 3))
                )
            ):
                n_red = math.floor(config.reduction * n_in)
                offset = n - out_scales
                layers.append(
                    TransitionSpec(
                        n_in=tuple(n_in * gr[offset + i] for i in range(out_scales)),
                        n_out=tuple(n_red * gr[offset + i] for i in range(out_scales)),
                    )
                )
                n_in = n_red
        feat = n_in * gr[-1]
        inter = 128 if config.data == "cifar" else feat
        blocks.append(
            BlockSpec(
                layers=tuple(layers),
                classifier=ClassifierSpec(n_in=feat, n_inter=inter, num_classes=config.num_classes),
                out_scales=out_scales,
            )
        )
    return tuple(blocks)

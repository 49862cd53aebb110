"""Parameters and multiply-adds of every exit, counted the way kalviny's ``op_counter.py`` does.

Counted per image (batch 1), cumulatively along the forward order ``block 0, head 0, block 1,
head 1, ...``: exit k's cost includes every earlier block and every earlier exit's head, since
anytime inference evaluates them all before reaching exit k. Conventions of ``op_counter``:
a convolution costs ``c_in * c_out * k * k * h_out * w_out`` (bias not counted), a ReLU one op per
element, ``AvgPool2d`` ``c * h_out * w_out * k * k``, a linear layer its weight and bias counts;
BatchNorm costs nothing but its scale and shift are parameters. ``op_counter`` has no rule for the
ImageNet stem's max-pool; it is counted as free here.
"""

from __future__ import annotations

import dataclasses

from msdnet_flax.model import plan as P
from msdnet_flax.model.config import MSDNetConfig

__all__ = ["ExitCost", "cost"]


@dataclasses.dataclass(frozen=True)
class ExitCost:
    """Cumulative cost of evaluating the network up to and including one exit."""

    flops: int  # multiply-adds per image
    params: int


class _Counter:
    def __init__(self) -> None:
        self.flops = 0
        self.params = 0

    def conv_bn_relu(self, c_in: int, c_out: int, k: int, h_out: int, *, bias: bool = False):
        self.flops += c_in * c_out * k * k * h_out * h_out + c_out * h_out * h_out
        self.params += c_in * c_out * k * k + (c_out if bias else 0) + 2 * c_out

    def conv_bn(self, spec: P.ConvBNSpec, h_in: int) -> None:
        if spec.bottleneck:
            self.conv_bn_relu(spec.n_in, spec.n_inner, 1, h_in)
        h_out = _down(h_in) if spec.down else h_in
        self.conv_bn_relu(spec.n_inner, spec.n_out, 3, h_out)


def _down(h: int, k: int = 3, stride: int = 2, pad: int = 1) -> int:
    return (h + 2 * pad - k) // stride + 1


def cost(config: MSDNetConfig) -> list[ExitCost]:
    """Per-exit cumulative multiply-adds and parameters of ``config``'s network.

    Args:
      config: the architecture.

    Returns:
      One :class:`ExitCost` per exit, in order; the last one is the whole network.
    """
    n = config.num_scales
    if config.data == "cifar":
        res = [config.image_size >> s for s in range(n)]
    else:  # 7x7/2 convolution and 3x3/2 max-pool before the finest scale
        res = [(config.image_size // 4) >> s for s in range(n)]
    counter = _Counter()
    exits = []
    for block in P.build_plan(config):
        for layer in block.layers:
            if isinstance(layer, P.StemSpec):
                c = layer.channels
                if layer.imagenet:
                    counter.conv_bn_relu(3, c[0], 7, config.image_size // 2, bias=True)
                else:
                    counter.conv_bn_relu(3, c[0], 3, res[0])
                for s in range(1, n):
                    counter.conv_bn_relu(c[s - 1], c[s], 3, res[s])
            elif isinstance(layer, P.MSDLayerSpec):
                offset = n - layer.out_scales
                for j, conv in enumerate(layer.convs):
                    s = offset + j
                    if conv.down is not None:
                        counter.conv_bn(conv.down, res[s - 1])
                    counter.conv_bn(conv.normal, res[s])
            else:  # TransitionSpec, on the remaining (coarsest) scales
                offset = n - len(layer.n_in)
                for j, (c_in, c_out) in enumerate(zip(layer.n_in, layer.n_out, strict=True)):
                    counter.conv_bn_relu(c_in, c_out, 1, res[offset + j])
        head = block.classifier
        h1 = _down(res[-1])
        h2 = _down(h1)
        counter.conv_bn_relu(head.n_in, head.n_inter, 3, h1)
        counter.conv_bn_relu(head.n_inter, head.n_inter, 3, h2)
        h3 = (h2 - 2) // 2 + 1
        counter.flops += head.n_inter * h3 * h3 * 4
        linear = head.n_inter * head.num_classes + head.num_classes
        counter.flops += linear
        counter.params += linear
        exits.append(ExitCost(flops=counter.flops, params=counter.params))
    return exits

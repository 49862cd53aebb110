"""The benchmarked network: one MSD-Net as a PyTorch twin and its Flax copy, with the same weights.

Weights are random (kalviny's initialisation) with random BatchNorm statistics so that BN is not
the identity; cost does not depend on the values. ``tiny`` is a 3-exit network for tests.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import nn

import jaxcam
import msdnet_flax
from msdnet_flax.interop.pytorch import TorchMSDNet
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.presets import PRESETS

TINY = MSDNetConfig(data="cifar", num_classes=10, n_blocks=3, n_channels=4, base=1, step=1,
                    growth_rate=4)
CONFIG_NAMES = ("tiny", *PRESETS)


def get_config(name: str) -> MSDNetConfig:
    if name == "tiny":
        return TINY
    return msdnet_flax.model.presets.get_config(name)


def _randomize_batchnorm(model: nn.Module, rng: np.random.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, n).astype(np.float32)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, n).astype(np.float32)))
                m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.1, n).astype(np.float32)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, n).astype(np.float32)))


def module_at(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a '/'-separated path (the same path names the Flax layer)."""
    node = model
    for part in path.split("/"):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


class ExitModel(nn.Module):
    """Exit k of a TorchMSDNet as a one-output model, as the PyTorch CAM libraries want.

    Only blocks 0..k run: exit k's logits need no later block (fair to the per-exit libraries).
    """

    def __init__(self, net: TorchMSDNet, exit_index: int):
        super().__init__()
        self.net = net
        self.exit_index = exit_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor | list[torch.Tensor] = x
        for block in self.net.blocks[: self.exit_index + 1]:
            h = block(h)
        return self.net.classify(self.exit_index, h[-1])


@dataclasses.dataclass
class Twins:
    """The same MSD-Net in PyTorch (NCHW, eval mode, on ``device``) and Flax NNX (NHWC)."""

    name: str
    config: MSDNetConfig
    torch_model: TorchMSDNet
    flax_model: msdnet_flax.MSDNet
    device: torch.device

    @property
    def num_exits(self) -> int:
        return self.flax_model.num_exits

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @functools.cached_property
    def exit_explainer(self) -> jaxcam.ExitExplainer:
        """jaxcam's all-exit explainer of the Flax model, built once, as a user explaining many
        batches would (the parity reference and the timed contender share its compilation)."""
        return jaxcam.ExitExplainer(self.flax_model)

    def exit_path(self, k: int) -> str:
        """Exit k's classifier input layer: the Flax path, which also names the torch module."""
        return self.flax_model.exit_feature_path(k)

    def torch_layer(self, k: int) -> nn.Module:
        return module_at(self.torch_model, self.exit_path(k))

    def exit_model(self, k: int) -> ExitModel:
        return ExitModel(self.torch_model, k)


def make_twins(name: str, seed: int, device: torch.device) -> Twins:
    config = get_config(name)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = TorchMSDNet(config)
    _randomize_batchnorm(net, rng)
    net.eval()
    flax_model = msdnet_flax.load_pytorch_checkpoint(net.state_dict(), config)
    flax_model.eval()
    return Twins(name, config, net.to(device), flax_model, device)

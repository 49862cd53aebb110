"""MSD-Net twins for parity tests: one random PyTorch network and the same weights in Flax."""

from __future__ import annotations

import numpy as np
import torch

import msdnet_flax
from msdnet_flax.interop.pytorch import TorchMSDNet
from msdnet_flax.model.config import MSDNetConfig


def randomize_batchnorm(model: torch.nn.Module, rng: np.random.Generator,
                        shift: float = 0.1) -> None:
    """Random BatchNorm scale, shift and running statistics, so BN is not the identity (and a
    random ``num_batches_tracked``, which a converter must ignore).

    Args:
      model: the network, changed in place.
      rng: the random source.
      shift: standard deviation of the BN shifts and running means.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, n).astype(np.float32)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, shift, n).astype(np.float32)))
                m.running_mean.copy_(
                    torch.from_numpy(rng.normal(0, shift, n).astype(np.float32)))
                m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, n).astype(np.float32)))
                m.num_batches_tracked.fill_(int(rng.integers(1, 10_000)))


def random_torch_msdnet(config: MSDNetConfig, rng: np.random.Generator, *, shift: float = 0.1,
                        biases: bool = False) -> TorchMSDNet:
    """A TorchMSDNet in eval mode: kalviny's random init (seeded from ``rng``), random BatchNorm.

    Args:
      config: the architecture.
      rng: the random source.
      shift: as in :func:`randomize_batchnorm`.
      biases: also give every linear and conv layer with a bias a random one (N(0, 0.2)), so a
        converter that drops or misplaces biases shows.
    """
    torch.manual_seed(int(rng.integers(2**31)))
    model = TorchMSDNet(config)
    randomize_batchnorm(model, rng, shift)
    if biases:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m.bias is not None:
                    m.bias.copy_(torch.from_numpy(
                        rng.normal(0.0, 0.2, tuple(m.bias.shape)).astype(np.float32)))
    return model.eval()


def make_twins(config: MSDNetConfig, rng: np.random.Generator
               ) -> tuple[TorchMSDNet, msdnet_flax.MSDNet]:
    """A TorchMSDNet with random weights and BatchNorm (eval mode) and its Flax copy."""
    torch_model = random_torch_msdnet(config, rng)
    return torch_model, msdnet_flax.load_pytorch_checkpoint(torch_model.state_dict(), config)


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class ExitModel(torch.nn.Module):
    """One exit of a TorchMSDNet as a single-output model, as pytorch-grad-cam wants."""

    def __init__(self, twin: TorchMSDNet, exit_index: int):
        super().__init__()
        self.twin = twin
        self.exit_index = exit_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.twin.exit_features(x)
        return self.twin.classify(self.exit_index, features[self.exit_index])


def module_at(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """The submodule at a '/'-separated path (the same path names the Flax layer)."""
    node = model
    for part in path.split("/"):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node

"""Twins for tests and benchmarks: a random PyTorch MSD-Net and a Flax MSD-Net with its weights.

The PyTorch network gets kalviny's random initialisation and random BatchNorm statistics, so that
BatchNorm is not the identity and a converter or an explainer that mishandles it shows. Both
``tests/`` and ``benchmarks/`` build their twins here.

Needs the ``[torch]`` extra; importing :mod:`msdnet_flax` alone never imports this module.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "msdnet_flax.testing needs PyTorch: pip install 'jaxcam[torch]'") from e

from msdnet_flax.interop.convert import load_pytorch_checkpoint
from msdnet_flax.interop.pytorch import TorchMSDNet
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.msdnet import MSDNet

__all__ = ["ExitModel", "Twins", "assert_close", "make_twins", "module_at", "nchw", "nhwc",
           "random_torch_msdnet", "randomize_batchnorm", "twins"]


def randomize_batchnorm(model: nn.Module, rng: np.random.Generator, shift: float = 0.1) -> None:
    """Random BatchNorm scale, shift and running statistics, so BN is not the identity (and a
    random ``num_batches_tracked``, which a converter must ignore).

    Args:
      model: the network, changed in place.
      rng: the random source.
      shift: standard deviation of the BN shifts and running means.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
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

    Returns:
      The network, on the CPU.
    """
    torch.manual_seed(int(rng.integers(2**31)))
    model = TorchMSDNet(config)
    randomize_batchnorm(model, rng, shift)
    if biases:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
                    m.bias.copy_(torch.from_numpy(
                        rng.normal(0.0, 0.2, tuple(m.bias.shape)).astype(np.float32)))
    return model.eval()


def make_twins(config: MSDNetConfig, rng: np.random.Generator) -> tuple[TorchMSDNet, MSDNet]:
    """A TorchMSDNet with random weights and BatchNorm (eval mode) and its Flax copy.

    Args:
      config: the architecture.
      rng: the random source.

    Returns:
      ``(torch_model, flax_model)``, both in eval mode.
    """
    torch_model = random_torch_msdnet(config, rng)
    return torch_model, load_pytorch_checkpoint(torch_model.state_dict(), config)


def assert_close(actual: Any, expected: Any, what: str, rtol: float = 1e-4) -> None:
    """Assert the largest difference is under ``rtol`` times the reference's largest magnitude.

    One scale for the whole array, not per element: twins differ by float rounding, which is
    relative to the array's size, and elements near zero would make a per-element check fail.

    Args:
      actual: the array checked.
      expected: the reference (same shape, not all zero).
      what: names the array in the failure message.
      rtol: the largest relative error allowed.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = np.abs(expected).max()
    assert scale > 0 and np.isfinite(scale), f"{what}: degenerate reference (max |ref| {scale})"
    err = np.abs(actual - expected).max() / scale
    assert err < rtol, f"{what}: relative error {err:.3e} >= {rtol:g}"


def nhwc(t: torch.Tensor) -> np.ndarray:
    """A NCHW tensor as a NHWC numpy array."""
    return t.detach().numpy().transpose(0, 2, 3, 1)


def nchw(x: np.ndarray) -> torch.Tensor:
    """A NHWC numpy array as a NCHW tensor."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class ExitModel(nn.Module):
    """Exit k of a TorchMSDNet as a one-output model, as the PyTorch CAM libraries want.

    Only blocks 0..k run: exit k's logits need no later block (which also keeps the per-exit
    libraries' timings fair in the benchmarks).

    Args:
      net: the network.
      exit_index: the exit k.
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


def module_at(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a '/'-separated path (the same path names the Flax layer)."""
    node = model
    for part in path.split("/"):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


@dataclasses.dataclass
class Twins:
    """The same MSD-Net in PyTorch (NCHW, eval mode, on ``device``) and Flax NNX (NHWC)."""

    name: str
    config: MSDNetConfig
    torch_model: TorchMSDNet
    flax_model: MSDNet
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

    def exit_path(self, k: int) -> str:
        """Exit k's classifier input layer: the Flax path, which also names the torch module."""
        return self.flax_model.exit_feature_path(k)

    def torch_layer(self, k: int) -> nn.Module:
        """The torch module at :meth:`exit_path`."""
        return module_at(self.torch_model, self.exit_path(k))

    def exit_model(self, k: int) -> ExitModel:
        """Exit k of the torch network as a one-output model."""
        return ExitModel(self.torch_model, k)


def twins(config: MSDNetConfig, seed: int, device: torch.device | str = "cpu", *,
          name: str = "", cls: type[Twins] = Twins) -> Twins:
    """Random twins (see :func:`make_twins`) as a :class:`Twins` record.

    Args:
      config: the architecture.
      seed: seeds the weights.
      device: where the torch network goes.
      name: a label for the record (e.g. the preset's name).
      cls: the record's class (a subclass of :class:`Twins` adding fields of its own).

    Returns:
      The record, with the torch network on ``device``.
    """
    device = torch.device(device)
    torch_model, flax_model = make_twins(config, np.random.default_rng(seed))
    return cls(name, config, torch_model.to(device), flax_model, device)

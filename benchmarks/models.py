"""The benchmarked networks: an MSD-Net as a PyTorch twin and its Flax copy, with the same weights.

The twins come from :mod:`msdnet_flax.testing` (random weights and BatchNorm statistics; cost does
not depend on the values). ``tiny`` is a 3-exit network for tests.
"""

from __future__ import annotations

import functools

import torch

import jaxcam
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.presets import PRESETS
from msdnet_flax.model.presets import get_config as preset
from msdnet_flax.testing import Twins, twins

TINY = MSDNetConfig(data="cifar", num_classes=10, n_blocks=3, n_channels=4, base=1, step=1,
                    growth_rate=4)
CONFIG_NAMES = ("tiny", *PRESETS)


def get_config(name: str) -> MSDNetConfig:
    """``tiny`` or a preset's configuration."""
    return TINY if name == "tiny" else preset(name)


class BenchTwins(Twins):
    """Twins with jaxcam's all-exit explainer of the Flax model."""

    @functools.cached_property
    def exit_explainer(self) -> jaxcam.ExitExplainer:
        """Built once, as a user explaining many batches would (the parity reference and the
        timed contender share its compilation)."""
        return jaxcam.ExitExplainer(self.flax_model)


def make_twins(name: str, seed: int, device: torch.device) -> BenchTwins:
    """The twins of configuration ``name``, weights seeded by ``seed``, torch side on ``device``."""
    return twins(get_config(name), seed, device, name=name, cls=BenchTwins)

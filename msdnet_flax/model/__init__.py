"""The MSD-Net network: configuration and presets, layer plan, layers, model, cost, weights as
dicts."""

from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.msdnet import MSDNet

__all__ = ["MSDNet", "MSDNetConfig"]

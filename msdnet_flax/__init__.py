"""MSD-Net (Huang et al., ICLR 2018) in Flax NNX, exposing every exit's classifier input."""

from msdnet_flax import configs
from msdnet_flax.config import MSDNetConfig
from msdnet_flax.convert import (
    load_pytorch_checkpoint,
    read_pytorch_state_dict,
    to_pytorch_state_dict,
)
from msdnet_flax.model import MSDNet
from msdnet_flax.state import from_pure_dict, to_pure_dict

__all__ = [
    "MSDNet",
    "MSDNetConfig",
    "configs",
    "from_pure_dict",
    "load_pytorch_checkpoint",
    "read_pytorch_state_dict",
    "to_pure_dict",
    "to_pytorch_state_dict",
]

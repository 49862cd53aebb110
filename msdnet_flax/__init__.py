"""MSD-Net (Huang et al., ICLR 2018) in Flax NNX, exposing every exit's classifier input."""

from msdnet_flax import configs
from msdnet_flax.checkpoint import load_checkpoint, save_checkpoint
from msdnet_flax.config import MSDNetConfig
from msdnet_flax.convert import (
    load_pytorch_checkpoint,
    read_pytorch_state_dict,
    to_pytorch_state_dict,
)
from msdnet_flax.model import MSDNet
from msdnet_flax.pretrained import Pretrained, pretrained
from msdnet_flax.state import from_pure_dict, to_pure_dict
from msdnet_flax.train_config import TrainConfig

__all__ = [
    "MSDNet",
    "MSDNetConfig",
    "Pretrained",
    "TrainConfig",
    "anytime",
    "budgeted",
    "configs",
    "exit_accuracy",
    "from_pure_dict",
    "load_checkpoint",
    "load_pytorch_checkpoint",
    "predict",
    "pretrained",
    "read_pytorch_state_dict",
    "save_checkpoint",
    "to_pure_dict",
    "to_pytorch_state_dict",
    "train",
]

# Imported on first use, so that ``python -m msdnet_flax.train`` / ``-m msdnet_flax.evaluate``
# do not find their module already imported by the package (runpy would run it twice).
_LAZY = {"train": "msdnet_flax.train", "predict": "msdnet_flax.evaluate",
         "anytime": "msdnet_flax.evaluate", "budgeted": "msdnet_flax.evaluate",
         "exit_accuracy": "msdnet_flax.evaluate"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'msdnet_flax' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # over the submodule attribute the import just set
    return value

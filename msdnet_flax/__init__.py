"""MSD-Net (Huang et al., ICLR 2018) in Flax NNX, exposing every exit's classifier input.

Layers: :mod:`msdnet_flax.model` (the network), :mod:`msdnet_flax.interop` (PyTorch twin and
conversion), :mod:`msdnet_flax.data`, :mod:`msdnet_flax.training`, :mod:`msdnet_flax.evaluation`,
:mod:`msdnet_flax.checkpoint` and :mod:`msdnet_flax.pretrained` (the bundled model);
:mod:`msdnet_flax.testing` builds random PyTorch/Flax twins for tests and benchmarks (needs torch).
Commands: ``python -m msdnet_flax.model`` (describe the network), ``python -m
msdnet_flax.training``, ``python -m msdnet_flax.evaluation``, ``python -m
msdnet_flax.training.bundle``.
"""

from msdnet_flax.checkpoint import load_checkpoint, save_checkpoint
from msdnet_flax.evaluation import anytime, budgeted, exit_accuracy, predict
from msdnet_flax.interop.convert import (
    load_pytorch_checkpoint,
    read_pytorch_state_dict,
    to_pytorch_state_dict,
)
from msdnet_flax.model import presets as configs
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.msdnet import MSDNet
from msdnet_flax.model.state import from_pure_dict, to_pure_dict
from msdnet_flax.pretrained import Pretrained, pretrained
from msdnet_flax.training import TrainConfig, train

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

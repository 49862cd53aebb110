"""PyTorch (kalviny/MSDNet-PyTorch) checkpoints <-> Flax NNX MSDNet.

The NNX module tree mirrors kalviny's (see :mod:`msdnet_flax.model.layers`), so a key maps to a
path by swapping '.' for the path separator and renaming the leaf; arrays change layout:
conv OIHW -> HWIO, linear (out, in) -> (in, out). BatchNorm's running statistics become NNX
``BatchStat`` variables; ``num_batches_tracked`` has no Flax counterpart and is ignored.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

import jax
from flax import nnx

from jaxcam.extend import skeleton, torch_layout
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.msdnet import MSDNet

__all__ = ["load_pytorch_checkpoint", "to_pytorch_state_dict", "read_pytorch_state_dict"]

# Flax leaf name -> PyTorch parameter/buffer name.
_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "bias": "bias",
                  "mean": "running_mean", "var": "running_var"}


def _torch_key(path: tuple) -> str:
    *parents, leaf = path
    return ".".join([*(str(p) for p in parents), _LEAF_TO_TORCH[leaf]])


def read_pytorch_state_dict(path_or_state_dict: str | os.PathLike | Mapping) -> dict:
    """A kalviny-style checkpoint as a flat ``{key: np.ndarray}`` state dict.

    Accepts a state dict, a ``.pth``/``.pth.tar`` file, or a dict holding a ``state_dict`` entry
    (kalviny's ``main.py`` saves ``{'epoch', 'arch', 'state_dict', 'best_prec1', 'optimizer'}``).
    Strips ``module.`` (DataParallel) and drops ``num_batches_tracked``.
    """
    return torch_layout.read_state_dict(path_or_state_dict, "PyTorch checkpoint")


@functools.lru_cache(maxsize=16)
def _abstract_split(config: MSDNetConfig) -> tuple[nnx.GraphDef, nnx.State]:
    # Traced once per config (jaxcam.extend.skeleton says why it costs); callers get a copy.
    return skeleton.abstract_split(lambda rngs: MSDNet(config, rngs=rngs))


def abstract_split(config: MSDNetConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """``nnx.split`` of an abstract ``MSDNet(config)``: its graph and a fresh state whose leaves
    are ``jax.ShapeDtypeStruct`` (no weights drawn), to fill with ``nnx.replace_by_pure_dict``."""
    graphdef, state = _abstract_split(config)
    return graphdef, jax.tree.map(lambda x: x, state)


def load_pytorch_checkpoint(path_or_state_dict: str | os.PathLike | Mapping,
                            config: MSDNetConfig) -> MSDNet:
    """An NNX :class:`MSDNet` (in eval mode) holding a PyTorch MSD-Net checkpoint's weights.

    Args:
      path_or_state_dict: a state dict (tensors or arrays), a ``.pth``/``.pth.tar`` file, or a
        dict with a ``state_dict`` entry; keys may carry DataParallel's ``module.`` prefix.
      config: the architecture the checkpoint was trained with.

    Returns:
      The model, with BatchNorm using the checkpoint's running statistics.

    Raises:
      ValueError: listing missing keys, unexpected keys and shape mismatches (the first few of
        each, and their counts) when the checkpoint does not fit ``config`` exactly.
    """
    torch_sd = read_pytorch_state_dict(path_or_state_dict)
    # Build the model abstractly: no initial weights are drawn only to be overwritten.
    graphdef, state = _abstract_split(config)
    state = torch_layout.fill_state(
        state, torch_sd, _torch_key, "the checkpoint does not match this MSDNetConfig",
        "Check that the config (data, n_blocks, step, base, growth_rate, gr_factor, "
        "num_classes, ...) is the one the checkpoint was trained with.")
    model = nnx.merge(graphdef, state)
    model.eval()
    return model


def to_pytorch_state_dict(model: MSDNet, *, as_torch: bool = True) -> dict:
    """The model's weights as a kalviny-format state dict (``TorchMSDNet`` loads it strictly).

    Args:
      model: an NNX MSDNet.
      as_torch: return ``torch.Tensor`` values (with BatchNorm's ``num_batches_tracked``) rather
        than NumPy arrays.
    """
    return torch_layout.state_dict_of(nnx.state(model), _torch_key, as_torch=as_torch)

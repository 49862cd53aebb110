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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from jaxcam.extend import skeleton
from jaxcam.extend.torch_layout import to_flax_layout, to_torch_layout
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.msdnet import MSDNet

__all__ = ["load_pytorch_checkpoint", "to_pytorch_state_dict", "read_pytorch_state_dict"]

# Flax leaf name -> PyTorch parameter/buffer name.
_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "bias": "bias",
                  "mean": "running_mean", "var": "running_var"}


def _torch_key(path: tuple) -> str:
    *parents, leaf = path
    return ".".join([*(str(p) for p in parents), _LEAF_TO_TORCH[leaf]])


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def read_pytorch_state_dict(path_or_state_dict: str | os.PathLike | Mapping) -> dict:
    """A kalviny-style checkpoint as a flat ``{key: np.ndarray}`` state dict.

    Accepts a state dict, a ``.pth``/``.pth.tar`` file, or a dict holding a ``state_dict`` entry
    (kalviny's ``main.py`` saves ``{'epoch', 'arch', 'state_dict', 'best_prec1', 'optimizer'}``).
    Strips ``module.`` (DataParallel) and drops ``num_batches_tracked``.
    """
    obj = path_or_state_dict
    if isinstance(obj, (str, os.PathLike)):
        if not os.path.isfile(obj):
            raise FileNotFoundError(f"PyTorch checkpoint {os.fspath(obj)!r} does not exist")
        try:
            import torch
        except ImportError as e:
            raise ImportError("reading a .pth file needs PyTorch: pip install 'jaxcam[torch]'"
                              ) from e
        try:
            obj = torch.load(obj, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"could not read {os.fspath(path_or_state_dict)!r} as a PyTorch "
                             f"checkpoint (torch.load with weights_only=True): {e}") from e
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state dict (a mapping of names to tensors), got "
                        f"{type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise TypeError(f"state dict keys must be strings, got {key!r}")
        key = key.removeprefix("module.")
        if key.endswith("num_batches_tracked"):
            continue
        out[key] = _as_numpy(value)
    return out


@functools.lru_cache(maxsize=16)
def _abstract_split(config: MSDNetConfig) -> tuple[nnx.GraphDef, nnx.State]:
    # Traced once per config (jaxcam.extend.skeleton says why it costs); callers get a copy.
    return skeleton.abstract_split(lambda rngs: MSDNet(config, rngs=rngs))


def abstract_split(config: MSDNetConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """``nnx.split`` of an abstract ``MSDNet(config)``: its graph and a fresh state whose leaves
    are ``jax.ShapeDtypeStruct`` (no weights drawn), to fill with ``nnx.replace_by_pure_dict``."""
    graphdef, state = _abstract_split(config)
    return graphdef, jax.tree.map(lambda x: x, state)


def _mismatch_error(missing: list[str], unexpected: list[str], shapes: list[str]) -> ValueError:
    def part(title: str, items: list[str]) -> str:
        shown = ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")
        return f"{len(items)} {title}: {shown}"

    parts = [part(t, i) for t, i in (("missing keys", missing), ("unexpected keys", unexpected),
                                       ("shape mismatches", shapes)) if i]
    return ValueError("the checkpoint does not match this MSDNetConfig; " + "; ".join(parts)
                      + ". Check that the config (data, n_blocks, step, base, growth_rate, "
                      "gr_factor, num_classes, ...) is the one the checkpoint was trained with.")


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
    graphdef, state = abstract_split(config)
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
    missing, shapes, new_flat = [], [], {}
    for path, target in flat.items():
        key = _torch_key(path)
        if key not in torch_sd:
            missing.append(key)
            continue
        value = to_flax_layout(path[-1], torch_sd[key])
        if value.shape != tuple(target.shape):
            expected = to_torch_layout(path[-1], np.empty(target.shape, np.int8)).shape
            shapes.append(f"{key} {tuple(torch_sd[key].shape)} != expected {expected}")
            continue
        new_flat[path] = jnp.asarray(value, dtype=target.dtype)
    known = {_torch_key(p) for p in flat}
    unexpected = sorted(k for k in torch_sd if k not in known)
    if missing or unexpected or shapes:
        raise _mismatch_error(missing, unexpected, shapes)
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(new_flat))
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
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model)))
    out = {_torch_key(p): np.ascontiguousarray(to_torch_layout(p[-1], np.asarray(v)))
           for p, v in flat.items()}
    if not as_torch:
        return out
    import torch

    sd = {}
    for key, value in out.items():
        sd[key] = torch.from_numpy(value.copy())
        if key.endswith("running_var"):
            sd[key.removesuffix("running_var") + "num_batches_tracked"] = torch.tensor(0)
    return sd

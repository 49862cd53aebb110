"""PyTorch <-> Flax weights, shared by the model packages' state-dict converters.

Convolution kernels are OIHW in PyTorch and HWIO in Flax (a depthwise (C, 1, k, k) kernel becomes
(k, k, 1, C)); linear kernels are (out, in) in PyTorch and (in, out) in Flax. Every other leaf
(biases, BatchNorm scale, shift and statistics) has the same layout in both. A converter names
the PyTorch key of each NNX state path; :func:`fill_state` and :func:`state_dict_of` do the rest,
strictly: every key used, every shape checked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

__all__ = ["fill_state", "read_state_dict", "state_dict_of", "to_flax_layout",
           "to_torch_layout"]

TorchKey = Callable[[tuple], str]
"""``torch_key(path)``: the PyTorch state-dict key of an NNX state path such as
``('blocks', 3, 'bn', 'mean')``."""


def to_flax_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    """A PyTorch tensor in the layout of the Flax leaf named ``leaf``.

    Args:
      leaf: the Flax parameter's name (``"kernel"`` is transposed, anything else is not).
      value: the PyTorch array.

    Returns:
      ``value`` in Flax's layout.
    """
    if leaf == "kernel" and value.ndim == 4:  # OIHW -> HWIO
        return np.transpose(value, (2, 3, 1, 0))
    if leaf == "kernel" and value.ndim == 2:  # (out, in) -> (in, out)
        return value.T
    return value


def to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_flax_layout`.

    Args:
      leaf: the Flax parameter's name.
      value: the Flax array.

    Returns:
      ``value`` in PyTorch's layout.
    """
    if leaf == "kernel" and value.ndim == 4:  # HWIO -> OIHW
        return np.transpose(value, (3, 2, 0, 1))
    if leaf == "kernel" and value.ndim == 2:  # (in, out) -> (out, in)
        return value.T
    return value


def read_state_dict(path_or_state_dict: str | os.PathLike | Mapping, what: str = "PyTorch weights"
                    ) -> dict[str, np.ndarray]:
    """A state dict as flat ``{key: np.ndarray}``.

    Args:
      path_or_state_dict: a mapping of names to tensors or arrays, a ``.safetensors`` file, or a
        ``.pth`` file (read with ``torch.load(weights_only=True)``); a ``state_dict`` entry (a
        training checkpoint's) is unwrapped.
      what: how errors name the file ("PyTorch checkpoint", "PyTorch weights file").

    Returns:
      The arrays, with DataParallel's ``module.`` prefix stripped and ``num_batches_tracked``
      dropped.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not a PyTorch file ``torch.load`` reads.
      TypeError: not a mapping, or a key that is not a string.
    """
    obj = path_or_state_dict
    if isinstance(obj, (str, os.PathLike)):
        name = os.fspath(obj)
        if not os.path.isfile(name):
            raise FileNotFoundError(f"{what} {name!r} does not exist")
        if name.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return read_state_dict(load_file(name), what)
        try:
            import torch
        except ImportError as e:
            raise ImportError("reading a .pth file needs PyTorch: pip install 'jaxcam[torch]'"
                              ) from e
        try:
            obj = torch.load(name, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"could not read {name!r} as a {what} (torch.load with "
                             f"weights_only=True): {e}") from e
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state dict (a mapping of names to tensors), got "
                        f"{type(obj).__name__}")
    if isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise TypeError(f"state dict keys must be strings, got {key!r}")
        key = key.removeprefix("module.")
        if key.endswith("num_batches_tracked"):
            continue
        if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
            value = value.detach().cpu().numpy()
        out[key] = np.asarray(value)
    return out


def _listed(title: str, items: list[str], shown: int = 6) -> str:
    return f"{len(items)} {title}: " + ", ".join(items[:shown]) + (
        " ..." if len(items) > shown else "")


def fill_state(state: nnx.State, state_dict: Mapping[str, np.ndarray], torch_key: TorchKey,
               mismatch: str, hint: str = "") -> nnx.State:
    """``state`` (abstract or not) with every leaf taken from a PyTorch state dict.

    Args:
      state: an NNX state whose leaves give the shapes and dtypes (left unchanged: a filled
        copy is returned).
      state_dict: flat ``{key: array}`` in PyTorch's layouts (:func:`read_state_dict`).
      torch_key: each state path's PyTorch key.
      mismatch: the error's opening words ("the checkpoint does not match this config").
      hint: a sentence the error ends with (what to check).

    Returns:
      The filled state.

    Raises:
      ValueError: naming the missing keys, the unexpected keys and the shape mismatches (the
        first few of each, and their counts) unless every key is used and every shape fits.
    """
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
    missing, shapes, new_flat = [], [], {}
    for path, target in flat.items():
        key = torch_key(path)
        if key not in state_dict:
            missing.append(key)
            continue
        leaf = str(path[-1])
        value = to_flax_layout(leaf, np.asarray(state_dict[key]))
        if value.shape != tuple(target.shape):
            expected = to_torch_layout(leaf, np.empty(target.shape, np.int8)).shape
            shapes.append(f"{key} {tuple(state_dict[key].shape)} != expected {expected}")
            continue
        new_flat[path] = jnp.asarray(value, dtype=target.dtype)
    known = {torch_key(p) for p in flat}
    unexpected = sorted(k for k in state_dict if k not in known)
    if missing or unexpected or shapes:
        parts = [_listed(title, items) for title, items in (
            ("missing keys", missing), ("unexpected keys", unexpected),
            ("shape mismatches", shapes)) if items]
        raise ValueError(f"{mismatch}; " + "; ".join(parts) + "." + (f" {hint}" if hint else ""))
    filled = jax.tree.map(lambda x: x, state)  # a copy: a cached abstract state stays abstract
    nnx.replace_by_pure_dict(filled, traverse_util.unflatten_dict(new_flat))
    return filled


def state_dict_of(state: nnx.State, torch_key: TorchKey, *, as_torch: bool = True
                  ) -> dict[str, Any]:
    """An NNX state's weights as a PyTorch state dict (the inverse of :func:`fill_state`).

    Args:
      state: the model's ``nnx.state``.
      torch_key: each state path's PyTorch key.
      as_torch: ``torch.Tensor`` values, with BatchNorm's ``num_batches_tracked`` (for a strict
        ``load_state_dict``), rather than NumPy arrays.

    Returns:
      ``{key: tensor or array}`` in PyTorch's layouts.
    """
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
    out = {torch_key(p): np.ascontiguousarray(to_torch_layout(str(p[-1]), np.asarray(v)))
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

"""An MSDNet's weights as plain nested dicts of arrays, and back.

``to_pure_dict(model)`` gives ``{'params': ..., 'batch_stats': ...}`` (the layout Linen users know),
ready for ``np.savez``, msgpack, orbax or pickle; ``from_pure_dict(config, d)`` rebuilds the model.
Keys are the NNX module path (``blocks``/``0``/``0``/``layers``/...); list indices may come back as
strings (as msgpack writes them) and are matched either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from msdnet_flax.interop.convert import abstract_split
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.msdnet import MSDNet

__all__ = ["to_pure_dict", "from_pure_dict"]

_COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}


def to_pure_dict(model: MSDNet) -> dict[str, dict]:
    """``{'params': ..., 'batch_stats': ...}``: nested dicts of the model's arrays.

    ``params`` holds the trainable weights (convolution kernels, BatchNorm scale and bias, linear
    kernels and biases), ``batch_stats`` BatchNorm's running ``mean`` and ``var``.
    """
    return {name: nnx.to_pure_dict(nnx.state(model, kind)) for name, kind in _COLLECTIONS.items()}


def _path_str(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def from_pure_dict(config: MSDNetConfig, pure: Mapping[str, Any], *, train: bool = False
                   ) -> MSDNet:
    """An :class:`MSDNet` of ``config`` holding the arrays of ``pure`` (from :func:`to_pure_dict`).

    Args:
      config: the architecture the arrays belong to.
      pure: ``{'params': ..., 'batch_stats': ...}``, nested dicts of arrays.
      train: return the model in training mode (default: eval mode, running statistics).

    Raises:
      ValueError: listing missing or unexpected entries and shape mismatches (with counts) when
        ``pure`` does not fit ``config`` exactly.
    """
    if not isinstance(pure, Mapping) or set(pure) != set(_COLLECTIONS):
        got = sorted(pure) if isinstance(pure, Mapping) else type(pure).__name__
        raise ValueError(f"expected a dict with exactly the keys 'batch_stats' and 'params' "
                         f"(from msdnet_flax.to_pure_dict), got {got}")
    graphdef, state = abstract_split(config)
    params, batch_stats = nnx.filter_state(state, nnx.Param, nnx.BatchStat)
    problems: dict[str, list[str]] = {"missing": [], "unexpected": [], "shape mismatches": []}
    for name, state in (("params", params), ("batch_stats", batch_stats)):
        target = {_path_str(p): (p, v) for p, v in
                  traverse_util.flatten_dict(nnx.to_pure_dict(state)).items()}
        given = pure[name]
        if not isinstance(given, Mapping):
            raise ValueError(f"{name!r} must be a nested dict of arrays, got "
                             f"{type(given).__name__}")
        given_flat = {_path_str(p): v for p, v in traverse_util.flatten_dict(dict(given)).items()}
        problems["unexpected"] += [f"{name}/{k}" for k in sorted(set(given_flat) - set(target))]
        new_flat = {}
        for key, (path, spec) in target.items():
            if key not in given_flat:
                problems["missing"].append(f"{name}/{key}")
                continue
            value = np.asarray(given_flat[key])
            if value.shape != tuple(spec.shape):
                problems["shape mismatches"].append(
                    f"{name}/{key} {value.shape} != expected {tuple(spec.shape)}")
                continue
            new_flat[path] = jnp.asarray(value, dtype=spec.dtype)
        if not any(problems.values()):
            nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(new_flat))
    if any(problems.values()):
        parts = []
        for title, items in problems.items():
            if items:
                shown = ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")
                parts.append(f"{len(items)} {title}: {shown}")
        raise ValueError("the arrays do not match this MSDNetConfig; " + "; ".join(parts))
    model = nnx.merge(graphdef, params, batch_stats)
    if train:
        model.train()
    else:
        model.eval()
    return model

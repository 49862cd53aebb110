"""Self-describing, atomically written MSD-Net checkpoints: safetensors arrays + a JSON sidecar.

A checkpoint ``ckpt-00001234`` in a directory is two files, ``ckpt-00001234.safetensors`` (the
model's ``params/...`` and ``batch_stats/...`` arrays, keyed by their NNX path, and optionally the
optimizer state as ``opt_state/...``) and ``ckpt-00001234.json`` (the step and epoch, the
MSDNetConfig, the TrainConfig, the normalisation mean/std, the class names and any extra
values). Each file is written to a temporary name, fsynced and renamed into place; then the
``latest`` pointer file (holding the checkpoint's name) is replaced the same way, so a crash at
any moment leaves ``latest`` naming a complete checkpoint.

``load_checkpoint(path)`` rebuilds the model from the checkpoint alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from jaxcam.extend.files import atomic_write
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.msdnet import MSDNet
from msdnet_flax.model.state import from_pure_dict, to_pure_dict

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "resolve_checkpoint",
           "latest_checkpoint", "flatten_tree", "unflatten_into", "FORMAT"]

FORMAT = "msdnet_flax.checkpoint/1"
_POINTER = "latest"
_PREFIX = "ckpt-"


def _key_part(entry: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def flatten_tree(tree: Any, prefix: str) -> dict[str, np.ndarray]:
    """``{prefix/a/0/b: array}`` for every leaf of a pytree (stable, '/'-joined key paths)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join([prefix, *(_key_part(e) for e in path)]): np.asarray(jax.device_get(leaf))
            for path, leaf in leaves}


def unflatten_into(template: Any, arrays: Mapping[str, np.ndarray], prefix: str) -> Any:
    """A pytree shaped like ``template`` whose leaves come from ``arrays`` (see
    :func:`flatten_tree`); raises ValueError on a missing key or a shape/dtype mismatch."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for path, leaf in leaves:
        key = "/".join([prefix, *(_key_part(e) for e in path)])
        if key not in arrays:
            raise ValueError(f"checkpoint has no array {key!r}")
        value = arrays[key]
        if value.shape != np.shape(leaf) or value.dtype != np.asarray(leaf).dtype:
            raise ValueError(f"checkpoint array {key!r} is {value.dtype}{list(value.shape)}, "
                             f"expected {np.asarray(leaf).dtype}{list(np.shape(leaf))}")
        out.append(value)
    return jax.tree_util.tree_unflatten(treedef, out)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint ``directory/latest`` names (without suffix), or None if there is none."""
    pointer = Path(directory) / _POINTER
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    return Path(directory) / name if name else None


def _prune(directory: Path, keep: int, current: str) -> None:
    names = sorted(p.stem for p in directory.glob(f"{_PREFIX}*.json"))
    for name in names[:-keep] if keep > 0 else []:
        if name == current:
            continue
        for suffix in (".safetensors", ".json"):
            (directory / (name + suffix)).unlink(missing_ok=True)


def save_checkpoint(
    directory: str | os.PathLike,
    model: MSDNet,
    *,
    step: int,
    epoch: int = 0,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str],
    train_config: Mapping[str, Any] | Any | None = None,
    opt_state: Any = None,
    extra: Mapping[str, Any] | None = None,
    keep: int = 0,
    storage_dtype: str | None = None,
) -> Path:
    """Write checkpoint ``ckpt-<step>`` into ``directory`` and point ``latest`` at it.

    Args:
      directory: where checkpoints live (created if needed).
      model: the network; its config, parameters and BatchNorm statistics are saved.
      step: optimizer steps taken (names the checkpoint).
      epoch: the epoch the next step belongs to.
      mean: per-channel normalisation mean the model expects (on the [0, 1] pixel scale).
      std: per-channel normalisation standard deviation.
      class_names: the name of each output class.
      train_config: a TrainConfig (anything with ``to_dict``) or a dict, recorded as is.
      opt_state: optional optimizer state pytree, saved as ``opt_state/<key path>``.
      extra: JSON-serialisable values to keep alongside (e.g. log accumulators).
      keep: keep only this many newest checkpoints in ``directory`` (0: keep all).
      storage_dtype: store the model's float32 arrays in this floating dtype (``"float16"``
          halves the file, as for the bundled model); loading casts them back. None keeps them.

    Returns:
      The checkpoint path without suffix (``directory/ckpt-00001234``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{_PREFIX}{step:08d}"
    arrays = {}
    for collection, tree in to_pure_dict(model).items():
        flat = traverse_util.flatten_dict(tree)
        arrays.update({"/".join([collection, *map(str, k)]): np.asarray(jax.device_get(v))
                       for k, v in flat.items()})
    if storage_dtype is not None:
        if not np.issubdtype(np.dtype(storage_dtype), np.floating):
            raise ValueError(f"storage_dtype must be a floating dtype such as 'float16', "
                             f"got {storage_dtype!r}")
        arrays = {k: v.astype(storage_dtype) if v.dtype == np.float32 else v
                  for k, v in arrays.items()}
    if opt_state is not None:
        arrays.update(flatten_tree(opt_state, "opt_state"))
    if train_config is not None and hasattr(train_config, "to_dict"):
        train_config = train_config.to_dict()
    meta = {
        "format": FORMAT,
        "step": int(step),
        "epoch": int(epoch),
        "arrays": name + ".safetensors",
        "model_config": model.config.to_dict(),
        "train_config": None if train_config is None else dict(train_config),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "class_names": list(class_names),
        "extra": dict(extra or {}),
    }
    atomic_write(directory / (name + ".safetensors"),
                 st_save(arrays, metadata={"format": FORMAT, "step": str(step),
                                           "dtype": storage_dtype or "float32"}))
    atomic_write(directory / (name + ".json"), json.dumps(meta, indent=1).encode())
    atomic_write(directory / _POINTER, (name + "\n").encode())
    _prune(directory, keep, name)
    return directory / name


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint (path without suffix) that ``path`` designates.

    ``path`` may be a checkpoint's ``.json`` or ``.safetensors`` file, the path without suffix,
    a checkpoint directory (its ``latest``), or a training run's ``out_dir`` (its
    ``checkpoints/latest``).

    Raises:
      FileNotFoundError: nothing there is a checkpoint.
    """
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    if p.with_suffix(".json").is_file():
        return p
    for directory in (p, p / "checkpoints"):
        found = latest_checkpoint(directory) if directory.is_dir() else None
        if found is not None and found.with_suffix(".json").is_file():
            return found
    raise FileNotFoundError(f"no MSD-Net checkpoint at {path} (expected ckpt-*.json / "
                            f".safetensors, or a directory with a 'latest' pointer)")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The raw arrays (flat ``collection/path`` keys) and the JSON metadata of a checkpoint."""
    stem = resolve_checkpoint(path)
    meta = json.loads(stem.with_suffix(".json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{stem}.json is not a {FORMAT} checkpoint (format "
                         f"{meta.get('format')!r})")
    arrays = st_load((stem.parent / meta["arrays"]).read_bytes())
    meta["path"] = os.fspath(stem)
    return arrays, meta


def model_from_arrays(config: MSDNetConfig, arrays: Mapping[str, np.ndarray], *,
                      train: bool = False) -> MSDNet:
    """The MSDNet of ``config`` holding the ``params/`` and ``batch_stats/`` arrays."""
    pure: dict[str, dict] = {"params": {}, "batch_stats": {}}
    for key, value in arrays.items():
        collection, _, rest = key.partition("/")
        if collection in pure:
            pure[collection][rest] = value
    nested = {c: traverse_util.unflatten_dict(flat, sep="/") for c, flat in pure.items()}
    return from_pure_dict(config, nested, train=train)


def load_checkpoint(path: str | os.PathLike) -> tuple[MSDNet, dict[str, Any]]:
    """Rebuild a model from a checkpoint alone.

    Args:
      path: see :func:`resolve_checkpoint` (a file, a checkpoint directory or a run directory).

    Returns:
      ``(model, meta)``: the MSDNet in eval mode, and the JSON metadata (``step``, ``epoch``,
      ``model_config``, ``train_config``, ``mean``, ``std``, ``class_names``, ``extra``, and
      ``path``, the checkpoint read).
    """
    arrays, meta = read_checkpoint(path)
    model = model_from_arrays(MSDNetConfig(**meta["model_config"]), arrays)
    return model, meta

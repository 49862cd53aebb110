"""CIFAR-10 / CIFAR-100 from the official "python version" files.

Reads ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` directly, or the directory they
extract to (``cifar-10-batches-py`` / ``cifar-100-python``), or a directory holding either.
The files are Python pickles (written by Python 2, so they are read with ``encoding='bytes'``):
only load archives you trust.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from msdnet_flax.data._dataset import ArrayDataset

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "load_cifar",
           "CifarFiles"]

# The normalisation kalviny/MSDNet-PyTorch uses (per-channel statistics of the training sets).
CIFAR10_MEAN = (0.4914, 0.4824, 0.4467)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

_LAYOUT = {
    10: {
        "dir": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "names_key": b"label_names",
        "labels_key": b"labels",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
    },
    100: {
        "dir": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "names_key": b"fine_label_names",
        "labels_key": b"fine_labels",
        "mean": CIFAR100_MEAN,
        "std": CIFAR100_STD,
    },
}


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        obj = pickle.load(io.BytesIO(raw), encoding="bytes")
    except Exception as exc:
        raise ValueError(f"{where}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})"
                         ) from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _get(d: dict, key: bytes, where: str) -> Any:
    for k in (key, key.decode()):
        if k in d:
            return d[k]
    raise ValueError(f"{where}: missing key {key!r} (has {sorted(map(repr, d))})")


def _open_source(path: Path, layout: dict) -> tuple[Callable[[str], bytes], Callable[[], None],
                                                     str]:
    """A reader of member files by name, a closer, and a description of where they come from."""
    if not path.exists():
        raise FileNotFoundError(f"CIFAR-{'10' if layout['dir'].startswith('cifar-10-') else 100}"
                                f" data not found at {path}: expected {layout['archive']} or the "
                                f"{layout['dir']}/ directory it extracts to")
    if path.is_dir() and not (path / layout["dir"]).is_dir() \
            and (path / layout["archive"]).is_file():
        path = path / layout["archive"]  # a download directory holding only the archive
    if path.is_dir():
        base = path / layout["dir"] if (path / layout["dir"]).is_dir() else path

        def read_dir(name: str) -> bytes:
            f = base / name
            if not f.is_file():
                raise FileNotFoundError(f"{f}: missing CIFAR file {name!r} (expected the "
                                        f"{layout['dir']}/ layout in {path})")
            return f.read_bytes()

        return read_dir, lambda: None, str(base)
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise ValueError(f"{path}: not a readable tar archive ({exc}); expected "
                         f"{layout['archive']}") from exc
    members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}

    def read_tar(name: str) -> bytes:
        member = members.get(name)
        if member is None:
            raise ValueError(f"{path}: archive has no {layout['dir']}/{name} (is it "
                             f"{layout['archive']}?)")
        f = tar.extractfile(member)
        assert f is not None
        return f.read()

    return read_tar, tar.close, str(path)


class CifarFiles:
    """A CIFAR archive or directory read one batch file at a time (for streaming readers that
    must not hold a whole split in memory; :func:`load_cifar` loads a split at once).

    Args:
      path: as for :func:`load_cifar`.
      num_classes: 10 or 100.

    Attributes:
      class_names: the data set's class names.
      origin: where the files come from (for messages).

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: malformed content, naming the file and what was expected.
    """

    def __init__(self, path: str | os.PathLike, num_classes: Literal[10, 100]):
        if num_classes not in _LAYOUT:
            raise ValueError(f"num_classes must be 10 or 100, got {num_classes!r}")
        self._layout = _LAYOUT[num_classes]
        self._read, self.close, self.origin = _open_source(Path(path), self._layout)
        where = f"{self.origin}: {self._layout['meta']}"
        meta = _unpickle(self._read(self._layout["meta"]), where)
        self.class_names = [n.decode() if isinstance(n, bytes) else str(n)
                            for n in _get(meta, self._layout["names_key"], where)]

    def batch_files(self, split: Literal["train", "test"]) -> list[str]:
        """The names of the batch files of ``split``, in order."""
        return list(self._layout[split])

    def read_batch(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """One batch file: ``(images (N, 32, 32, 3) uint8 RGB, labels (N,))``."""
        where = f"{self.origin}: {name}"
        batch = _unpickle(self._read(name), where)
        data = np.asarray(_get(batch, b"data", where))
        labels = np.asarray(_get(batch, self._layout["labels_key"], where))
        if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
            raise ValueError(f"{where}: expected b'data' to be an (N, 3072) uint8 array, "
                             f"got {data.shape} {data.dtype}")
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar(path: str | os.PathLike, *, split: Literal["train", "test"],
               num_classes: Literal[10, 100]) -> ArrayDataset:
    """Load a CIFAR split.

    Args:
      path: the ``.tar.gz`` archive, the extracted ``cifar-10-batches-py`` /
        ``cifar-100-python`` directory, or a directory containing either (torchvision's root).
      split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
      num_classes: 10 for CIFAR-10, 100 for CIFAR-100 (fine labels).

    Returns:
      An ``ArrayDataset`` of (N, 32, 32, 3) uint8 RGB images with the standard CIFAR mean/std.

    Raises:
      FileNotFoundError: the path (or a file in the directory) does not exist.
      ValueError: malformed content, naming the file and what was expected.
    """
    if num_classes not in _LAYOUT:
        raise ValueError(f"num_classes must be 10 or 100, got {num_classes!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    layout = _LAYOUT[num_classes]
    path = Path(path)
    read, close, origin = _open_source(path, layout)
    try:
        meta_where = f"{origin}: {layout['meta']}"
        meta = _unpickle(read(layout["meta"]), meta_where)
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in _get(meta, layout["names_key"], meta_where)]
        if len(names) != num_classes:
            raise ValueError(f"{meta_where}: expected {num_classes} class names, got "
                             f"{len(names)}")
        images, labels = [], []
        for name in layout[split]:
            where = f"{origin}: {name}"
            batch = _unpickle(read(name), where)
            data = np.asarray(_get(batch, b"data", where))
            lab = np.asarray(_get(batch, layout["labels_key"], where))
            if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
                raise ValueError(f"{where}: expected b'data' to be an (N, 3072) uint8 array "
                                 f"(32x32 RGB, channel-major), got {data.shape} {data.dtype}")
            if lab.shape != (data.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
                raise ValueError(f"{where}: expected {data.shape[0]} integer labels under "
                                 f"{layout['labels_key']!r}, got shape {lab.shape} {lab.dtype}")
            if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
                raise ValueError(f"{where}: labels must lie in [0, {num_classes}), got "
                                 f"[{lab.min()}, {lab.max()}]")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(lab.astype(np.int32))
    finally:
        close()
    return ArrayDataset(images=np.ascontiguousarray(np.concatenate(images)),
                        labels=np.concatenate(labels), class_names=tuple(names),
                        mean=layout["mean"], std=layout["std"])

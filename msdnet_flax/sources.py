"""The train / validation / test splits a :class:`TrainConfig` names.

* ``procedural``: ``msdnet_flax.data.generate`` with seeds ``data_seed``, ``data_seed + 1`` and
  ``data_seed + 2``.
* ``cifar10`` / ``cifar100``: the python pickles of https://www.cs.toronto.edu/~kriz/cifar.html
  (``data_path`` is ``cifar-10-batches-py`` / ``cifar-100-python`` or the directory holding it),
  normalised with kalviny's constants.
* ``folder``: ``data_path/train/<class>/*`` and ``data_path/test/<class>/*`` (or ``val``), any
  format OpenCV reads, resized to 32x32; mean and std measured on the training images.

``holdout`` > 0 moves that many training images (a fixed permutation of ``data_seed``) to the
validation split, as the paper does for budgeted classification (5000 of CIFAR's 50000); with
``holdout`` = 0 the test split doubles as validation, as kalviny's anytime runs do.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from msdnet_flax.data import ArrayDataset, generate
from msdnet_flax.train_config import TrainConfig

__all__ = ["load_splits", "CIFAR_MEAN", "CIFAR_STD"]

# kalviny/MSDNet-PyTorch's dataloader.py, for both CIFAR-10 and CIFAR-100.
CIFAR_MEAN = (0.4914, 0.4824, 0.4467)
CIFAR_STD = (0.2471, 0.2435, 0.2616)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _cifar_dir(root: Path, name: str) -> Path:
    for candidate in (root, root / name):
        if candidate.is_dir() and any((candidate / f).exists()
                                      for f in ("test_batch", "test")):
            return candidate
    raise FileNotFoundError(f"no {name} python pickles in {root} (expected {root}/{name} or its "
                            f"contents: data_batch_1..5/test_batch or train/test)")


def _cifar(root: Path, hundred: bool) -> tuple[ArrayDataset, ArrayDataset]:
    d = _cifar_dir(root, "cifar-100-python" if hundred else "cifar-10-batches-py")
    if hundred:
        parts = {"train": [d / "train"], "test": [d / "test"]}
        key, names = b"fine_labels", _unpickle(d / "meta")[b"fine_label_names"]
    else:
        parts = {"train": [d / f"data_batch_{i}" for i in range(1, 6)], "test": [d / "test_batch"]}
        key, names = b"labels", _unpickle(d / "batches.meta")[b"label_names"]
    names = tuple(n.decode() for n in names)
    out = []
    for files in parts.values():
        batches = [_unpickle(f) for f in files]
        data = np.concatenate([b[b"data"] for b in batches])
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.uint8)
        labels = np.concatenate([np.asarray(b[key]) for b in batches]).astype(np.int32)
        out.append(ArrayDataset(np.ascontiguousarray(images), labels, names, CIFAR_MEAN,
                                CIFAR_STD))
    return out[0], out[1]


def _read_folder(root: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    images, labels = [], []
    for label, name in enumerate(names):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            bgr = cv2.imread(os.fspath(f), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"OpenCV cannot read {f}")
            images.append(cv2.resize(bgr, (32, 32), interpolation=cv2.INTER_AREA)[..., ::-1])
            labels.append(label)
    if not images:
        raise FileNotFoundError(f"no images under {root}/<class>/")
    return np.stack(images).astype(np.uint8), np.asarray(labels, np.int32)


def _folder(root: Path) -> tuple[ArrayDataset, ArrayDataset]:
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise FileNotFoundError(f"expected {root}/train/<class>/ and {root}/test/<class>/ "
                                f"(or val/)")
    names = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    train_x, train_y = _read_folder(root / "train", names)
    test_x, test_y = _read_folder(test_dir, names)
    pixels = train_x.reshape(-1, 3).astype(np.float64) / 255.0
    mean = tuple(pixels.mean(0).tolist())
    std = tuple(np.maximum(pixels.std(0), 1e-3).tolist())
    return (ArrayDataset(train_x, train_y, names, mean, std),
            ArrayDataset(test_x, test_y, names, mean, std))


def load_splits(cfg: TrainConfig) -> dict[str, ArrayDataset | None]:
    """``{'train', 'val', 'test'}`` data sets of ``cfg``'s data source.

    Args:
      cfg: the run's settings (``data``, ``data_path``, ``n_*``, ``difficulty``, ``data_seed``,
        ``holdout``).

    Returns:
      The splits; ``val`` is None for procedural data with ``n_val`` = 0.
    """
    if cfg.data == "procedural":
        def gen(n: int, offset: int) -> ArrayDataset | None:
            return generate(n, seed=cfg.data_seed + offset, difficulty=cfg.difficulty) if n \
                else None
        return {"train": gen(cfg.n_train, 0), "val": gen(cfg.n_val, 1),
                "test": gen(cfg.n_test, 2)}
    root = Path(cfg.data_path)
    train, test = _cifar(root, cfg.data == "cifar100") if cfg.data != "folder" else _folder(root)
    if cfg.holdout:
        if cfg.holdout >= len(train):
            raise ValueError(f"holdout={cfg.holdout} leaves no training images of {len(train)}")
        order = np.random.default_rng(cfg.data_seed).permutation(len(train))
        return {"train": train.subset(np.sort(order[cfg.holdout:])),
                "val": train.subset(np.sort(order[:cfg.holdout])), "test": test}
    return {"train": train, "val": test, "test": test}

"""The train / validation / test splits a :class:`TrainConfig` names.

* ``procedural``: ``msdnet_flax.data.generate`` with seeds ``data_seed``, ``data_seed + 1`` and
  ``data_seed + 2``.
* ``cifar10`` / ``cifar100``: ``msdnet_flax.data.load_cifar`` (the archive, its extracted
  directory or a directory holding either), normalised with kalviny's constants.
* ``folder``: ``data_path/train/<class>/*`` and ``data_path/test/<class>/*`` (or ``val/``), read by
  ``msdnet_flax.data.load_image_folder`` at the model's input size, ImageNet normalisation.

``holdout`` > 0 moves that many training images (a fixed permutation of ``data_seed``) to the
validation split, as the paper does for budgeted classification (5000 of CIFAR's 50000); with
``holdout`` = 0 the test split doubles as validation, as kalviny's anytime runs do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msdnet_flax.data import ArrayDataset, generate, load_cifar, load_image_folder
from msdnet_flax.training.config import TrainConfig

__all__ = ["load_splits"]


def _folder(root: Path, size: int) -> tuple[ArrayDataset, ArrayDataset]:
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise FileNotFoundError(f"expected {root}/train/<class>/ and {root}/test/<class>/ "
                                f"(or val/)")
    train = load_image_folder(root / "train", size=size)
    return train, load_image_folder(test_dir, size=size, class_names=train.class_names)


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
            if not n:
                return None
            return generate(n, seed=cfg.data_seed + offset, size=cfg.image_size,
                            difficulty=cfg.difficulty)
        return {"train": gen(cfg.n_train, 0), "val": gen(cfg.n_val, 1),
                "test": gen(cfg.n_test, 2)}
    root = Path(cfg.data_path)
    if cfg.data == "folder":
        train, test = _folder(root, cfg.image_size)
    else:
        classes = 100 if cfg.data == "cifar100" else 10
        train = load_cifar(root, split="train", num_classes=classes)
        test = load_cifar(root, split="test", num_classes=classes)
    if cfg.holdout:
        if cfg.holdout >= len(train):
            raise ValueError(f"holdout={cfg.holdout} leaves no training images of {len(train)}")
        order = np.random.default_rng(cfg.data_seed).permutation(len(train))
        return {"train": train.subset(np.sort(order[cfg.holdout:])),
                "val": train.subset(np.sort(order[:cfg.holdout])), "test": test}
    return {"train": train, "val": test, "test": test}

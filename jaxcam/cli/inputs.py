"""The data-set inputs of ``jaxcam explain``: ``cifar10:PATH`` and friends, ``imagenet:ROOT``.

Each is an :class:`jaxcam.batch.InputSource` the engine reads on demand; the CIFAR pickles are
read through :class:`msdnet_flax.data.cifar.CifarFiles`.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxcam import batch
from jaxcam.extend.images import IMAGE_EXTENSIONS

__all__ = ["CifarSource", "imagenet_source", "PREFIXES", "list_inputs"]

_CIFAR_PREFIXES = {"cifar10": (10, "test"), "cifar10-test": (10, "test"),
                   "cifar10-train": (10, "train"), "cifar100": (100, "test"),
                   "cifar100-test": (100, "test"), "cifar100-train": (100, "train")}


class CifarSource:
    """One split of a CIFAR archive or directory, read one batch file at a time.

    The images of a batch file are unpickled when first asked for and kept until two other
    files have been read since, so memory holds at most two batch files (30 MB each for
    CIFAR-10), never the split.

    Args:
      path: the CIFAR python archive, its directory, or a directory holding either.
      num_classes: 10 or 100.
      split: ``"train"`` or ``"test"``.

    Raises:
      FileNotFoundError: nothing at ``path``.
      ValueError: a malformed file (naming it).
    """

    crop = None

    def __init__(self, path: str | Path, num_classes: int, split: str):
        from msdnet_flax.data.cifar import CifarFiles

        self._files = CifarFiles(path, num_classes)
        self.class_names = self._files.class_names
        self._batches = self._files.batch_files(split)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # Counting needs each file once (then it is dropped): a million-image listing would
        # otherwise have to assume the official sizes.
        counts = [len(self._batch(name)[1]) for name in self._batches]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()
        tag = f"cifar{num_classes}-{split}"
        n = self._starts[-1]
        self.keys = [f"{tag}:{path}#{i}" for i in range(n)]
        self.names = [f"{tag}_{i:05d}" for i in range(n)]

    def _batch(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if name not in self._cache:
                if len(self._cache) >= 2:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[name] = self._files.read_batch(name)
            return self._cache[name]

    def _locate(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        k = bisect.bisect_right(self._starts, i) - 1
        images, labels = self._batch(self._batches[k])
        return images, labels, i - self._starts[k]

    def load(self, i: int, max_pixels: int) -> np.ndarray:
        images, _, j = self._locate(i)
        return np.ascontiguousarray(images[j])

    def class_name(self, i: int) -> str | None:
        _, labels, j = self._locate(i)
        return self.class_names[int(labels[j])]


def imagenet_source(root: str) -> batch.FileSource:
    """``ROOT/<class>/<image>`` files, sorted by class then file, with ImageNet's
    resize-and-centre-crop.

    Args:
      root: the folder.

    Returns:
      The files as a source.

    Raises:
      FileNotFoundError: no such folder, or no images in its class folders.
    """
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError("no such directory; expected ROOT/<class name>/<images>")
    files = [p for d in sorted(q for q in path.iterdir() if q.is_dir()
                               and not q.name.startswith("."))
             for p in sorted(d.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise FileNotFoundError(f"holds no ROOT/<class>/<image> files "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
    return batch.FileSource(files, crop=True)


def _cifar(num_classes: int, split: str) -> batch.SourceFactory:
    return lambda rest: CifarSource(rest, num_classes, split)


#: The ``PREFIX:`` inputs ``jaxcam explain`` understands.
PREFIXES: dict[str, batch.SourceFactory] = {
    **{prefix: _cifar(n, split) for prefix, (n, split) in _CIFAR_PREFIXES.items()},
    "imagenet": imagenet_source,
}


def list_inputs(inputs: Sequence[str], files_from: Sequence[str] = ()) -> batch.Inputs:
    """:func:`jaxcam.batch.list_inputs` with the data-set prefixes of :data:`PREFIXES`.

    Args:
      inputs: the INPUT arguments: files, directories, globs, ``imagenet:ROOT``,
        ``cifar10:PATH``, ``cifar10-train:PATH``, ``cifar100:PATH``, ``cifar100-train:PATH``.
      files_from: ``--files-from`` lists.

    Returns:
      The inputs.
    """
    return batch.list_inputs(inputs, files_from, prefixes=PREFIXES)

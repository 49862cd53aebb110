"""What to explain: a deterministic list of inputs (files, file lists, CIFAR, ImageNet folders),
each read on demand so that the data set never has to fit in memory."""

from __future__ import annotations

import bisect
import dataclasses
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jaxcam._cli_io import expand_inputs, unique_names
from jaxcam.batch._decode import DEFAULT_MAX_PIXELS, read_image_checked

__all__ = ["Inputs", "list_inputs", "class_index"]

_CIFAR_PREFIXES = {"cifar10": (10, "test"), "cifar10-test": (10, "test"),
                   "cifar10-train": (10, "train"), "cifar100": (100, "test"),
                   "cifar100-test": (100, "test"), "cifar100-train": (100, "train")}


class _Reader(Protocol):
    crop: bool

    def load(self, ref: Any, max_pixels: int) -> np.ndarray: ...

    def class_name(self, ref: Any) -> str | None: ...


@dataclasses.dataclass(frozen=True)
class _Files:
    """Image files; the class is the parent folder's name; ``crop``: ImageNet preprocessing."""

    crop: bool = False

    def load(self, ref: Any, max_pixels: int) -> np.ndarray:
        return read_image_checked(ref, max_pixels)

    def class_name(self, ref: Any) -> str | None:
        return Path(ref).parent.name


class _Cifar:
    """One split of a CIFAR archive or directory, read one batch file at a time.

    The images of a batch file are unpickled when first asked for and kept until two other
    files have been read since, so memory holds at most two batch files (30 MB each for
    CIFAR-10), never the split.
    """

    crop = False

    def __init__(self, path: Path, num_classes: int, split: str):
        from msdnet_flax.data import cifar

        self._layout = cifar._LAYOUT[num_classes]
        self._read, self._close, self.origin = cifar._open_source(path, self._layout)
        meta = cifar._unpickle(self._read(self._layout["meta"]), f"{self.origin}: meta")
        self.class_names = [n.decode() if isinstance(n, bytes) else str(n)
                            for n in cifar._get(meta, self._layout["names_key"], "meta")]
        self._files = list(self._layout[split])
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # Counting needs each file once (then it is dropped): a million-image listing would
        # otherwise have to assume the official sizes.
        self.counts = [len(self._batch(name)[1]) for name in self._files]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(int).tolist()

    def _batch(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        from msdnet_flax.data import cifar

        with self._lock:
            if name in self._cache:
                return self._cache[name]
            where = f"{self.origin}: {name}"
            batch = cifar._unpickle(self._read(name), where)
            data = np.asarray(cifar._get(batch, b"data", where))
            labels = np.asarray(cifar._get(batch, self._layout["labels_key"], where))
            if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
                raise ValueError(f"{where}: expected b'data' to be an (N, 3072) uint8 array, "
                                 f"got {data.shape} {data.dtype}")
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[name] = (data, labels)
            return data, labels

    def _locate(self, ref: int) -> tuple[np.ndarray, np.ndarray, int]:
        k = bisect.bisect_right(self.starts, ref) - 1
        data, labels = self._batch(self._files[k])
        return data, labels, ref - self.starts[k]

    def load(self, ref: Any, max_pixels: int) -> np.ndarray:
        data, _, j = self._locate(int(ref))
        return np.ascontiguousarray(data[j].reshape(3, 32, 32).transpose(1, 2, 0))

    def class_name(self, ref: Any) -> str | None:
        _, labels, j = self._locate(int(ref))
        return self.class_names[int(labels[j])]


@dataclasses.dataclass
class Inputs:
    """The inputs of a run, in a fixed order, each loaded on demand.

    Attributes:
      keys: one string per input naming it: the file's path, or ``cifar10-test:PATH#i``.
      names: output names, distinct ignoring case (file stems, see
        :func:`jaxcam._cli_io.unique_names`; ``cifar10-test_00042`` for data set images).
      errors: ``(input, reason)`` for command-line inputs that designate nothing.
    """

    keys: list[str]
    names: list[str]
    errors: list[tuple[str, str]]
    _segments: list[tuple[int, _Reader, list[Any]]] = dataclasses.field(repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    def _find(self, i: int) -> tuple[_Reader, Any]:
        starts = [s for s, _, _ in self._segments]
        k = bisect.bisect_right(starts, i) - 1
        start, reader, refs = self._segments[k]
        return reader, refs[i - start]

    def load(self, i: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Input ``i`` decoded: (H, W, 3) RGB on the 0..255 scale.

        Raises:
          InputError: it cannot be read or decoded (the message says why).
        """
        reader, ref = self._find(i)
        return reader.load(ref, max_pixels)

    def crop(self, i: int) -> bool:
        """Whether input ``i`` gets ImageNet's centre crop rather than a whole-image resize."""
        return self._find(i)[0].crop

    def class_name(self, i: int) -> str | None:
        """The class name input ``i`` carries (its parent folder's or the data set's)."""
        reader, ref = self._find(i)
        return reader.class_name(ref)

    def label(self, i: int, classes: Mapping[str, int]) -> int | None:
        """The class of input ``i`` (its folder's or the data set's), as an index of ``classes``
        (see :func:`class_index`), or None when unknown."""
        reader, ref = self._find(i)
        name = reader.class_name(ref)
        if name is None:
            return None
        return classes.get(name, classes.get(name.lower()))


def class_index(class_names: Sequence[str]) -> dict[str, int]:
    """``{name: index}`` for exact names and, where unambiguous, lower-cased ones."""
    out = {str(c).lower(): i for i, c in reversed(list(enumerate(class_names)))}
    out.update({str(c): i for i, c in enumerate(class_names)})
    return out


def _files_from(path: str) -> list[str]:
    """Paths listed one a line in a file (``-``: standard input); blank and ``#`` lines skipped."""
    import sys

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"--files-from {path}: cannot read it ({exc.strerror or exc}); "
                                f"expected a text file with one image path a line") from None
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def _imagenet_files(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    if not root.is_dir():
        return [], [(f"imagenet:{root}", "no such directory; expected ROOT/<class name>/<images>")]
    from msdnet_flax.data.folder import IMAGE_EXTENSIONS

    files = [p for d in sorted(q for q in root.iterdir() if q.is_dir()
                               and not q.name.startswith("."))
             for p in sorted(d.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        return [], [(f"imagenet:{root}", "holds no ROOT/<class>/<image> files "
                     f"({', '.join(IMAGE_EXTENSIONS)})")]
    return files, []


def list_inputs(inputs: Sequence[str], files_from: Sequence[str] = ()) -> Inputs:
    """List what to explain, in a deterministic order (the same in every process).

    Args:
      inputs: image files, directories (recursive, sorted), glob patterns (sorted matches), and
        data sets: ``imagenet:ROOT`` (``ROOT/<class>/<image>``, sorted by class then file, with
        ImageNet's resize-and-centre-crop preprocessing) and ``cifar10:PATH``,
        ``cifar10-train:PATH``, ``cifar100:PATH``, ``cifar100-train:PATH`` (the CIFAR python
        archive or its directory; the test split unless ``-train``).
      files_from: text files listing image paths one a line (relative to the current
        directory; ``-`` is standard input), appended in their order.

    Returns:
      The :class:`Inputs`; a file named twice is taken once.

    Raises:
      FileNotFoundError: a ``--files-from`` list cannot be read.
      ValueError: a CIFAR source is malformed (naming the file and what was expected).
    """
    segments: list[tuple[int, _Reader, list[Any]]] = []
    keys: list[str] = []
    names: list[str] = []
    errors: list[tuple[str, str]] = []
    seen: set[str] = set()
    plain: list[str] = []

    def add_files(paths: Sequence[str | Path], reader: _Reader) -> None:
        fresh = []
        for p in paths:
            key = os.path.abspath(p)
            if key not in seen:
                seen.add(key)
                fresh.append(str(p))
        if fresh:
            segments.append((len(keys), reader, fresh))
            keys.extend(fresh)
            names.extend(unique_names([Path(p) for p in fresh]))

    def flush_plain() -> None:
        if plain:
            found, errs = expand_inputs(plain)
            errors.extend(errs)
            add_files(found, _Files())
            plain.clear()

    for item in inputs:
        prefix, _, rest = item.partition(":")
        if rest and prefix.lower() in _CIFAR_PREFIXES:
            flush_plain()
            num_classes, split = _CIFAR_PREFIXES[prefix.lower()]
            try:
                reader = _Cifar(Path(rest), num_classes, split)
            except FileNotFoundError as exc:
                errors.append((item, str(exc)))
                continue
            n = reader.starts[-1]
            tag = f"cifar{num_classes}-{split}"
            segments.append((len(keys), reader, list(range(n))))
            keys.extend(f"{tag}:{rest}#{i}" for i in range(n))
            names.extend(f"{tag}_{i:05d}" for i in range(n))
        elif rest and prefix.lower() == "imagenet":
            flush_plain()
            found, errs = _imagenet_files(Path(rest))
            errors.extend(errs)
            add_files(found, _Files(crop=True))
        else:
            plain.append(item)
    flush_plain()
    for listing in files_from:
        add_files(_files_from(listing), _Files())
    return Inputs(keys=keys, names=_distinct(names), errors=errors,
                  _segments=segments)


def _distinct(names: list[str]) -> list[str]:
    """Number names that clash (ignoring case) across separately named groups of inputs."""
    counts: dict[str, int] = {}
    out = []
    for name in names:
        n = counts.get(name.lower(), 0)
        counts[name.lower()] = n + 1
        out.append(name if n == 0 else f"{name}-{n + 1}")
    return out

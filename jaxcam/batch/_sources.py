"""What to explain: a deterministic list of inputs, each read on demand so that a data set never
has to fit in memory.

Image files are built in; other kinds of input (a data set archive, a folder layout with its
own preprocessing) come as :class:`InputSource` objects, for instance from a ``prefix:`` the
caller resolves (``jaxcam explain`` resolves ``cifar10:`` and ``imagenet:``).
"""

from __future__ import annotations

import bisect
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from jaxcam.batch._decode import DEFAULT_MAX_PIXELS, read_image_checked
from jaxcam.batch._names import expand_inputs, number_clashes, read_file_list, unique_names

__all__ = ["InputSource", "FileSource", "SourceFactory", "Inputs", "list_inputs", "class_index"]


@runtime_checkable
class InputSource(Protocol):
    """A group of inputs, each loaded when asked for (from worker threads: be thread safe).

    Attributes:
      keys: one string per input naming it for the results (a path, ``cifar10-test:PATH#i``).
      names: one output name per input (pictures are ``<name>_exits.png``), distinct ignoring
        case within the source.
      crop: ImageNet's resize-and-centre-crop for these inputs (True), a whole-image resize
        (False), or None for the run's :class:`~jaxcam.batch.Preprocessing` default.
    """

    keys: Sequence[str]
    names: Sequence[str]
    crop: bool | None

    def load(self, i: int, max_pixels: int) -> np.ndarray:
        """Input ``i`` decoded, (H, W, 3) RGB on the 0..255 scale; raises ``InputError``."""
        ...

    def class_name(self, i: int) -> str | None:
        """The class input ``i`` carries (a folder's name, a data set's label), or None."""
        ...


class FileSource:
    """Image files; each one's class is its parent folder's name.

    Args:
      paths: the files, in order.
      crop: as :attr:`InputSource.crop`.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], crop: bool | None = None):
        self.paths = [str(p) for p in paths]
        self.keys = self.paths
        self.names = unique_names([Path(p) for p in self.paths])
        self.crop = crop

    def load(self, i: int, max_pixels: int) -> np.ndarray:
        return read_image_checked(self.paths[i], max_pixels)

    def class_name(self, i: int) -> str | None:
        return Path(self.paths[i]).parent.name


@dataclasses.dataclass
class Inputs:
    """The inputs of a run, in a fixed order, each loaded on demand.

    Attributes:
      keys: one string per input naming it: the file's path, or ``cifar10-test:PATH#i``.
      names: output names, distinct ignoring case (file stems, see
        :func:`jaxcam.batch.unique_names`; ``cifar10-test_00042`` for data set images).
      errors: ``(input, reason)`` for command-line inputs that designate nothing.
    """

    keys: list[str]
    names: list[str]
    errors: list[tuple[str, str]]
    _segments: list[tuple[int, InputSource]] = dataclasses.field(repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    def _find(self, i: int) -> tuple[InputSource, int]:
        starts = [s for s, _ in self._segments]
        k = bisect.bisect_right(starts, i) - 1
        start, source = self._segments[k]
        return source, i - start

    def load(self, i: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Input ``i`` decoded: (H, W, 3) RGB on the 0..255 scale.

        Args:
          i: the input's position.
          max_pixels: largest width x height accepted.

        Returns:
          The decoded image.

        Raises:
          InputError: it cannot be read or decoded (the message says why).
        """
        source, j = self._find(i)
        return source.load(j, max_pixels)

    def crop(self, i: int) -> bool | None:
        """Whether input ``i`` gets ImageNet's centre crop (None: the run's default)."""
        return self._find(i)[0].crop

    def class_name(self, i: int) -> str | None:
        """The class name input ``i`` carries (its parent folder's or the data set's)."""
        source, j = self._find(i)
        return source.class_name(j)

    def label(self, i: int, classes: Mapping[str, int]) -> int | None:
        """The class of input ``i`` as an index of ``classes`` (see :func:`class_index`).

        Args:
          i: the input's position.
          classes: class name -> index.

        Returns:
          The index, or None when unknown.
        """
        name = self.class_name(i)
        if name is None:
            return None
        return classes.get(name, classes.get(name.lower()))


def class_index(class_names: Sequence[str]) -> dict[str, int]:
    """``{name: index}`` for exact names and, where unambiguous, lower-cased ones."""
    out = {str(c).lower(): i for i, c in reversed(list(enumerate(class_names)))}
    out.update({str(c): i for i, c in enumerate(class_names)})
    return out


#: Resolves the text after a ``prefix:`` into a source; raises FileNotFoundError when it
#: designates nothing (recorded as that input's error) and ValueError when it is malformed.
SourceFactory = Callable[[str], InputSource]


class _Listing:
    """The inputs gathered so far; files named twice (anywhere) are taken once."""

    def __init__(self) -> None:
        self.segments: list[tuple[int, InputSource]] = []
        self.keys: list[str] = []
        self.names: list[str] = []
        self.errors: list[tuple[str, str]] = []
        self._seen: set[str] = set()

    def add(self, source: InputSource) -> None:
        if isinstance(source, FileSource):
            fresh = [p for p in source.paths if os.path.abspath(p) not in self._seen]
            self._seen.update(os.path.abspath(p) for p in fresh)
            if len(fresh) != len(source.paths):
                source = FileSource(fresh, source.crop)
        if len(source.keys):
            self.segments.append((len(self.keys), source))
            self.keys.extend(source.keys)
            self.names.extend(source.names)


def list_inputs(inputs: Sequence[str], files_from: Sequence[str] = (),
                prefixes: Mapping[str, SourceFactory] | None = None) -> Inputs:
    """List what to explain, in a deterministic order (the same in every process).

    Args:
      inputs: image files, directories (recursive, sorted), glob patterns (sorted matches), and
        ``PREFIX:REST`` items for the ``prefixes`` given (prefixes match ignoring case).
      files_from: text files listing image paths one a line (relative to the current
        directory; ``-`` is standard input), appended in their order.
      prefixes: ``{prefix: factory}``; a factory turns the text after ``prefix:`` into an
        :class:`InputSource`.

    Returns:
      The :class:`Inputs`; a file named twice is taken once.

    Raises:
      FileNotFoundError: a ``--files-from`` list cannot be read.
      ValueError: a source is malformed (its factory says how).
    """
    factories = {k.lower(): f for k, f in (prefixes or {}).items()}
    listing = _Listing()
    plain: list[str] = []

    def flush_plain() -> None:
        if plain:
            found, errs = expand_inputs(plain)
            listing.errors.extend(errs)
            listing.add(FileSource(found))
            plain.clear()

    for item in inputs:
        prefix, _, rest = item.partition(":")
        factory = factories.get(prefix.lower()) if rest else None
        if factory is None:
            plain.append(item)
            continue
        flush_plain()
        try:
            listing.add(factory(rest))
        except FileNotFoundError as exc:
            listing.errors.append((item, str(exc)))
    flush_plain()
    for path in files_from:
        listing.add(FileSource(read_file_list(path)))
    return Inputs(keys=listing.keys, names=number_clashes(listing.names), errors=listing.errors,
                  _segments=listing.segments)

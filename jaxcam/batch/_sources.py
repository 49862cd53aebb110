"""What to explain: a deterministic list of inputs, each read on demand so that a data set never
has to fit in memory.

Image files are built in; other kinds of input (a data set archive, a folder layout with its
own preprocessing) come as :class:`InputSource` objects, for instance from a ``prefix:`` the
caller resolves (``jaxcam explain`` resolves ``cifar10:`` and ``imagenet:``).
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from jaxcam.batch._decode import (
    DEFAULT_MAX_PIXELS,
    PixelBudget,
    decode_checked,
    file_version,
    read_file_checked,
)
from jaxcam.batch._names import (
    expand_inputs,
    is_output,
    number_clashes,
    read_file_list,
    unique_names,
)

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
        return self.read(i, max_pixels)[0]

    def read(self, i: int, max_pixels: int, budget: PixelBudget | None = None,
             content_hash: bool = False) -> tuple[np.ndarray, str]:
        """File ``i`` decoded, and the version of the bytes decoded (see :meth:`version`).

        Raises:
          InputError: not a regular file, unreadable, or refused by
            :func:`~jaxcam.batch.decode_checked` (its version is then in the message's
            exception attribute ``version``).
        """
        data, version = read_file_checked(self.paths[i], content_hash)
        try:
            return decode_checked(data, max_pixels, budget), version
        except ValueError as exc:
            exc.version = version  # type: ignore[attr-defined]
            raise

    def version(self, i: int, content_hash: bool = False) -> str:
        """File ``i``'s size and modification time (or content hash) now: a shard whose record
        differs is recomputed."""
        return file_version(self.paths[i], content_hash)

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

    def read(self, i: int, max_pixels: int = DEFAULT_MAX_PIXELS,
             budget: PixelBudget | None = None, content_hash: bool = False
             ) -> tuple[np.ndarray, str]:
        """Input ``i`` decoded under ``budget``, with the version of what was decoded.

        Args:
          i: the input's position.
          max_pixels: largest width x height accepted.
          budget: pixels decoding threads may hold together.
          content_hash: versions by content hash instead of size and modification time.

        Returns:
          ``(image, version)``; sources without versions give ``""``.

        Raises:
          InputError: it cannot be read or decoded.
        """
        source, j = self._find(i)
        if isinstance(source, FileSource):
            return source.read(j, max_pixels, budget, content_hash)
        return source.load(j, max_pixels), self.version(i, content_hash)

    def version(self, i: int, content_hash: bool = False) -> str:
        """What input ``i`` is now: a file's size and mtime (or content hash); a source's
        ``version(j)`` if it has one; else ``""`` (the key alone identifies it)."""
        source, j = self._find(i)
        if isinstance(source, FileSource):
            return source.version(j, content_hash)
        version = getattr(source, "version", None)
        return "" if version is None else str(version(j))

    def excluding(self, folder: str | os.PathLike) -> Inputs:
        """These inputs without the files a run writes into the output folder ``folder``
        (directly in it or in its ``shards/``; dropped silently: they are the run's own
        outputs), named as if listed without them; ``self`` when there are none."""
        real = os.path.realpath(folder)
        inside = [p for _, src in self._segments if isinstance(src, FileSource)
                  for p in src.paths if is_output(p, [real])]
        if not inside:
            return self
        listing = _Listing([real], report=False)
        listing.errors.extend(self.errors)
        for _, source in self._segments:
            listing.add(source)
        return Inputs(keys=listing.keys, names=number_clashes(listing.names),
                      errors=listing.errors, _segments=listing.segments)

    def identity(self) -> str:
        """A hash of what the run's input list is: every key and whether it is centre-cropped
        (``imagenet:DIR`` and ``DIR`` name the same files but make other model inputs)."""
        h = hashlib.sha256()
        for start, source in self._segments:
            h.update(f"\0segment {start} crop={source.crop}\n".encode())
            for key in source.keys:
                h.update(key.encode("utf-8", "surrogateescape") + b"\n")
        return h.hexdigest()[:20]

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

    def __init__(self, exclude: Sequence[str], report: bool = True) -> None:
        self.exclude = [os.path.realpath(p) for p in exclude]
        self.report = report
        self.segments: list[tuple[int, InputSource]] = []
        self.keys: list[str] = []
        self.names: list[str] = []
        self.errors: list[tuple[str, str]] = []
        self._seen: set[str] = set()

    def add(self, source: InputSource) -> None:
        if isinstance(source, FileSource):
            fresh = []
            for p in source.paths:
                real = os.path.realpath(p)
                if is_output(real, self.exclude):
                    if self.report:
                        self.errors.append((p, "one of the run's own output files: never an "
                                               "input"))
                elif real not in self._seen:
                    self._seen.add(real)
                    fresh.append(p)
            if len(fresh) != len(source.paths):
                source = FileSource(fresh, source.crop)
        if len(source.keys):
            self.segments.append((len(self.keys), source))
            self.keys.extend(source.keys)
            self.names.extend(source.names)


def list_inputs(inputs: Sequence[str], files_from: Sequence[str] = (),
                prefixes: Mapping[str, SourceFactory] | None = None,
                exclude: Sequence[str | os.PathLike] = ()) -> Inputs:
    """List what to explain, in a deterministic order (the same in every process).

    Args:
      inputs: image files, directories (recursive, sorted), glob patterns (sorted matches), and
        ``PREFIX:REST`` items for the ``prefixes`` given (prefixes match ignoring case).
      files_from: text files listing image paths one a line (relative to the current
        directory; ``-`` is standard input), appended in their order.
      prefixes: ``{prefix: factory}``; a factory turns the text after ``prefix:`` into an
        :class:`InputSource`.
      exclude: output folders (``jaxcam explain`` passes ``--out``): the files a run writes
        there (directly in it, or in its ``shards/``) are never inputs, so a run never explains
        its own pictures; a walk skips them, one named explicitly is an error entry.

    Returns:
      The :class:`Inputs`; a file named twice is taken once.

    Raises:
      FileNotFoundError: a ``--files-from`` list cannot be read.
      ValueError: a source is malformed (its factory says how).
    """
    factories = {k.lower(): f for k, f in (prefixes or {}).items()}
    excluded = [os.fspath(p) for p in exclude]
    listing = _Listing(excluded)
    plain: list[str] = []

    def flush_plain() -> None:
        if plain:
            found, errs = expand_inputs(plain, excluded)
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

"""From command-line inputs to files, and from files to distinct, bounded output names.

Walks never follow a symbolic link into a folder they are already inside (a loop) and never
list a folder twice; whatever they cannot list, follow or read is reported with the reason,
never dropped in silence. Paths stay ``str`` with undecodable bytes as surrogate escapes (as
``os.listdir`` gives them), so a file named in any encoding is an input like any other.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxcam.batch._decode import file_kind
from jaxcam.extend.images import IMAGE_EXTENSIONS

__all__ = ["expand_inputs", "unique_names", "read_file_list", "number_clashes", "shown",
           "MAX_NAME", "is_output"]

#: Longest output name: pictures are ``<name>_exits.png``, well below any file system's 255.
MAX_NAME = 100


def shown(text: str) -> str:
    """``text`` printable as UTF-8: undecodable bytes of a file name (surrogate escapes) as
    ``\\xe9`` (for errors.txt, the gallery and the terminal; the files keep their real names)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_output(path: str | os.PathLike, outs: Sequence[str]) -> bool:
    """Whether ``path`` is where a run writes its own files: directly in one of the output
    folders ``outs`` (real paths), or in its ``shards/`` (a folder below, such as a demo's
    ``inputs/``, holds inputs like any other)."""
    parent = os.path.dirname(os.path.realpath(path))
    return any(parent in (d, os.path.join(d, "shards")) for d in outs)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class _Walk:
    """Files below folders, sorted, following links once; problems become error entries."""

    def __init__(self, exclude: Sequence[str]):
        self.exclude = {os.path.realpath(p) for p in exclude}
        self.errors: list[tuple[str, str]] = []
        self._listed: set[tuple[int, int]] = set()

    def files(self, top: str, want=_is_image_name, hidden: bool = False) -> list[str]:
        """Files under ``top`` whose name ``want`` accepts (hidden ones only if ``hidden``)."""
        found: list[str] = []
        self._dir(top, want, hidden, found, ())
        return found

    def _dir(self, path: str, want, hidden: bool, found: list[str],
             ancestors: tuple[tuple[int, int], ...]) -> None:
        real = os.path.realpath(path)
        if any(real == os.path.join(d, "shards") for d in self.exclude):
            return  # the run's own shards
        own_outputs = real in self.exclude  # its pictures: never inputs
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                self.errors.append((path, "symbolic link loop: leads back to a folder it is "
                                          "inside; not followed"))
                return
            if key in self._listed:
                return  # the same folder through another link: its files are listed once
            self._listed.add(key)
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.errors.append((path, f"cannot list folder: {exc.strerror or exc}"))
            return
        for entry in entries:
            if not hidden and entry.name.startswith("."):
                continue
            sub = os.path.join(path, entry.name)
            try:
                is_dir = entry.is_dir()  # follows links
                is_link = entry.is_symlink()
            except OSError as exc:
                self.errors.append((sub, f"cannot read: {exc.strerror or exc}"))
                continue
            if is_dir:
                self._dir(sub, want, hidden, found, (*ancestors, key))
                continue
            if not want(entry.name) or own_outputs:
                continue
            try:
                mode = entry.stat().st_mode
            except OSError as exc:
                reason = (f"broken symbolic link (-> {os.readlink(sub)})" if is_link
                          and not os.path.exists(sub) else f"cannot read: {exc.strerror or exc}")
                self.errors.append((sub, reason))
                continue
            if stat.S_ISREG(mode):
                found.append(sub)
            else:
                self.errors.append((sub, f"not a regular file but a {file_kind(mode)}"))


def _glob_regex(pattern: str) -> re.Pattern:
    """A regular expression for a glob pattern as :func:`glob.glob` with ``recursive=True``
    matches it: ``**`` any number of folders, ``*``/``?`` within one name, not a hidden one."""
    parts = []
    comps = pattern.split("/")
    for k, comp in enumerate(comps):
        last = k == len(comps) - 1
        if comp == "**":
            parts.append("(?:[^/.][^/]*/)*" + ("[^/.][^/]*" if last else ""))
            continue
        piece = "" if comp.startswith(".") else r"(?!\.)"
        i = 0
        while i < len(comp):
            c = comp[i]
            if c == "*":
                piece += "[^/]*"
            elif c == "?":
                piece += "[^/]"
            elif c == "[" and "]" in comp[i + 2:]:
                j = comp.index("]", i + 2)
                body = comp[i + 1:j]
                piece += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                i = j
            else:
                piece += re.escape(c)
            i += 1
        parts.append(piece + ("" if last else "/"))
    return re.compile("".join(parts) + r"\Z", re.S)


def _glob(item: str, walk: _Walk) -> list[str]:
    """Matches of a pattern; ``**`` is walked by :class:`_Walk` (links followed once), since
    :func:`glob.glob` follows link loops until paths reach the system's length limit."""
    if "**" not in item:
        return sorted(glob.glob(item))
    comps = item.split("/")
    k = next(i for i, c in enumerate(comps) if glob.has_magic(c))
    root = "/".join(comps[:k]) or ("/" if item.startswith("/") else ".")
    regex = _glob_regex("/".join(comps[k:]))
    prefix = "" if root == "." and not item.startswith("./") else root.rstrip("/") + "/"
    files = walk.files(root, want=lambda name: True, hidden=True)
    out = []
    for f in files:
        rel = os.path.relpath(f, root).replace(os.sep, "/")
        if regex.match(rel):
            out.append(prefix + rel if prefix else rel)
    return sorted(out)


def expand_inputs(inputs: Sequence[str], exclude: Sequence[str | os.PathLike] = ()
                  ) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files that command-line inputs designate, and what designates nothing or fails.

    A file is taken whatever its name; a directory gives every file with an image extension
    (:data:`jaxcam.extend.images.IMAGE_EXTENSIONS`, any case) below it, recursively, hidden
    ones excepted; anything else is a glob pattern (``**`` recursive), of whose matches the
    files are taken. Symbolic links are followed once: a link back into a folder being walked is
    a loop (reported, not followed), a folder reached twice is listed once. Files named twice
    are taken once, in first-seen order; directories and patterns are sorted. Only regular
    files are inputs: a named pipe, device or socket, a broken link, an unreadable folder are
    reported with the reason. The files a run writes (directly in an ``exclude`` folder, the
    run's output folder, or in its ``shards/``) are never taken.

    Args:
      inputs: the INPUT arguments.
      exclude: output folders whose own files are never inputs.

    Returns:
      ``(files, errors)`` with ``errors`` holding ``(input, reason)`` pairs.
    """
    files: list[Path] = []
    seen: set[str] = set()
    walk = _Walk([os.fspath(p) for p in exclude])
    errors = walk.errors

    def inside_excluded(path: str) -> bool:
        return is_output(path, list(walk.exclude))

    def add(found: Sequence[str], named: bool = False) -> None:
        for path in found:
            if inside_excluded(path):
                if named:
                    errors.append((path, "one of the run's own output files: never an "
                                         "input"))
                continue
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                files.append(Path(path))

    def regular(path: str) -> bool:
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            reason = (f"broken symbolic link (-> {os.readlink(path)})" if os.path.islink(path)
                      else f"cannot read: {exc.strerror or exc}")
            errors.append((path, reason))
            return False
        if stat.S_ISREG(mode):
            return True
        if not stat.S_ISDIR(mode):
            errors.append((path, f"not a regular file but a {file_kind(mode)}"))
        return False

    for item in inputs:
        if os.path.lexists(item) and not os.path.isdir(item):
            if regular(item):
                add([item], named=True)
        elif os.path.isdir(item):
            before = len(files)
            add(walk.files(item))
            if len(files) == before and not any(e[0].startswith(item) for e in errors):
                errors.append((item, f"directory holds no images ({', '.join(IMAGE_EXTENSIONS)})"))
        elif glob.has_magic(item):
            found = [p for p in _glob(item, walk) if not os.path.isdir(p) and regular(p)]
            if not found:
                errors.append((item, "pattern matches no files"))
            add(found)
        else:
            errors.append((item, "no such file or directory"))
    return files, errors


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"


def _candidates(files: Sequence[Path], parts: list[list[str]], depth: list[int],
                suffix: list[bool]) -> list[str]:
    names = []
    for i, f in enumerate(files):
        parents = parts[i][len(parts[i]) - depth[i]:] if depth[i] else []
        stem = Path(f).stem + (Path(f).suffix if suffix[i] else "")
        names.append("__".join(_safe(p) for p in [*parents, stem]))
    return names


def unique_names(files: Sequence[Path]) -> list[str]:
    """One output name per file, distinct even ignoring case.

    The file's stem where that is unique, else the stem prefixed by as many parent folders as
    tell the clashing files apart (``a__cat`` and ``b__cat`` for ``a/cat.png`` and
    ``b/cat.png``), or with its extension for files of one folder (``cat.png``, ``cat.jpg``),
    or finally numbered. Characters other than letters, digits, ``.``, ``_`` and ``-`` become
    ``_``.

    Args:
      files: the input files.

    Returns:
      One name per file, in order.
    """
    parts = [list(Path(os.path.abspath(f)).parent.parts) for f in files]
    depth = [0] * len(files)
    suffix = [False] * len(files)
    while True:
        names = _candidates(files, parts, depth, suffix)
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            groups.setdefault(name.lower(), []).append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            return names
        progressed = False
        for group in clashes:
            for i in group:
                same_folder = any(parts[j] == parts[i] for j in group if j != i)
                if same_folder and not suffix[i]:
                    suffix[i] = True  # a/cat.png, a/cat.jpg: only the extension tells them apart
                    progressed = True
                elif not same_folder and depth[i] < len(parts[i]) - 1:  # never the root
                    depth[i] += 1
                    progressed = True
        if not progressed:
            return number_clashes(names)  # identical paths up to case or sanitising


def _bounded(name: str) -> str:
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{name[:MAX_NAME - 9]}-{digest}"


def number_clashes(names: Sequence[str]) -> list[str]:
    """Names distinct ignoring case and at most :data:`MAX_NAME` characters long.

    A longer name is cut and ends with a hash of the whole; the second ``cat`` becomes ``cat-2``
    unless some input is itself named ``cat-2`` (then ``cat-3``...): a name is only ever given
    once, whichever group of inputs it comes from.

    Args:
      names: output names.

    Returns:
      The names, distinct ignoring case.
    """
    bounded = [_bounded(n) for n in names]
    wanted = {n.lower() for n in bounded}
    taken: set[str] = set()
    out = []
    for name in bounded:
        candidate, k = name, 1
        while candidate.lower() in taken or (k > 1 and candidate.lower() in wanted):
            k += 1
            candidate = f"{name}-{k}"
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def read_file_list(path: str) -> list[str]:
    """Paths listed one a line in a file (``-``: standard input); blank and ``#`` lines skipped.

    Args:
      path: the list's file.

    Returns:
      The listed paths, in order.

    Raises:
      FileNotFoundError: the list cannot be read.
    """
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"--files-from {path}: cannot read it ({exc.strerror or exc}); "
                                f"expected a text file with one image path a line") from None
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]

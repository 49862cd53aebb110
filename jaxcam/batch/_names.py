"""From command-line inputs to files, and from files to distinct output names."""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxcam.extend.images import IMAGE_EXTENSIONS

__all__ = ["expand_inputs", "unique_names", "read_file_list", "number_clashes"]


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files that command-line inputs designate, and the inputs that designate nothing.

    A file is taken whatever its name; a directory gives every file with an image extension
    (:data:`jaxcam.extend.images.IMAGE_EXTENSIONS`, any case) below it, recursively, hidden
    ones excepted; anything else is a glob pattern (``**`` recursive), of whose matches the
    files are taken. Files named twice are taken once, in first-seen order; directories and
    patterns are sorted.

    Args:
      inputs: the INPUT arguments.

    Returns:
      ``(files, errors)`` with ``errors`` holding ``(input, reason)`` pairs.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    errors: list[tuple[str, str]] = []

    def add(found: Sequence[Path]) -> None:
        for path in found:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)

    for item in inputs:
        path = Path(item)
        if path.is_file():
            add([path])
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                errors.append((item, f"directory holds no images ({', '.join(IMAGE_EXTENSIONS)})"))
            add(found)
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
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


def number_clashes(names: Sequence[str]) -> list[str]:
    """Number names that clash ignoring case: the second ``cat`` becomes ``cat-2``.

    Args:
      names: output names.

    Returns:
      The names, distinct ignoring case.
    """
    counts: dict[str, int] = {}
    out = []
    for name in names:
        n = counts.get(name.lower(), 0)
        counts[name.lower()] = n + 1
        out.append(name if n == 0 else f"{name}-{n + 1}")
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

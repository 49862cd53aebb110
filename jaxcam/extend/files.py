"""Writing files so that a kill at any moment leaves the old file or the whole new one.

Shared by the data-set engine (shards, manifests) and :mod:`msdnet_flax` (checkpoints, logs), so
both have the same durability: the temporary file is fsynced before the rename, the directory after.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_text"]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename still happened
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` atomically with ``data``.

    The content goes to ``.<name>.tmp<pid>`` beside ``path`` (fsynced), is renamed over ``path``
    with ``os.replace``, and the directory is fsynced. On any error the temporary file is removed
    and ``path`` is untouched.

    Args:
      path: the file to write; its parent directories are created.
      data: the bytes, or a function that writes them into the open binary file (e.g.
        ``lambda f: np.savez(f, **arrays)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of ``text`` encoded as UTF-8."""
    atomic_write(path, text.encode("utf-8"))

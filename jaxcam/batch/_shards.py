"""Shards: which inputs each output file holds, who computes it, and writing it atomically.

Shard ``j`` holds inputs ``j * S .. (j + 1) * S - 1`` of the run's input list, whatever the
number of processes, devices or the batch size; process ``p`` of ``P`` computes the shards with
``j % P == p``. A shard file exists only once complete (written to a temporary name, then
renamed), and records the run's fingerprint, so a re-run recognises finished work exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxcam.extend.files import atomic_write, atomic_write_text

__all__ = ["shard_ranges", "owned_shards", "shard_path", "write_shard", "read_shard_meta",
           "fingerprint", "atomic_write_text", "SHARD_DIR", "MANIFEST", "ERRORS", "OutputError",
           "remove_leftovers", "write_file_fast"]

SHARD_DIR = "shards"
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
# Small per-image fields read when indexing or finishing a run (the maps are never needed then).
META_FIELDS = ("shard", "fingerprint", "index", "files", "names", "labels", "sizes", "logits",
               "targets", "err_index", "err_files", "err_reasons")


class OutputError(OSError):
    """The output folder cannot be written (read-only, full, gone); nothing written so far is
    lost, and the same command finishes the run once the cause is fixed.

    Args:
      out: the output folder.
      what: what could not be written.
      cause: the underlying error.
    """

    def __init__(self, out: Path | str, what: str, cause: BaseException):
        reason = getattr(cause, "strerror", None) or str(cause)
        super().__init__(f"{what} in {out}: {reason}")
        self.out = Path(out)


def remove_leftovers(out: Path) -> int:
    """Remove the temporary files (``.NAME.tmpPID``) that killed writers left in ``out`` and
    its shard folder; call only when no writer of this run can be running. Returns how many."""
    n = 0
    for folder in (Path(out), Path(out) / SHARD_DIR):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            stem, _, pid = name.rpartition(".tmp")
            if name.startswith(".") and stem and pid.isdigit():
                try:
                    os.unlink(folder / name)
                    n += 1
                except OSError:
                    pass
    return n


def write_file_fast(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name, then rename: a kill leaves the old
    file or the whole new one, never a part (not fsynced: pictures are redone if lost; the
    shard that lists them is the durable record)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def shard_ranges(n: int, shard_size: int) -> list[range]:
    """The input indices of every shard: consecutive blocks of ``shard_size``."""
    return [range(s, min(n, s + shard_size)) for s in range(0, n, shard_size)]


def owned_shards(n_shards: int, process: int, processes: int) -> list[int]:
    """The shards process ``process`` of ``processes`` computes (round-robin, so all processes
    get the same number of inputs to within one shard)."""
    return list(range(process, n_shards, processes))


def shard_path(out: Path, j: int) -> Path:
    """``out/shards/shard-00000j.npz``."""
    return Path(out) / SHARD_DIR / f"shard-{j:06d}.npz"


def fingerprint(settings: Mapping[str, Any]) -> str:
    """A short hash of everything that decides a run's results (JSON-serialisable settings)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def write_shard(path: Path, arrays: Mapping[str, np.ndarray], compressed: bool = False) -> None:
    """Write arrays as an ``.npz`` atomically; uncompressed by default (fast: random-looking
    float maps hardly compress)."""
    save = np.savez_compressed if compressed else np.savez
    atomic_write(path, lambda f: save(f, **arrays))


def read_shard_meta(path: Path, fingerprint_: str | None = None, j: int | None = None,
                    fields: tuple[str, ...] = META_FIELDS) -> dict[str, np.ndarray] | None:
    """A shard's per-image fields, or None if it is missing, unreadable, or from another run.

    Args:
      path: the shard file.
      fingerprint_: the run's fingerprint it must carry (None: any).
      j: the shard index it must carry (None: any).
      fields: which arrays to read.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            if fingerprint_ is not None and str(data["fingerprint"]) != fingerprint_:
                return None
            if j is not None and int(data["shard"]) != j:
                return None
            return {k: data[k] for k in fields}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None

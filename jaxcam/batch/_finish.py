"""The end of a run (process 0): errors, manifest, the merged ``cams.npz`` and the gallery, all
regenerated from the shards' own records, so a resumed run lists nothing twice."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcam.batch._extras import GalleryExtras
from jaxcam.batch._names import shown
from jaxcam.batch._pictures import Pictures, gallery_entry
from jaxcam.batch._reader import Result
from jaxcam.batch._shards import (
    ERRORS,
    MANIFEST,
    SHARD_DIR,
    atomic_write_text,
    read_shard_meta,
    remove_leftovers,
    shard_path,
    shard_ranges,
    write_shard,
)
from jaxcam.viz import write_gallery

__all__ = ["valid_shard", "shard_state", "finish_run", "MANIFEST", "ERRORS"]

_LIGHT = ("index", "err_index", "err_files", "err_reasons")


def valid_shard(out: Path, j: int, fingerprint: str, expected: range,
                fields: tuple[str, ...] = _LIGHT) -> dict[str, np.ndarray] | None:
    """Shard ``j``'s record if its file is complete, of this run, and accounts for exactly the
    inputs ``expected`` (each explained or failed); else None (it must be computed)."""
    meta = read_shard_meta(shard_path(out, j), fingerprint, j,
                           tuple(dict.fromkeys(("shard", "fingerprint", *_LIGHT, *fields))))
    if meta is None:
        return None
    done = set(meta["index"].tolist()) | set(meta["err_index"].tolist())
    return meta if done == set(expected) else None


def shard_state(out: Path, j: int, fingerprint: str, expected: range,
                version: Callable[[int, bool], str]) -> str:
    """``"done"`` if shard ``j`` is valid (:func:`valid_shard`) and every input is still what it
    was when decoded (``version(i, content_hash)`` equals the recorded one), ``"changed"`` if
    it is valid but an input changed since, ``"missing"`` otherwise."""
    meta = valid_shard(out, j, fingerprint, expected,
                       fields=("ver_index", "versions", "content_hash"))
    if meta is None:
        return "missing"
    recorded = dict(zip(meta["ver_index"].tolist(), meta["versions"].tolist(), strict=True))
    content = bool(meta["content_hash"])
    if set(recorded) != set(expected):
        return "changed"
    return "done" if all(version(i, content) == recorded[i] for i in expected) else "changed"


def _merged_npz(path: Path, out: Path, n_shards: int, fingerprint: str, exits: Sequence[int],
                class_names: Sequence[str], method: str, map_dtype: str, size: int) -> None:
    fields = ("maps", "logits", "targets", "labels", "files", "names")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in fields}
    for j in range(n_shards):
        meta = read_shard_meta(shard_path(out, j), fingerprint, j, fields)
        if meta is None or not len(meta["files"]):
            continue
        for k in fields:
            parts[k].append(meta[k])
    k = len(exits)
    if parts["files"]:
        arrays = {f: np.concatenate(parts[f], axis=1 if f in ("maps", "logits", "targets")
                                    else 0) for f in fields}
    else:
        arrays = {"maps": np.zeros((k, 0, size, size), map_dtype),
                  "logits": np.zeros((k, 0, len(class_names)), np.float32),
                  "targets": np.zeros((k, 0), np.int32), "labels": np.zeros((0,), np.int32),
                  "files": np.zeros((0,), str), "names": np.zeros((0,), str)}
    write_shard(path, {**arrays, "exits": np.asarray(exits, np.int32),
                       "class_names": np.asarray(class_names, dtype=str),
                       "method": np.asarray(method)}, compressed=True)


def _gallery_entries(out: Path, n_shards: int, fingerprint: str, pictures: Pictures,
                     extras: GalleryExtras | None) -> list[dict[str, Any]]:
    """One gallery entry per explained input, read back from the shards in input order."""
    fields = ("index", "files", "names", "labels", "logits", "targets", "sizes")
    if extras is not None and extras.columns is not None:
        fields += ("maps",)  # only the caller's columns look at the maps
    exits = np.asarray(pictures.exit_numbers, np.int32)
    entries = []
    for j in range(n_shards):
        meta = read_shard_meta(shard_path(out, j), fingerprint, j, fields)
        if meta is None:
            continue
        for t in range(len(meta["files"])):
            result = Result(file=str(meta["files"][t]), name=str(meta["names"][t]),
                            index=int(meta["index"][t]), label=int(meta["labels"][t]),
                            size=(int(meta["sizes"][t, 0]), int(meta["sizes"][t, 1])),
                            maps=meta["maps"][:, t] if "maps" in meta else np.zeros((0,)),
                            logits=meta["logits"][:, t], targets=meta["targets"][:, t],
                            exits=exits)
            entries.append(gallery_entry(pictures, result, extras))
    return entries


def finish_run(out: Path, *, n_inputs: int, shard_size: int, fingerprint: str,
               input_errors: Sequence[tuple[str, str]], manifest: Mapping[str, Any],
               cams_npz: bool, pictures: Pictures | None, gallery_settings: Mapping[str, Any],
               map_dtype: str, image_size: int,
               extras: GalleryExtras | None = None) -> dict[str, Any]:
    """Write ``errors.jsonl``, ``errors.txt``, the final ``manifest.json`` and, if asked,
    ``cams.npz`` and ``index.html``, from the shards on disk.

    Args:
      out: the output directory.
      n_inputs: inputs in the run.
      shard_size: inputs per shard.
      fingerprint: the run's fingerprint (shards of other runs are ignored).
      input_errors: ``(input, reason)`` for command-line inputs that designate nothing.
      manifest: the run's description (settings, exits, classes...), completed here.
      cams_npz: also merge every shard into ``cams.npz``.
      pictures: the picture settings when grids were drawn (then ``index.html`` is written).
      gallery_settings: the gallery's settings table.
      map_dtype: dtype of the stored maps.
      image_size: side of the maps.
      extras: the caller's additions to the gallery.

    Returns:
      The manifest as written (``complete`` is False if a shard is missing).
    """
    # Every process has passed the final barrier: nothing is being written any more, so
    # temporary files left by killed writers (shards, pictures, an interrupted merge) can go.
    remove_leftovers(out)
    ranges = shard_ranges(n_inputs, shard_size)
    shards, missing = [], []
    errors: list[dict[str, Any]] = [{"index": None, "file": f, "reason": r}
                                    for f, r in input_errors]
    explained = 0
    for j, expected in enumerate(ranges):
        meta = valid_shard(out, j, fingerprint, expected)
        if meta is None:
            missing.append(j)
            continue
        explained += len(meta["index"])
        errors += [{"index": int(i), "file": str(f), "reason": str(r)} for i, f, r in
                   zip(meta["err_index"], meta["err_files"], meta["err_reasons"], strict=True)]
        shards.append({"file": f"{SHARD_DIR}/{shard_path(out, j).name}", "shard": j,
                       "first": expected.start, "count": len(expected),
                       "explained": int(len(meta["index"])),
                       "failed": int(len(meta["err_index"]))})
    lines = "".join(json.dumps(e) + "\n" for e in errors)
    atomic_write_text(out / ERRORS, lines)
    atomic_write_text(out / "errors.txt", "".join(f"{shown(e['file'])}\t{shown(e['reason'])}\n"
                                                  for e in errors))
    written = {"shards": f"{SHARD_DIR}/", "errors": ERRORS}
    complete = not missing
    if complete and cams_npz:
        _merged_npz(out / "cams.npz", out, len(ranges), fingerprint, manifest["exits"],
                    manifest["class_names"], manifest["method"], map_dtype, image_size)
        written["cams.npz"] = "cams.npz"
    if complete and pictures is not None and pictures.grid:
        entries = _gallery_entries(out, len(ranges), fingerprint, pictures, extras)
        failed = [(shown(e["file"]), shown(e["reason"])) for e in errors]
        write_gallery(out, entries, {**gallery_settings, "images explained": explained,
                                     "failed inputs": len(failed)}, errors=failed,
                      warning=None if extras is None else extras.warning)
        written["gallery"] = "index.html"
    final = {**manifest, "complete": complete, "inputs": n_inputs, "explained": explained,
             "failed": len(errors), "missing_shards": missing, "shards": shards,
             "outputs": written,
             "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    atomic_write_text(out / MANIFEST, json.dumps(final, indent=1) + "\n")
    final["errors_list"] = [(e["file"], e["reason"]) for e in errors]
    return final

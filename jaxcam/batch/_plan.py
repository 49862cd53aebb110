"""A run's settings: the job as given, and what is decided from it before anything is computed
(map dtype, pictures, shard size, the fingerprint a resumed run must match)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcam.batch._decode import DEFAULT_MAX_PIXELS
from jaxcam.batch._distributed import gather_counts
from jaxcam.batch._preprocessing import Preprocessing
from jaxcam.batch._shards import MANIFEST, SHARD_DIR, fingerprint
from jaxcam.batch._sources import Inputs

__all__ = ["BatchJob", "RunMismatchError", "SMALL_RUN", "model_digest", "Plan", "plan_run",
           "check_out", "agree", "micro_batch"]

# Up to this many inputs a run is "small": by default it also writes every picture, the
# gallery and a merged cams.npz with float32 maps: a folder of photos is small enough to look at.
SMALL_RUN = 1000
_SHARD_BYTES = 64 << 20  # aim for shards of about this size (bounds the writer's memory)


class RunMismatchError(ValueError):
    """The output directory holds a run with other settings or inputs."""


@dataclasses.dataclass
class BatchJob:
    """What to explain and where the results go.

    Attributes:
      out: output directory.
      method: an ``explain_exits`` method.
      exits: 0-based exits to explain (None: all).
      target: ``"pred"``, ``"true"`` (the input's folder or data set class) or a class index.
      compare: further methods drawn as extra grid rows (pictures only).
      cam_exit: position in ``exits`` of the exit drawn on ``<name>_cam.png``.
      batch_size: images per device step (rounded up to a multiple of the device count).
      shard_size: inputs per shard file; None: about 64 MB of maps, 16..1024.
      map_dtype: ``"float16"``, ``"float32"`` or ``"auto"`` (float32 for small runs).
      save_images: ``"none"``, ``"overlay"``, ``"grid"``, ``"all"`` or ``"auto"`` (all for
        small runs, none otherwise).
      cams_npz: ``"yes"``, ``"no"`` or ``"auto"`` (yes for small runs): merge the shards into
        one ``cams.npz`` at the end.
      workers: decoding threads (default: the usable cores, at least 2).
      prefetch: batches prepared ahead of the devices.
      max_pixels: largest width x height an input may declare.
      overwrite: discard a different run found in ``out`` instead of refusing.
      micro_batch: examples a device computes together through one compiled loop body (see
        :class:`~jaxcam.batch.ExplainStep`); a fixed number (default 32) gives every input
        bit-identical maps and logits whatever its position, the batch size, the device or
        process count, or resumes (the batch size is rounded up to a multiple of it times the
        devices). None computes each device's whole share of a batch at once: results then
        change with the batch size (on an H200 by up to 5e-2 between batch 64 and 7 for an
        untrained MSD-Net).
      content_hash: recognise changed inputs by a SHA-256 of their bytes (a re-run reads every
        input again to check) instead of their size and modification time.
      settings: extra lines for the gallery's settings table.
    """

    out: Path
    method: str = "gradcam"
    exits: tuple[int, ...] | None = None
    target: str | int = "pred"
    compare: tuple[str, ...] = ()
    cam_exit: int = -1
    batch_size: int = 32
    shard_size: int | None = None
    map_dtype: str = "auto"
    save_images: str = "auto"
    cams_npz: str = "auto"
    workers: int | None = None
    prefetch: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    overwrite: bool = False
    micro_batch: int | None = 32
    content_hash: bool = False
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def model_digest(model: Any) -> str:
    """A hash of a model's parameters and configuration (part of a run's fingerprint)."""
    from flax import nnx

    h = hashlib.sha256(repr(getattr(model, "config", type(model))).encode())
    for leaf in jax.tree.leaves(nnx.state(model)):
        a = np.asarray(leaf)
        h.update(str((a.shape, a.dtype)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:20]


def micro_batch(job: BatchJob) -> int | None:
    """``job.micro_batch`` as an int (or None), for the fingerprint and the step."""
    return None if job.micro_batch is None else max(1, int(job.micro_batch))


def _resolve(job: BatchJob, n: int, k: int, size: int) -> tuple[str, str, bool, int]:
    """``(map dtype, pictures, merge cams.npz, shard size)`` with the ``auto`` values decided."""
    small = n <= SMALL_RUN
    dtype = job.map_dtype if job.map_dtype != "auto" else ("float32" if small else "float16")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"map_dtype must be float16, float32 or auto, got {dtype!r}")
    save = job.save_images if job.save_images != "auto" else ("all" if small else "none")
    if save not in ("none", "overlay", "grid", "all"):
        raise ValueError(f"save_images must be none, overlay, grid, all or auto, got {save!r}")
    if job.cams_npz not in ("yes", "no", "auto"):
        raise ValueError(f"cams_npz must be yes, no or auto, got {job.cams_npz!r}")
    merge = job.cams_npz == "yes" or (job.cams_npz == "auto" and small)
    shard = job.shard_size
    if shard is None:
        per_image = k * size * size * np.dtype(dtype).itemsize
        shard = int(min(1024, max(16, _SHARD_BYTES // per_image)))
    if shard < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard}")
    return dtype, save, merge, shard


def check_out(out: Path, fp: str, settings: Mapping[str, Any], overwrite: bool,
              first: bool) -> None:
    """Refuse an output directory that holds another run (or, with ``overwrite``, clear it).

    Args:
      out: the output directory.
      fp: this run's fingerprint.
      settings: this run's settings (named in the refusal where they differ).
      overwrite: clear another run instead of refusing.
      first: this is process 0 (the one that clears).

    Raises:
      RunMismatchError: ``out`` holds another run and ``overwrite`` is False.
    """
    path = out / MANIFEST
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if old.get("fingerprint") == fp:
        return
    if not overwrite:
        before = old.get("run", {})
        differ = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        raise RunMismatchError(
            f"{out} holds another run (different {', '.join(differ) or 'settings'}); use "
            f"another --out, or --overwrite to discard it")
    if first:  # shards of another run would be ignored anyway; remove them to free the space
        for p in (out / SHARD_DIR).glob("shard-*.npz"):
            p.unlink()
        for name in ("cams.npz", "errors.jsonl", "errors.txt", "index.html", MANIFEST):
            (out / name).unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class Plan:
    """A run's settings as decided from the job, the inputs and the model.

    Attributes:
      exits: 0-based exits explained; exit_numbers: the same from 1.
      cam_pos: position in ``exits`` of the overlay's exit.
      map_dtype: dtype of the stored maps.
      save: pictures written: ``none``, ``overlay``, ``grid`` or ``all``.
      merge: write the merged ``cams.npz``.
      shard_size: inputs per shard.
      settings: everything the shards depend on; fingerprint: its hash.
    """

    exits: tuple[int, ...]
    exit_numbers: tuple[int, ...]
    cam_pos: int
    map_dtype: str
    save: str
    merge: bool
    shard_size: int
    settings: dict[str, Any]
    fingerprint: str


def plan_run(model: Any, prep: Preprocessing, inputs: Inputs, job: BatchJob) -> Plan:
    """Decide a run's settings from the job, the inputs and the model.

    Args:
      model: the multi-exit model (``num_exits``; its parameters are hashed).
      prep: its preprocessing.
      inputs: the run's inputs.
      job: the settings asked for.

    Returns:
      The :class:`Plan`.

    Raises:
      ValueError: an unknown ``map_dtype``, ``save_images`` or ``cams_npz``, or a shard size
        below 1.
    """
    exits = tuple(range(model.num_exits)) if job.exits is None else tuple(job.exits)
    dtype, save, merge, shard_size = _resolve(job, len(inputs), len(exits), prep.image_size)
    cam_pos = job.cam_exit % len(exits)
    # Everything that changes the shards' contents: a resumed run must match all of it.
    # The inputs' identity covers their keys and per-input preprocessing (centre crop or not);
    # their contents are checked per shard (a changed input recomputes its shard, not the run).
    settings = {"inputs": inputs.identity(),
                "n_inputs": len(inputs), "model": model_digest(model),
                "image_size": prep.image_size, "crop": prep.crop,
                "mean": list(prep.mean), "std": list(prep.std),
                "method": job.method, "exits": list(exits), "target": job.target,
                "shard_size": shard_size, "map_dtype": dtype, "max_pixels": job.max_pixels,
                # Pictures too: a resumed run must not leave the gallery without its images.
                "save_images": save, "cam_exit": cam_pos, "compare": list(job.compare),
                # It changes results in the last bits: a resumed run must not mix two.
                "micro_batch": micro_batch(job)}
    return Plan(exits=exits, exit_numbers=tuple(k + 1 for k in exits), cam_pos=cam_pos,
                 map_dtype=dtype, save=save, merge=merge, shard_size=shard_size,
                 settings=settings, fingerprint=fingerprint(settings))


def agree(plan: Plan, n_inputs: int, process: int, processes: int) -> None:
    """Refuse a multi-process run whose processes listed different inputs or settings.

    Args:
      plan: this process's plan.
      n_inputs: the inputs it listed.
      process: its index.
      processes: how many there are.

    Raises:
      RunMismatchError: the fingerprints differ between processes.
    """
    if processes == 1:
        return
    # E.g. a different mount path on one host would otherwise split the run silently.
    mine = np.asarray([int(plan.fingerprint[:7], 16)], np.int32)
    if len(set(gather_counts(mine)[:, 0].tolist())) > 1:
        raise RunMismatchError(
            f"the {processes} processes listed different inputs or settings (process "
            f"{process}: {n_inputs} inputs); every process must see the same files under "
            f"the same paths and get the same arguments")



"""``explain_dataset``: a whole run, in one process or several, resumable."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcam.batch._decode import DEFAULT_MAX_PIXELS
from jaxcam.batch._distributed import gather_counts
from jaxcam.batch._engine import ExplainStep
from jaxcam.batch._extras import GalleryExtras
from jaxcam.batch._finish import finish_run, valid_shard
from jaxcam.batch._pictures import Pictures
from jaxcam.batch._pipeline import ShardContext, Timings, run_pipeline
from jaxcam.batch._preprocessing import Preprocessing
from jaxcam.batch._progress import Progress
from jaxcam.batch._shards import (
    MANIFEST,
    SHARD_DIR,
    atomic_write_text,
    fingerprint,
    owned_shards,
    shard_ranges,
)
from jaxcam.batch._sources import Inputs, class_index

__all__ = ["BatchJob", "RunSummary", "RunMismatchError", "explain_dataset", "SMALL_RUN",
           "model_digest"]

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
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunSummary:
    """What a run did.

    Attributes:
      out: the output directory.
      inputs: inputs in the whole run (all processes).
      explained: inputs explained (whole run).
      failed: inputs that failed (whole run, including command-line inputs matching nothing).
      errors: ``(input, reason)`` pairs (process 0 only; empty elsewhere).
      shards: shard files of the run; resumed: those found complete and skipped.
      seconds: wall time of this process; images_per_s: inputs explained by this call in all
        processes (not those resumed) per second of it.
      complete: every shard exists (False if another process failed).
      timings: this process's per-stage seconds (:class:`~jaxcam.batch._pipeline.Timings`).
      processes, devices, batch_size: how it ran.
      compilations: how many times the device step was compiled (0 or 1).
    """

    out: Path
    inputs: int
    explained: int
    failed: int
    errors: list[tuple[str, str]]
    shards: int
    resumed: int
    seconds: float
    images_per_s: float
    complete: bool
    timings: Timings
    processes: int
    devices: int
    batch_size: int
    compilations: int


def model_digest(model: Any) -> str:
    """A hash of a model's parameters and configuration (part of a run's fingerprint)."""
    from flax import nnx

    h = hashlib.sha256(repr(getattr(model, "config", type(model))).encode())
    for leaf in jax.tree.leaves(nnx.state(model)):
        a = np.asarray(leaf)
        h.update(str((a.shape, a.dtype)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:20]


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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


def _check_out(out: Path, fp: str, settings: Mapping[str, Any], overwrite: bool,
               first: bool) -> None:
    """Refuse an output directory that holds another run (or, with ``overwrite``, clear it)."""
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
class _Plan:
    """A run's settings as decided from the job, the inputs and the model."""

    exits: tuple[int, ...]
    exit_numbers: tuple[int, ...]
    cam_pos: int
    map_dtype: str
    save: str
    merge: bool
    shard_size: int
    settings: dict[str, Any]
    fingerprint: str


def _plan(model: Any, prep: Preprocessing, inputs: Inputs, job: BatchJob) -> _Plan:
    exits = tuple(range(model.num_exits)) if job.exits is None else tuple(job.exits)
    dtype, save, merge, shard_size = _resolve(job, len(inputs), len(exits), prep.image_size)
    cam_pos = job.cam_exit % len(exits)
    # Everything that changes the shards' contents: a resumed run must match all of it.
    settings = {"inputs": hashlib.sha256("\n".join(inputs.keys).encode()).hexdigest()[:20],
                "n_inputs": len(inputs), "model": model_digest(model),
                "mean": list(prep.mean), "std": list(prep.std),
                "method": job.method, "exits": list(exits), "target": job.target,
                "shard_size": shard_size, "map_dtype": dtype, "max_pixels": job.max_pixels,
                # Pictures too: a resumed run must not leave the gallery without its images.
                "save_images": save, "cam_exit": cam_pos, "compare": list(job.compare)}
    return _Plan(exits=exits, exit_numbers=tuple(k + 1 for k in exits), cam_pos=cam_pos,
                 map_dtype=dtype, save=save, merge=merge, shard_size=shard_size,
                 settings=settings, fingerprint=fingerprint(settings))


def _agree(plan: _Plan, n_inputs: int, process: int, processes: int) -> None:
    """Refuse a multi-process run whose processes listed different inputs or settings."""
    if processes == 1:
        return
    # E.g. a different mount path on one host would otherwise split the run silently.
    mine = np.asarray([int(plan.fingerprint[:7], 16)], np.int32)
    if len(set(gather_counts(mine)[:, 0].tolist())) > 1:
        raise RunMismatchError(
            f"the {processes} processes listed different inputs or settings (process "
            f"{process}: {n_inputs} inputs); every process must see the same files under "
            f"the same paths and get the same arguments")


def _start_manifest(out: Path, plan: _Plan, prep: Preprocessing, job: BatchJob,
                    processes: int, write: bool) -> dict[str, Any]:
    manifest = {"format": "jaxcam-batch/1", "fingerprint": plan.fingerprint,
                "run": plan.settings, "complete": False, "exits": list(plan.exit_numbers),
                "class_names": list(prep.class_names), "method": job.method,
                "target": job.target, "map_dtype": plan.map_dtype,
                "map_shape": [len(plan.exits), prep.image_size, prep.image_size],
                "shard_size": plan.shard_size, "processes": processes,
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    if write:
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def _pictures(out: Path, plan: _Plan, prep: Preprocessing, job: BatchJob,
              extras: GalleryExtras | None) -> Pictures | None:
    if plan.save == "none":
        return None
    return Pictures(out=out, overlay=plan.save in ("overlay", "all"),
                    grid=plan.save in ("grid", "all"), class_names=prep.class_names,
                    exit_numbers=plan.exit_numbers, cam_pos=plan.cam_pos, method=job.method,
                    target=job.target, compare=tuple(job.compare),
                    title_prefix="" if extras is None else extras.title_prefix)


def _compute(model: Any, prep: Preprocessing, inputs: Inputs, job: BatchJob, plan: _Plan,
             todo: Sequence[range], pictures: Pictures | None, *, out: Path,
             devices: Sequence[jax.Device] | None, progress: bool,
             on_shard: Callable[[int], None] | None) -> tuple[Timings, int, int]:
    """Explain this process's missing shards; returns ``(timings, compilations, batch)``."""
    process, processes = jax.process_index(), jax.process_count()
    step = ExplainStep(model, image_size=prep.image_size, mean=prep.mean, std=prep.std,
                       method=job.method, exits=plan.exits,
                       target="pred" if job.target == "pred" else "index",
                       compare=job.compare, batch_size=job.batch_size, devices=devices)
    ctx = ShardContext(out=out, fingerprint=plan.fingerprint, shard_size=plan.shard_size,
                       map_dtype=plan.map_dtype, exit_numbers=plan.exit_numbers,
                       class_names=prep.class_names, method=job.method, process=process)
    bar = Progress(sum(len(r) for r in todo), "explained" if processes == 1 else
                   f"process 0/{processes} explained", enabled=progress and process == 0)
    try:
        timings = run_pipeline(inputs, todo, step, ctx, prep=prep, target=job.target,
                               classes=class_index(prep.class_names), pictures=pictures,
                               workers=job.workers or max(2, _usable_cores()),
                               prefetch=job.prefetch, max_pixels=job.max_pixels, progress=bar,
                               on_shard=on_shard)
    finally:
        bar.close()
    return timings, step.compilations, step.batch_size


def explain_dataset(model: Any, prep: Preprocessing, inputs: Inputs, job: BatchJob, *,
                    devices: Sequence[jax.Device] | None = None, progress: bool = True,
                    on_shard: Callable[[int], None] | None = None,
                    extras: GalleryExtras | None = None) -> RunSummary:
    """Explain every input into shards under ``job.out``, resuming a previous identical run.

    Every process of a ``jax.distributed`` run calls this with the same arguments; each
    computes its own shards (``shard % processes == process``) on its local devices; at the end
    process 0 writes ``manifest.json``, ``errors.jsonl`` and, if asked, ``cams.npz`` and the
    gallery. Results do not depend on the batch size, the devices or the processes.

    Args:
      model: a multi-exit model in eval mode (``exit_features``/``classify``, ``num_exits``).
      prep: how decoded images become its inputs, and its classes.
      inputs: what to explain (:func:`~jaxcam.batch.list_inputs`).
      job: the settings.
      devices: this process's devices for the mesh (default ``jax.local_devices()``).
      progress: draw a progress bar (process 0 only).
      on_shard: called with each shard index once this process has written its file.
      extras: the caller's columns, links and labels for the gallery and the grids.

    Returns:
      The :class:`RunSummary`.

    Raises:
      RunMismatchError: ``job.out`` holds a run with other inputs or settings.
    """
    start = time.perf_counter()
    out = Path(job.out)
    process, processes = jax.process_index(), jax.process_count()
    plan = _plan(model, prep, inputs, job)
    _agree(plan, len(inputs), process, processes)
    out.mkdir(parents=True, exist_ok=True)
    _check_out(out, plan.fingerprint, plan.settings, job.overwrite, process == 0)
    manifest = _start_manifest(out, plan, prep, job, processes, write=process == 0)
    ranges = shard_ranges(len(inputs), plan.shard_size)
    mine = owned_shards(len(ranges), process, processes)
    todo = [j for j in mine if valid_shard(out, j, plan.fingerprint, ranges[j]) is None]
    pictures = _pictures(out, plan, prep, job, extras)
    timings, compilations, batch = Timings(), 0, job.batch_size
    if todo:
        timings, compilations, batch = _compute(
            model, prep, inputs, job, plan, [ranges[j] for j in todo], pictures, out=out,
            devices=devices, progress=progress, on_shard=on_shard)
    mine_done = np.asarray([timings.explained, timings.failed, len(todo),
                            int(1000 * (time.perf_counter() - start))], np.int32)
    counts = gather_counts(mine_done)  # also the barrier: every process's shards are written
    result: dict[str, Any] = {}
    if process == 0:
        manifest["per_process"] = [{"process": p, "explained": int(c[0]), "failed": int(c[1]),
                                    "shards_computed": int(c[2]), "seconds": c[3] / 1000}
                                   for p, c in enumerate(counts)]
        result = finish_run(out, n_inputs=len(inputs), shard_size=plan.shard_size,
                            fingerprint=plan.fingerprint, input_errors=inputs.errors,
                            manifest=manifest, cams_npz=plan.merge, pictures=pictures,
                            gallery_settings={**job.settings, "method": job.method,
                                              "target": job.target,
                                              "exits": ", ".join(map(str, plan.exit_numbers))},
                            map_dtype=plan.map_dtype, image_size=prep.image_size,
                            extras=extras)
    # Process 0 alone read the shards; a second gather gives every process the run's totals.
    totals = [result.get("explained", 0), result.get("failed", 0), result.get("complete", 1)]
    if processes > 1:
        totals = gather_counts(np.asarray(totals, np.int32))[0].tolist()
    seconds = time.perf_counter() - start
    n_devices = len(jax.local_devices() if devices is None else devices)
    return RunSummary(out=out, inputs=len(inputs), explained=int(totals[0]),
                      failed=int(totals[1]), errors=result.get("errors_list", []),
                      shards=len(ranges), resumed=len(mine) - len(todo), seconds=seconds,
                      images_per_s=int(counts[:, 0].sum()) / max(seconds, 1e-9),
                      complete=bool(totals[2]), timings=timings, processes=processes,
                      devices=n_devices, batch_size=batch, compilations=compilations)

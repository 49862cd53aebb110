"""``explain_dataset``: a whole run, in one process or several, resumable."""

from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcam.batch._distributed import Peers, gather_counts
from jaxcam.batch._engine import ExplainStep
from jaxcam.batch._extras import GalleryExtras
from jaxcam.batch._finish import finish_run, shard_state
from jaxcam.batch._pictures import Pictures
from jaxcam.batch._pipeline import ShardContext, Timings, run_pipeline
from jaxcam.batch._plan import (
    BatchJob,
    Plan,
    agree,
    check_out,
    plan_run,
)
from jaxcam.batch._preprocessing import Preprocessing
from jaxcam.batch._progress import Progress
from jaxcam.batch._shards import (
    MANIFEST,
    OutputError,
    atomic_write_text,
    owned_shards,
    shard_ranges,
)
from jaxcam.batch._sources import Inputs, class_index

__all__ = ["RunSummary", "explain_dataset"]

# A full disk or quota, a read-only file system: whichever file it hits, the output is at fault.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


@dataclasses.dataclass
class RunSummary:
    """What a run did.

    Attributes:
      out: the output directory.
      inputs: inputs in the whole run (all processes).
      explained: inputs explained (whole run).
      failed: inputs that failed (whole run, including command-line inputs matching nothing).
      errors: ``(input, reason)`` pairs (process 0 only; empty elsewhere).
      shards: shard files of the run; resumed: those found complete and skipped (all processes).
      changed: shards found complete but recomputed because an input changed since (all
        processes).
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
    changed: int = 0


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _start_manifest(out: Path, plan: Plan, prep: Preprocessing, job: BatchJob,
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


def _finished(out: Path, plan: Plan) -> bool:
    """Whether ``out`` holds this run's manifest, marked complete."""
    try:
        old = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return old.get("fingerprint") == plan.fingerprint and bool(old.get("complete"))


def _pictures(out: Path, plan: Plan, prep: Preprocessing, job: BatchJob,
              extras: GalleryExtras | None) -> Pictures | None:
    if plan.save == "none":
        return None
    return Pictures(out=out, overlay=plan.save in ("overlay", "all"),
                    grid=plan.save in ("grid", "all"), class_names=prep.class_names,
                    exit_numbers=plan.exit_numbers, cam_pos=plan.cam_pos, method=job.method,
                    target=job.target, compare=tuple(job.compare),
                    title_prefix="" if extras is None else extras.title_prefix)


def _compute(model: Any, prep: Preprocessing, inputs: Inputs, job: BatchJob, plan: Plan,
             todo: Sequence[range], pictures: Pictures | None, *, out: Path,
             devices: Sequence[jax.Device] | None, progress: bool,
             on_shard: Callable[[int], None] | None) -> tuple[Timings, int, int]:
    """Explain this process's missing shards; returns ``(timings, compilations, batch)``."""
    process, processes = jax.process_index(), jax.process_count()
    step = ExplainStep(model, image_size=prep.image_size, mean=prep.mean, std=prep.std,
                       method=job.method, exits=plan.exits,
                       target="pred" if job.target == "pred" else "index",
                       compare=job.compare, batch_size=job.batch_size, devices=devices,
                       micro_batch=plan.settings["micro_batch"])
    ctx = ShardContext(out=out, fingerprint=plan.fingerprint, shard_size=plan.shard_size,
                       map_dtype=plan.map_dtype, exit_numbers=plan.exit_numbers,
                       class_names=prep.class_names, method=job.method, process=process,
                       content_hash=job.content_hash)
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
      OutputError: ``job.out`` cannot be written (read-only, full); what was written is kept
        and the same call finishes the run once the cause is fixed.
    """
    try:
        return _explain_dataset(model, prep, inputs, job, devices=devices, progress=progress,
                                on_shard=on_shard, extras=extras)
    except OutputError:
        raise
    except OSError as exc:  # e.g. ENOSPC or EROFS writing a manifest, the gallery, cams.npz
        where = os.path.realpath(exc.filename) if exc.filename is not None else ""
        if not (where.startswith(os.path.realpath(job.out)) or exc.errno in _FULL):
            raise
        raise OutputError(job.out, "cannot write", exc) from exc


def _explain_dataset(model: Any, prep: Preprocessing, inputs: Inputs, job: BatchJob, *,
                     devices: Sequence[jax.Device] | None, progress: bool,
                     on_shard: Callable[[int], None] | None,
                     extras: GalleryExtras | None) -> RunSummary:
    start = time.perf_counter()
    out = Path(job.out)
    process, processes = jax.process_index(), jax.process_count()
    inputs = inputs.excluding(out)  # a run never explains its own outputs
    plan = plan_run(model, prep, inputs, job)
    agree(plan, len(inputs), process, processes)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(out, "cannot create the output folder", exc) from None
    check_out(out, plan.fingerprint, plan.settings, job.overwrite, process == 0)
    peers = None
    if processes > 1:  # every process is alive here (it just took part in agree's collective)
        attempt = int(gather_counts(np.asarray([secrets.randbelow(1 << 30)], np.int32))[0, 0])
        peers = Peers(out, attempt, process, processes)
    try:
        return _run_shards(model, prep, inputs, job, plan, out, peers, start=start,
                           devices=devices, progress=progress, on_shard=on_shard, extras=extras)
    finally:
        if peers is not None:
            peers.close(remove=process == 0)


def _run_shards(model: Any, prep: Preprocessing, inputs: Inputs, job: BatchJob, plan: Plan,
                out: Path, peers: Peers | None, *, start: float,
                devices: Sequence[jax.Device] | None, progress: bool,
                on_shard: Callable[[int], None] | None,
                extras: GalleryExtras | None) -> RunSummary:
    process, processes = jax.process_index(), jax.process_count()
    ranges = shard_ranges(len(inputs), plan.shard_size)
    mine = owned_shards(len(ranges), process, processes)
    states = {j: shard_state(out, j, plan.fingerprint, ranges[j], inputs.version) for j in mine}
    todo = [j for j in mine if states[j] != "done"]
    changed = sum(state == "changed" for state in states.values())
    # A finished run stays readable while a re-run with nothing to do checks it: the manifest
    # says "not complete" only once there is something to compute.
    manifest = _start_manifest(out, plan, prep, job, processes,
                               write=process == 0 and (bool(todo) or not _finished(out, plan)))
    pictures = _pictures(out, plan, prep, job, extras)
    timings, compilations, batch = Timings(), 0, job.batch_size
    if todo:
        timings, compilations, batch = _compute(
            model, prep, inputs, job, plan, [ranges[j] for j in todo], pictures, out=out,
            devices=devices, progress=progress, on_shard=on_shard)
    mine_done = np.asarray([timings.explained, timings.failed, len(todo),
                            int(1000 * (time.perf_counter() - start)), len(mine) - len(todo),
                            changed], np.int32)
    if peers is not None:  # a dead process ends the run here, with the tool's own message
        peers.wait("computed")
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
        assert peers is not None
        peers.wait("finished")
        totals = gather_counts(np.asarray(totals, np.int32))[0].tolist()
    seconds = time.perf_counter() - start
    n_devices = len(jax.local_devices() if devices is None else devices)
    return RunSummary(out=out, inputs=len(inputs), explained=int(totals[0]),
                      failed=int(totals[1]), errors=result.get("errors_list", []),
                      shards=len(ranges), resumed=int(counts[:, 4].sum()),
                      changed=int(counts[:, 5].sum()), seconds=seconds,
                      images_per_s=int(counts[:, 0].sum()) / max(seconds, 1e-9),
                      complete=bool(totals[2]), timings=timings, processes=processes,
                      devices=n_devices, batch_size=batch, compilations=compilations)

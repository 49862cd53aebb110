"""One process's run: decoding threads -> device step -> writer thread, all overlapping.

* A producer thread keeps a window of inputs decoding and resizing in a thread pool (OpenCV
  releases the GIL), packs the good ones into batches, pads and places each batch on the devices
  (so the host-to-device copy overlaps too) and queues ``prefetch`` batches ahead.
* The calling thread runs the compiled step on each batch as it arrives. The time it spends
  waiting for a batch is exactly the time the devices wait on the input pipeline.
* A writer thread groups results and failures by shard, writes each picture, and writes a shard
  file (atomically) once all of its inputs are accounted for.

Failures of single inputs are results like any other (they go into their shard's record); an
exception anywhere else stops all three and is re-raised by :func:`run_pipeline`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcam.batch._decode import PixelBudget, preprocess
from jaxcam.batch._engine import ExplainStep
from jaxcam.batch._pictures import Pictures, write_pictures
from jaxcam.batch._preprocessing import Preprocessing
from jaxcam.batch._shards import OutputError, shard_path, write_shard
from jaxcam.batch._sources import Inputs

__all__ = ["Timings", "ShardContext", "run_pipeline"]


@dataclasses.dataclass
class Timings:
    """Seconds spent per stage (decode and write are summed over their threads)."""

    decode_s: float = 0.0
    compute_s: float = 0.0
    input_wait_s: float = 0.0
    write_s: float = 0.0
    writer_wait_s: float = 0.0
    loop_s: float = 0.0
    compile_s: float = 0.0
    explained: int = 0
    failed: int = 0
    shards_written: int = 0


@dataclasses.dataclass(frozen=True)
class ShardContext:
    """What every shard file records besides its images (see :mod:`jaxcam.batch._shards`)."""

    out: Path
    fingerprint: str
    shard_size: int
    map_dtype: str
    exit_numbers: tuple[int, ...]
    class_names: tuple[str, ...]
    method: str
    process: int
    content_hash: bool = False


@dataclasses.dataclass
class _Prepared:
    index: int
    small: np.ndarray | None = None
    label: int = -1
    original: np.ndarray | None = None
    size: tuple[int, int] = (0, 0)
    error: str | None = None
    seconds: float = 0.0
    version: str = ""
    crop: bool = False


def _prepare(inputs: Inputs, i: int, prep: Preprocessing, classes: Mapping[str, int],
             need_label: bool, keep_original: bool, max_pixels: int, budget: PixelBudget,
             content_hash: bool) -> _Prepared:
    start = time.perf_counter()
    version = ""
    try:
        try:
            original, version = inputs.read(i, max_pixels, budget, content_hash)
        except ValueError as exc:
            version = getattr(exc, "version", None) or inputs.version(i, content_hash)
            raise
        label = inputs.label(i, classes)
        if need_label and label is None:
            by_index = {v: k for k, v in classes.items()}  # exact names come last
            names = [by_index[k] for k in sorted(by_index)]
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            return _Prepared(i, error=f"--target true needs the class as the parent folder's "
                             f"name (or the data set's label); {inputs.class_name(i)!r} is not "
                             f"one of {shown}", seconds=time.perf_counter() - start,
                             version=version)
        crop = prep.crop if inputs.crop(i) is None else bool(inputs.crop(i))
        small = preprocess(original, prep, crop)
        return _Prepared(i, small, -1 if label is None else label,
                         original if keep_original else None, original.shape[:2],
                         seconds=time.perf_counter() - start, version=version, crop=crop)
    except Exception as exc:  # noqa: BLE001 - a bad input is recorded, never fatal
        reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        return _Prepared(i, error=reason, seconds=time.perf_counter() - start, version=version)


class _Shard:
    """Rows of one shard as they arrive, in any order."""

    def __init__(self, expected: int):
        self.expected = expected
        self.rows: dict[int, tuple] = {}
        self.errors: dict[int, str] = {}
        self.versions: dict[int, str] = {}  # of what was decoded (explained or failed)

    @property
    def complete(self) -> bool:
        return len(self.rows) + len(self.errors) >= self.expected


def _write(ctx: ShardContext, j: int, shard: _Shard, inputs: Inputs) -> None:
    order = sorted(shard.rows)
    k = len(ctx.exit_numbers)
    rows = [shard.rows[i] for i in order]
    if rows:
        maps = np.stack([r[0] for r in rows], axis=1).astype(ctx.map_dtype)
        logits = np.stack([r[1] for r in rows], axis=1).astype(np.float32)
    else:
        maps = np.zeros((k, 0, 0, 0), ctx.map_dtype)
        logits = np.zeros((k, 0, len(ctx.class_names)), np.float32)
    reasons = shard.errors
    errs = sorted(reasons)
    done = sorted(shard.versions)
    write_shard(shard_path(ctx.out, j), {
        "shard": np.int64(j), "fingerprint": np.asarray(ctx.fingerprint),
        "process": np.int64(ctx.process),
        "index": np.asarray(order, np.int64),
        "files": np.asarray([inputs.keys[i] for i in order], dtype=str),
        "names": np.asarray([inputs.names[i] for i in order], dtype=str),
        "labels": np.asarray([r[3] for r in rows], np.int32),
        "sizes": np.asarray([r[4] for r in rows], np.int32).reshape(-1, 2),
        "maps": maps, "logits": logits,
        "targets": (np.stack([r[2] for r in rows], axis=1) if rows
                    else np.zeros((k, 0), np.int64)).astype(np.int32),
        "err_index": np.asarray(errs, np.int64),
        "err_files": np.asarray([inputs.keys[i] for i in errs], dtype=str),
        "err_reasons": np.asarray([reasons[i] for i in errs], dtype=str),
        "exits": np.asarray(ctx.exit_numbers, np.int32),
        "class_names": np.asarray(ctx.class_names, dtype=str),
        "method": np.asarray(ctx.method),
        # What each input was when decoded: a re-run recomputes the shard if one has changed.
        "ver_index": np.asarray(done, np.int64),
        "versions": np.asarray([shard.versions[i] for i in done], dtype=str),
        "content_hash": np.asarray(ctx.content_hash)})


def _writer(q: queue.Queue, ctx: ShardContext, inputs: Inputs, pictures: Pictures | None,
            timings: Timings, on_shard: Callable[[int], None] | None,
            failure: list[BaseException]) -> None:
    shards: dict[int, _Shard] = {}
    try:
        while True:
            msg = q.get()
            if msg is None:
                return
            start = time.perf_counter()
            touched = set()
            for i, payload in msg:
                j = i // ctx.shard_size
                shard = shards.setdefault(j, _Shard(len(range(
                    j * ctx.shard_size, min(len(inputs), (j + 1) * ctx.shard_size)))))
                touched.add(j)
                if isinstance(payload, tuple) and isinstance(payload[0], str):
                    shard.errors[i], shard.versions[i] = payload
                    continue
                prep, maps, logits, targets, extra = payload
                shard.rows[i] = (maps, logits, targets, prep.label, prep.size)
                shard.versions[i] = prep.version
                if pictures is not None:
                    # A picture that cannot be written stops the run before its shard is
                    # written: the shard stays missing, so the re-run redoes the picture.
                    try:
                        write_pictures(pictures, inputs.names[i], prep.original, prep.small,
                                       None if prep.label < 0 else prep.label, maps, logits,
                                       extra, crop=prep.crop)
                    except OSError as exc:
                        raise OutputError(ctx.out, f"cannot write the pictures of "
                                                   f"{inputs.names[i]}", exc) from None
            for j in sorted(touched):
                if shards[j].complete:
                    try:
                        _write(ctx, j, shards.pop(j), inputs)
                    except OSError as exc:
                        raise OutputError(ctx.out, f"cannot write shard {j}", exc) from None
                    timings.shards_written += 1
                    if on_shard is not None:
                        on_shard(j)
            timings.write_s += time.perf_counter() - start
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        failure.append(exc)
        while q.get() is not None:  # keep draining so the main thread never blocks on put
            pass


def _offer(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    """Put ``item`` on ``q`` unless the consumer has stopped (then nobody would take it)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _producer(inputs: Inputs, todo: Sequence[range], step: ExplainStep,
              preprocessing: Preprocessing,
              target: str | int, classes: Mapping[str, int], keep_original: bool,
              max_pixels: int, workers: int,
              batches: queue.Queue, writer_q: queue.Queue, timings: Timings,
              stop: threading.Event, content_hash: bool) -> None:
    need_label = target == "true"
    # Decoding threads together hold at most this many pixels: one image of the largest
    # accepted size, or a batch of ordinary photos.
    budget = PixelBudget(max(max_pixels, step.batch_size * 4_000_000))

    def emit(pending: list[_Prepared]) -> None:
        x = np.stack([p.small for p in pending])
        if not keep_original:  # no pictures: the writer needs neither input; free them early
            for p in pending:
                p.small = None
        if target == "true":
            cls = np.asarray([p.label for p in pending], np.int32)
        elif target == "pred":
            cls = None
        else:
            cls = np.full((len(pending),), int(target), np.int32)
        _offer(batches, (pending, step.put(x, cls)), stop)

    try:
        order = (i for r in todo for i in r)
        window: collections.deque = collections.deque()
        depth = max(2 * step.batch_size, 4 * workers)
        with concurrent.futures.ThreadPoolExecutor(workers, "jaxcam-decode") as pool:
            def submit() -> None:
                i = next(order, None)
                if i is not None:
                    window.append(pool.submit(_prepare, inputs, i, preprocessing, classes,
                                              need_label, keep_original, max_pixels, budget,
                                              content_hash))

            for _ in range(depth):
                submit()
            pending: list[_Prepared] = []
            while window and not stop.is_set():
                prep = window.popleft().result()
                submit()
                timings.decode_s += prep.seconds
                if prep.error is not None:
                    timings.failed += 1
                    writer_q.put([(prep.index, (prep.error, prep.version))])
                    continue
                pending.append(prep)
                if len(pending) == step.batch_size:
                    emit(pending)
                    pending = []
            if pending and not stop.is_set():
                emit(pending)
        _offer(batches, None, stop)
    except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
        _offer(batches, exc, stop)


def run_pipeline(inputs: Inputs, todo: Sequence[range], step: ExplainStep, ctx: ShardContext,
                 *, prep: Preprocessing, target: str | int, classes: Mapping[str, int],
                 pictures: Pictures | None, workers: int, prefetch: int, max_pixels: int,
                 progress: Callable[[int], None] | None = None,
                 on_shard: Callable[[int], None] | None = None) -> Timings:
    """Explain the inputs of the shards ``todo`` and write those shards.

    Args:
      inputs: every input of the run.
      todo: the index ranges of the shards to compute (complete shards).
      step: the compiled device step.
      ctx: what shard files record.
      prep: how decoded images become model inputs.
      target: ``pred``, ``true`` or a class index.
      classes: class name -> index (for labels).
      pictures: per-image pictures to write, or None.
      workers: decoding threads.
      prefetch: batches prepared ahead of the device.
      max_pixels: largest declared image accepted.
      progress: called with the number of inputs done so far (explained or failed).
      on_shard: called with each shard's index once its file is written.

    Returns:
      The :class:`Timings` of the run.
    """
    timings = Timings(compile_s=step.compile_seconds)
    batches: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    writer_q: queue.Queue = queue.Queue(maxsize=max(4, 2 * prefetch))
    stop = threading.Event()
    failure: list[BaseException] = []
    writer = threading.Thread(target=_writer, name="jaxcam-writer", daemon=True,
                              args=(writer_q, ctx, inputs, pictures, timings, on_shard, failure))
    producer = threading.Thread(target=_producer, name="jaxcam-input", daemon=True,
                                args=(inputs, todo, step, prep, target, classes,
                                      pictures is not None, max_pixels, workers, batches,
                                      writer_q, timings, stop, ctx.content_hash))
    start = time.perf_counter()
    writer.start()
    producer.start()
    try:
        while True:
            t0 = time.perf_counter()
            item = batches.get()
            t1 = time.perf_counter()
            timings.input_wait_s += t1 - t0
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            if failure:
                raise failure[0]
            pending, placed = item
            maps, logits, extra = step.compute(*placed)
            t2 = time.perf_counter()
            timings.compute_s += t2 - t1
            targets = logits.argmax(-1)
            if target == "true":
                targets = np.broadcast_to([p.label for p in pending], targets.shape)
            elif target != "pred":
                targets = np.full_like(targets, int(target))
            writer_q.put([(p.index, (p, maps[:, j], logits[:, j], targets[:, j],
                                     [e[:, j] for e in extra])) for j, p in enumerate(pending)])
            timings.writer_wait_s += time.perf_counter() - t2
            timings.explained += len(pending)
            if progress is not None:
                progress(timings.explained + timings.failed)
    finally:
        stop.set()
        producer.join()  # it gives up offering batches once stop is set
        writer_q.put(None)
        writer.join()
        timings.loop_s = time.perf_counter() - start
    if failure:
        raise failure[0]
    if progress is not None:
        progress(timings.explained + timings.failed)
    return timings

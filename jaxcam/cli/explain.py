"""``jaxcam explain``: its options and its run, over :mod:`jaxcam.batch`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from jaxcam.cli.common import (
    Command,
    add_compile_cache_options,
    add_model_option,
    load_model,
    model_settings,
    parse_exits,
    parse_target,
    preprocessing_for,
    print_summary,
)
from jaxcam.cli.models import DEFAULT_EXPLAIN_MODEL

__all__ = ["COMMAND", "add_parser", "run", "print_top_classes"]

# The batch size without --batch-size (fewer inputs: the next power of two).
DEFAULT_BATCH = 32
# Runs of up to this many inputs print each one's top classes.
SHOW_TOP = 20

_DESCRIPTION = """\
Explain images with class activation maps: a few photos, a folder or a whole data set, on
every local device, on several hosts, resumable. The model is EfficientNet-Lite0 trained on
ImageNet (1000 classes; one exit) unless --model names another ('jaxcam models'), such as the
bundled multi-exit MSD-Net (--model msdnet-shapes) or an msdnet_flax checkpoint. For runs of up
to 20 inputs the top-5 classes of each are printed.

Each image (any size; grayscale, RGBA and 16-bit too) is read as RGB, resized whole to the
model's input size (imagenet: inputs get ImageNet's resize-and-centre-crop instead) and
normalised as the model expects. Decoding runs in worker threads and
overlaps the device work; one jitted step is sharded over all local devices.

Always written into OUT:
  shards/shard-NNNNNN.npz  the results, one file per --shard-size inputs: files, names,
                           labels, original sizes, maps (K, n, S, S), logits (K, n, C),
                           targets, and the failed inputs with their reasons
  manifest.json            settings, shards, counts (complete: true once finished)
  errors.jsonl, errors.txt every input that failed, with the reason (JSON lines; file<TAB>reason)
By --save-images (auto: all for runs of up to 1000 inputs, none above):
  <stem>_cam.png           one exit's map on the original image, at its own resolution
  <stem>_exits.png         the image and every exit's map, labelled with prediction,
                           confidence and right/wrong when the class is known
  index.html               a gallery of the grids (when grids are written)
By --cams-npz (auto: runs of up to 1000 inputs):
  cams.npz                 every shard merged: maps (K, N, H, W), logits (K, N, C), targets,
                           labels, files, names, exits numbered from 1, class_names, method
Same stems from different folders get their folder names prefixed. Read the results from
Python with jaxcam.batch.open_results(OUT)[file].

Resuming: run the same command again after an interruption (even kill -9): complete shards
are kept, the rest computed; the outputs equal those of an uninterrupted run, bit for bit. A
shard with an input changed since (size or modification time) is recomputed, and the summary
says so. The files written into OUT are never inputs, even inside a folder explained. OUT
holding a run with other inputs or settings is refused (--overwrite discards it).

Several hosts: start the same command on each with --coordinator HOST:PORT (process 0's
address), --num-processes N and --process-id I (or under SLURM/Open MPI, where JAX finds
them); OUT must be a directory all of them share. Each process explains its own shards; process
0 writes the manifest, errors and gallery at the end.

Bad inputs (unreadable, empty, truncated, not an image, larger than --max-pixels) are
recorded and skipped. Exit status: 0 if every input was explained, 1 if any failed (or a
shard is missing), 2 on a usage error, 3 if OUT cannot be written (read-only, full disk: one
line says which; what was written is kept, and the same command finishes the run), 4 if
another process of a multi-process run stopped (noticed within about 10 s)."""


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    """Add ``explain`` and its options to the ``jaxcam`` subparsers.

    Args:
      sub: the ``jaxcam`` subparsers.
      fmt: the help formatter class.

    Returns:
      The ``explain`` parser.
    """
    from jaxcam import EXIT_METHODS

    ex = sub.add_parser("explain", formatter_class=fmt, description=_DESCRIPTION,
                        help="explain images or a data set with every exit of a model")
    ex.add_argument("inputs", nargs="*", metavar="INPUT",
                    help="image files, directories (searched recursively for "
                    ".png/.jpg/.jpeg/.bmp/.webp/.tif/.tiff), glob patterns (quote them; ** "
                    "recurses), imagenet:ROOT (ROOT/<class>/<image>), or cifar10:PATH, "
                    "cifar100:PATH (the CIFAR python archive or its directory; test split; "
                    "cifar10-train:PATH for the training split)")
    ex.add_argument("--files-from", action="append", default=[], metavar="FILE",
                    help="a text file listing image paths, one a line ('-': standard input); "
                    "may be repeated")
    add_model_option(ex, DEFAULT_EXPLAIN_MODEL)
    ex.add_argument("--method", default="gradcam", choices=EXIT_METHODS,
                    help="CAM method (default gradcam); see 'jaxcam methods'")
    ex.add_argument("--exits", default="all", metavar="all|LIST",
                    help="exits to explain, numbered from 1 (earliest): 'all' (default), or e.g. "
                    "'1,5,last' or '2-4'")
    ex.add_argument("--target", default="pred", metavar="pred|true|CLASS",
                    help="class to explain: 'pred' (default: each exit's own prediction), 'true' "
                    "(the class named by each file's parent folder, or the data set's label; "
                    "inputs without one fail), or a class name or 0-based class index")
    ex.add_argument("--cam-exit", default="last", metavar="N|last",
                    help="exit drawn on <stem>_cam.png (default: the last explained exit)")
    ex.add_argument("--out", default="jaxcam_out", type=Path, metavar="DIR",
                    help="output directory (default ./jaxcam_out; created if needed)")
    ex.add_argument("--batch-size", type=int, default=None, metavar="N",
                    help="images per step, over all local devices (default 32 per device, "
                    "or for fewer inputs the power of two that holds them all, computed as "
                    "one micro-batch per device); a given N is rounded up to a multiple of 32 "
                    "per device: devices compute micro-batches of 32, so that the maps do not "
                    "depend on N")
    ex.add_argument("--compare", default="", metavar="METHOD[,METHOD]",
                    help="further methods drawn as extra rows of every grid (not saved)")
    ex.add_argument("--save-images", default="auto",
                    choices=("auto", "none", "overlay", "grid", "all"),
                    help="per-image pictures: overlay (<stem>_cam.png), grid (<stem>_exits.png "
                    "and index.html), all, none; auto (default): all for up to 1000 inputs, "
                    "else none (PNG encoding can cost more than explaining)")
    ex.add_argument("--map-dtype", "--npz-dtype", dest="map_dtype", default="auto",
                    choices=("auto", "float16", "float32"),
                    help="dtype of the stored maps (default auto: float32 for up to 1000 "
                    "inputs, else float16)")
    ex.add_argument("--cams-npz", default="auto", choices=("auto", "yes", "no"),
                    help="merge all maps into one cams.npz at the end (default auto: for up to "
                    "1000 inputs)")
    ex.add_argument("--shard-size", type=int, default=None, metavar="N",
                    help="inputs per shard file (default: about 64 MB of maps, 16..1024)")
    ex.add_argument("--workers", type=int, default=None, metavar="N",
                    help="decoding threads (default: the usable cores, at least 2)")
    ex.add_argument("--prefetch", type=int, default=2, metavar="N",
                    help="batches decoded ahead of the devices (default 2)")
    ex.add_argument("--max-pixels", type=int, default=None, metavar="N",
                    help="largest width x height an image may declare (default 100000000); "
                    "larger ones (e.g. decompression bombs) fail before being decoded")
    ex.add_argument("--overwrite", action="store_true",
                    help="discard a run with other inputs or settings found in OUT")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_compile_cache_options(ex)
    ex.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                    help="several processes: address of process 0's coordinator")
    ex.add_argument("--num-processes", type=int, default=None, metavar="N",
                    help="several processes: how many")
    ex.add_argument("--process-id", type=int, default=None, metavar="I",
                    help="several processes: this one's index, 0..N-1")
    return ex


def _check_usage(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    for flag, value in (("--batch-size", args.batch_size), ("--shard-size", args.shard_size),
                        ("--workers", args.workers), ("--prefetch", args.prefetch),
                        ("--max-pixels", args.max_pixels)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if not args.inputs and not args.files_from:
        parser.error("nothing to explain: give INPUT paths or --files-from FILE")


def _batch_size(requested: int | None, n_inputs: int) -> int:
    """``--batch-size``, or 32, or for fewer inputs the power of two that holds them all.

    A power of two rather than exactly ``n_inputs``: runs of 5, 6, 7 or 8 inputs then share
    one compiled program (and its persistent cache entry), and a single photo is not padded to
    32 images of work.
    """
    if requested is not None:
        return requested
    return min(DEFAULT_BATCH, 1 << max(0, n_inputs - 1).bit_length())


def _job(args: argparse.Namespace, parser: argparse.ArgumentParser, model: Any,
         meta: dict[str, Any], n_inputs: int) -> Any:
    """The :class:`jaxcam.batch.BatchJob` the options describe (usage errors exit)."""
    from jaxcam import EXIT_METHODS, batch

    try:
        exits = parse_exits(args.exits, model.num_exits)
        target = parse_target(args.target, [str(c) for c in meta["class_names"]])
        cam = len(exits) - 1 if args.cam_exit == "last" else \
            exits.index(parse_exits(args.cam_exit, model.num_exits)[0])
        compare = tuple(m.strip() for m in args.compare.split(",") if m.strip())
        for m in compare:
            if m not in EXIT_METHODS:
                raise ValueError(f"--compare: {m!r} is not one of {', '.join(EXIT_METHODS)}")
    except ValueError as exc:
        if "is not in tuple" in str(exc):
            exc = ValueError(f"--cam-exit {args.cam_exit} is not among --exits {args.exits}")
        parser.error(str(exc))
    batch_size = _batch_size(args.batch_size, n_inputs)
    return batch.BatchJob(out=args.out, method=args.method, exits=exits, target=target,
                          compare=compare, cam_exit=cam, batch_size=batch_size,
                          # Without --batch-size, a run of a few photos computes micro-batches
                          # of that many (one photo: one image of work, not 32). It never
                          # depends on the devices or processes, so a run's maps do not either.
                          micro_batch=DEFAULT_BATCH if args.batch_size is not None
                          else min(DEFAULT_BATCH, batch_size),
                          shard_size=args.shard_size, map_dtype=args.map_dtype,
                          save_images=args.save_images, cams_npz=args.cams_npz,
                          workers=args.workers, prefetch=args.prefetch,
                          max_pixels=args.max_pixels or batch.DEFAULT_MAX_PIXELS,
                          overwrite=args.overwrite,
                          settings=model_settings(args.model, model, meta))


def print_top_classes(out: Path, k: int = 5) -> None:
    """Print each explained input's ``k`` most probable classes at its last explained exit.

    Args:
      out: the finished run's output directory (read with :func:`jaxcam.batch.open_results`).
      k: classes per input.
    """
    import numpy as np

    from jaxcam.batch import open_results

    results = open_results(out)
    names = results.class_names
    for file, result in results.items():
        logits = result.logits[-1].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs, kind="stable")[:k]
        h, w = result.size
        shown = ", ".join(f"{names[i]} {100 * probs[i]:.1f}%" for i in top)
        print(f"{file} ({w}x{h}, exit {int(result.exits[-1])}): {shown}")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``jaxcam explain``.

    Args:
      args: the parsed options.
      parser: its parser (for usage errors).

    Returns:
      The exit status: 0 if every input was explained, 1 if any failed, 2 on a usage or model
      error, 3 when the output folder cannot be written, 4 when another process of the run
      stopped (the process then ends at once, without JAX's distributed shutdown).
    """
    _check_usage(args, parser)
    from jaxcam import batch

    try:  # before anything else touches JAX
        batch.init_distributed(args.coordinator, args.num_processes, args.process_id)
    except ValueError as exc:
        parser.error(str(exc))
    except RuntimeError as exc:
        print(f"jaxcam explain: cannot join the distributed run: {exc}", file=sys.stderr)
        return 2
    import jax

    from jaxcam.cli.inputs import PREFIXES

    try:  # OUT's own files are never inputs, even when it lies inside a folder explained
        inputs = batch.list_inputs(args.inputs, args.files_from, prefixes=PREFIXES,
                                   exclude=[args.out])
    except (FileNotFoundError, ValueError) as exc:
        print(f"jaxcam explain: {exc}", file=sys.stderr)
        return 2
    try:
        model, meta = load_model(args.model)
    except (FileNotFoundError, ValueError) as exc:
        print(f"jaxcam explain: cannot load model {args.model!r}: {exc}", file=sys.stderr)
        return 2
    job = _job(args, parser, model, meta, len(inputs))
    try:
        summary = batch.explain_dataset(model, preprocessing_for(model, meta), inputs, job,
                                        progress=not args.no_progress)
    except batch.RunMismatchError as exc:
        print(f"jaxcam explain: {exc}", file=sys.stderr)
        return 2
    except batch.OutputError as exc:
        print(f"jaxcam explain: cannot write the results: {exc}; free space or fix the "
              f"permissions, then run the same command again to finish", file=sys.stderr)
        return 3
    except batch.PeerLostError as exc:
        print(f"jaxcam explain: {exc}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Not a normal exit: jax.distributed's shutdown would wait for the dead process.
        os._exit(4)
    if jax.process_index() == 0:
        print_summary(summary)
        if summary.complete and summary.explained <= SHOW_TOP:
            print_top_classes(summary.out)
    ok = summary.complete and summary.failed == 0 and summary.explained > 0
    return 0 if ok else 1


COMMAND = Command("explain", add_parser, run)

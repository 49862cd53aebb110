"""``jaxcam analyze-exits``: the exit analysis on procedural held-out splits, as a report."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any

from jaxcam.cli.common import Command, add_compile_cache_options, add_model_option, load_model

__all__ = ["COMMAND", "add_parser", "run", "parse_splits", "DEFAULT_SPLITS"]

#: Difficulty ranges analysed by default: an easy and a hard split.
DEFAULT_SPLITS = ((0.0, 0.4), (0.6, 1.0))

_DESCRIPTION = """\
What does each exit of a multi-exit MSD-Net look at, and how well?

For each difficulty range (default: an easy split 0-0.4 and a hard split 0.6-1) it generates
N procedural images with object masks (msdnet_flax.data.generate, seed SEED + 2i for split i,
a seed the training never saw: training used 0, 1 and 2) and a threshold split of --n-val
images (seed SEED + 2i + 1), and computes per exit and per method: accuracy, pointing game and
energy against the masks, deletion / insertion AUC (exit k's softmax probability), area above
half max and entropy of the maps, rank agreement between exits; and the same accuracy /
pointing / energy per group of images (grouped by the exit where budgeted-batch inference with
p = --budget-p stops them, thresholds set on the threshold split, and by difficulty tertiles).
All with 95% bootstrap confidence intervals over images.

OUT gets report.json (every number), report.html (tables and PNG figures next to it) and
summary.md (what the numbers show, and where they show no clear difference).

ScoreCAM scores one masked copy per feature channel at every exit (thousands of forward passes
per image), so it runs on a random subset (--scorecam-images); deletion / insertion curves run
on --faithfulness-images images per method. The report says so."""


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    """Add the ``analyze-exits`` subcommand to ``jaxcam``'s subparsers.

    Args:
      sub: the ``jaxcam`` subparsers.
      fmt: the help formatter class.

    Returns:
      The ``analyze-exits`` parser.
    """
    p = sub.add_parser("analyze-exits", formatter_class=fmt, description=_DESCRIPTION,
                       help="per-exit accuracy, localisation, faithfulness and agreement report")
    add_model_option(p)
    add_compile_cache_options(p)
    p.add_argument("--n-images", type=int, default=1000, metavar="N",
                   help="images per difficulty split (default 1000)")
    p.add_argument("--n-val", type=int, default=1000, metavar="N",
                   help="threshold-split images per difficulty split (default 1000)")
    p.add_argument("--seed", type=int, default=12345,
                   help="data seed (default 12345; training used 0-2)")
    p.add_argument("--difficulty", type=float, nargs="+", metavar="LOW HIGH", default=None,
                   help="difficulty ranges as pairs, e.g. '--difficulty 0 0.4 0.6 1' (the "
                   "default) or '--difficulty 0 1'")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="CAM methods (default gradcam gradcamplusplus layercam scorecam)")
    p.add_argument("--target", choices=("true", "pred"), default="true",
                   help="class explained: the true label (default) or each exit's prediction")
    # None: jaxcam.studies.exit_analysis.core's DEFAULT_* (not imported here: importing it
    # loads JAX, and `jaxcam --help` should stay fast).
    p.add_argument("--scorecam-images", type=int, default=None, metavar="N",
                   help="images per split explained with ScoreCAM (default 8; about 11 s each "
                   "on 2 CPU cores)")
    p.add_argument("--faithfulness-images", type=int, default=None, metavar="N",
                   help="images per split and method with deletion/insertion curves (default "
                   "48; about 0.9 s each)")
    p.add_argument("--steps", type=int, default=None,
                   help="deletion/insertion curve steps (default 8)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--budget-p", type=float, default=1.0,
                   help="budgeted-batch exit-share parameter p (default 1: equal shares)")
    p.add_argument("--difficulty-bins", type=float, nargs="+", default=None, metavar="EDGE",
                   help="edges of the difficulty groups (default: tertiles of each split)")
    p.add_argument("--out", type=Path, default=Path("exit_analysis"), metavar="DIR",
                   help="output directory (default ./exit_analysis)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N",
                   help="images per jitted call (default 64)")
    return p


def parse_splits(values: list[float] | None) -> list[tuple[float, float]]:
    """The difficulty ranges ``--difficulty`` gives, as ``(low, high)`` pairs.

    Args:
      values: the option's numbers, or None for :data:`DEFAULT_SPLITS`.

    Returns:
      The pairs.

    Raises:
      ValueError: an odd count, or a pair outside ``0 <= LOW <= HIGH <= 1``.
    """
    if values is None:
        return list(DEFAULT_SPLITS)
    if len(values) % 2:
        raise ValueError("--difficulty takes pairs LOW HIGH")
    pairs = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    for lo, hi in pairs:
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"--difficulty {lo:g} {hi:g}: need 0 <= LOW <= HIGH <= 1")
    return pairs


def _check_usage(args: argparse.Namespace, parser: argparse.ArgumentParser
                 ) -> list[tuple[float, float]]:
    """Fill the defaults left as None, exit on a usage error, return the difficulty ranges."""
    from jaxcam.studies.exit_analysis.core import (
        DEFAULT_FAITHFULNESS_IMAGES,
        DEFAULT_SCORECAM_IMAGES,
        DEFAULT_STEPS,
    )

    for name, value in (("scorecam_images", DEFAULT_SCORECAM_IMAGES),
                        ("faithfulness_images", DEFAULT_FAITHFULNESS_IMAGES),
                        ("steps", DEFAULT_STEPS)):
        if getattr(args, name) is None:
            setattr(args, name, value)
    try:
        pairs = parse_splits(args.difficulty)
    except ValueError as exc:
        parser.error(str(exc))
    for name in ("n_images", "n_val", "batch_size", "n_boot", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("scorecam_images", "faithfulness_images"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be at least 0")
    return pairs


def _class_mismatch(meta: dict[str, Any]) -> tuple[bool, str | None]:
    """``(usable, warning)``: whether the model's classes are the procedural data's."""
    from msdnet_flax.data.procedural import CLASS_NAMES

    names_model = [str(c) for c in meta["class_names"]]
    if len(names_model) != len(CLASS_NAMES):
        print(f"jaxcam analyze-exits: the model has {len(names_model)} classes, the procedural "
              f"data set {len(CLASS_NAMES)}", file=sys.stderr)
        return False, None
    if names_model == list(CLASS_NAMES):
        return True, None
    differ = [f"{i}: {a} (model) / {b} (data)" for i, (a, b) in
              enumerate(zip(names_model, CLASS_NAMES, strict=True)) if a != b]
    mismatch = ("the model was trained on other procedural classes than the generator now "
                "draws; for " + ", ".join(differ) + " its labels mean another shape")
    print(f"WARNING: {mismatch}", file=sys.stderr)
    return True, mismatch


def _analyze_split(args: argparse.Namespace, model: Any, meta: dict[str, Any], i: int,
                   lo: float, hi: float) -> dict[str, Any]:
    """The report of difficulty range ``i``, ``lo..hi``; raises ValueError on bad settings."""
    import jax

    from jaxcam.studies.exit_analysis import DEFAULT_METHODS, analyze_exits
    from msdnet_flax.data import generate

    size = model.config.image_size
    print(f"difficulty {lo:g}-{hi:g}: generating {args.n_images} + {args.n_val} images",
          flush=True)
    data = generate(args.n_images, seed=args.seed + 2 * i, size=size, difficulty=(lo, hi))
    val = generate(args.n_val, seed=args.seed + 2 * i + 1, size=size, difficulty=(lo, hi))
    report = analyze_exits(
        model, data, methods=tuple(args.methods or DEFAULT_METHODS),
        batch_size=args.batch_size, n_boot=args.n_boot, key=jax.random.key(args.seed + i),
        val_dataset=val, target=args.target, mean=meta["mean"], std=meta["std"],
        faithfulness_images=args.faithfulness_images, scorecam_images=args.scorecam_images,
        steps=args.steps, difficulty_bins=args.difficulty_bins, budget_p=args.budget_p,
        log=lambda line: print(line, flush=True))
    report["settings"].update({"seed": args.seed + 2 * i, "threshold_seed":
                               args.seed + 2 * i + 1, "difficulty_range": [lo, hi]})
    return report


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``jaxcam analyze-exits``.

    Args:
      args: the parsed options.
      parser: its parser (for usage errors).

    Returns:
      The exit status: 0 on success, 2 on a model error.
    """
    pairs = _check_usage(args, parser)
    start = time.perf_counter()
    try:
        model, meta = load_model(args.model)
    except (FileNotFoundError, ValueError) as exc:
        print(f"jaxcam analyze-exits: cannot load model {args.model!r}: {exc}", file=sys.stderr)
        return 2
    usable, mismatch = _class_mismatch(meta)
    if not usable:
        return 2
    reports, names = [], []
    for i, (lo, hi) in enumerate(pairs):
        try:
            report = _analyze_split(args, model, meta, i, lo, hi)
        except ValueError as exc:
            parser.error(str(exc))
        reports.append(report)
        names.append(f"difficulty {lo:g}-{hi:g}")
        print(f"{names[-1]}: {report['timing']['total_seconds']:.0f} s", flush=True)
    seconds = time.perf_counter() - start
    header = {"model": args.model if args.model != "bundled" else f"bundled ({meta.get('path')})",
              "checkpoint step": meta.get("step", "n/a"),
              "architecture": f"MSD-Net, {model.num_exits} exits, {model.config.num_classes} "
                              "classes",
              "data": f"procedural, seeds from {args.seed}, {args.n_images} images per split",
              "target": "true class" if args.target == "true" else "each exit's prediction",
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "runtime": f"{seconds:.0f} s"}
    if mismatch:
        header["WARNING"] = mismatch
    from jaxcam.studies.exit_analysis import write_report

    paths = write_report(reports, names, args.out, header)
    print(f"wrote {paths['html']}, {paths['json']}, {paths['summary']} and "
          f"{len(paths['figures'])} figures in {time.perf_counter() - start:.0f} s")
    return 0


COMMAND = Command("analyze-exits", add_parser, run)

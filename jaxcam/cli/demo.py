"""``jaxcam demo``: procedural shapes of increasing difficulty, every exit explained through
:mod:`jaxcam.batch`, with each map's energy inside the shape's mask in the gallery."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxcam.cli.common import (
    Command,
    add_compile_cache_options,
    model_settings,
    preprocessing_for,
    print_summary,
)

__all__ = ["COMMAND", "add_parser", "run", "run_demo", "load_demo_model", "write_inputs"]


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    """Add ``demo`` and its options to the ``jaxcam`` subparsers.

    Args:
      sub: the ``jaxcam`` subparsers.
      fmt: the help formatter class.

    Returns:
      The ``demo`` parser.
    """
    from jaxcam import EXIT_METHODS

    demo = sub.add_parser(
        "demo", formatter_class=fmt, help="explain procedural shapes with the bundled model",
        description="Write N (default 12) procedural shape images of increasing difficulty and\n"
        "their object masks into OUT/inputs, explain every exit of the bundled model on them and\n"
        "write the grids, overlays, cams.npz, index.html and the jaxcam explain outputs\n"
        "(manifest.json, shards/: read them with jaxcam.batch.open_results) into OUT. Takes\n"
        "under a minute on a CPU. The bundled model is msdnet_flax.pretrained() (model card:\n"
        "README).")
    demo.add_argument("--out", default="diags", type=Path, metavar="DIR",
                      help="output directory (default ./diags)")
    demo.add_argument("--method", default="gradcam", choices=EXIT_METHODS,
                      help="CAM method (default gradcam)")
    demo.add_argument("--n", type=int, default=12, metavar="N",
                      help="number of images (default 12)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the images (default 0)")
    add_compile_cache_options(demo)
    return demo


def load_demo_model() -> tuple[Any, dict[str, Any], str, str | None]:
    """The bundled model as ``(model, meta, spec, warning)``.

    Returns:
      The model in eval mode, its checkpoint metadata, ``"bundled"``, and None (tests
      substitute a tiny model with a warning shown in the gallery).
    """
    from msdnet_flax.pretrained import pretrained

    model, meta = pretrained()
    return model, meta, "bundled", None


def write_inputs(out: Path, n: int, seed: int, size: int
                 ) -> tuple[list[Path], dict[str, tuple[np.ndarray, Path]], tuple[str, ...]]:
    """Write ``n`` procedural images and their object masks into ``out/inputs``.

    One image per difficulty level, spread evenly over [0, 1], cycling through the classes so
    that each appears; images go into ``inputs/images/<class>/`` (so the class is known from the
    folder), masks into ``inputs/masks/``.

    Args:
      out: the output directory.
      n: number of images.
      seed: seed of the images.
      size: their side.

    Returns:
      ``(image files, {file: (mask at the model's size, mask PNG)}, the data's class names)``.
    """
    from jaxcam.viz import write_png
    from msdnet_flax.data import generate
    from msdnet_flax.data.procedural import CLASS_NAMES

    images_dir, masks_dir = out / "inputs" / "images", out / "inputs" / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    masks: dict[str, tuple[np.ndarray, Path]] = {}
    levels = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    names: tuple[str, ...] = tuple(CLASS_NAMES)
    for i, difficulty in enumerate(levels):
        pick = generate(len(CLASS_NAMES), seed=seed * 1000 + i, size=size,
                        difficulty=float(difficulty))
        names = tuple(pick.class_names)
        label = i % len(names)
        j = int(np.flatnonzero(pick.labels == label)[0])
        name = f"{i:02d}_d{difficulty:.2f}_{names[label]}"
        folder = images_dir / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        path, mask_path = folder / f"{name}.png", masks_dir / f"{name}_mask.png"
        write_png(path, pick.images[j])
        write_png(mask_path, np.repeat(pick.masks[j][..., None] * np.uint8(255), 3, -1))
        files.append(path)
        masks[str(path)] = (pick.masks[j], mask_path)
    return files, masks, names


def _mask_extras(out: Path, masks: Mapping[str, tuple[np.ndarray, Path]],
                 warning: str | None) -> Any:
    """The gallery's mask-energy column and mask link for the demo's images."""
    from jaxcam.batch import GalleryExtras, Result

    def energy(result: Result) -> dict[str, list[float]]:
        mask = masks[result.file][0]
        maps = result.maps.astype(np.float64)
        share = (maps * mask).sum((1, 2)) / np.maximum(maps.sum((1, 2)), 1e-12)
        return {"map energy in object": [float(v) for v in share]}

    def link(result: Result) -> dict[str, str]:
        try:
            return {"object mask": os.path.relpath(masks[result.file][1].resolve(),
                                                   out.resolve())}
        except ValueError:  # another drive: no relative link
            return {}

    return GalleryExtras(columns=energy, links=link, warning=warning,
                         title_prefix="[UNTRAINED RANDOM MODEL] " if warning else "")


def run_demo(out: Path, *, method: str = "gradcam", n: int = 12, seed: int = 0) -> int:
    """Write ``n`` procedural images and masks into ``out/inputs`` and explain them into ``out``.

    Args:
      out: output directory (``./diags`` from the command line).
      method: CAM method.
      n: number of images; their difficulties are spread evenly over [0, 1].
      seed: seed of the images.

    Returns:
      The exit status (0 when every image was explained).
    """
    from jaxcam import batch

    model, meta, spec, warning = load_demo_model()
    prep = preprocessing_for(model, meta)
    files, masks, data_classes = write_inputs(out, n, seed, prep.image_size)
    if data_classes != prep.class_names:
        print(f"note: the model's classes {list(prep.class_names)} differ from the procedural "
              f"data's", file=sys.stderr)
    settings = {**model_settings(spec, model, meta), "inputs": f"{n} procedural images, "
                f"difficulty 0..1, seed {seed} (msdnet_flax.data.generate)"}
    # The demo always regenerates its inputs, so a previous demo in `out` is replaced.
    job = batch.BatchJob(out=out, method=method, target="pred", batch_size=max(1, n),
                         map_dtype="float32", save_images="all", cams_npz="yes",
                         overwrite=True, settings=settings)
    summary = batch.explain_dataset(model, prep, batch.list_inputs([str(f) for f in files]),
                                    job, extras=_mask_extras(out, masks, warning))
    print_summary(summary)
    print(f"open {(out / 'index.html').resolve().as_uri()} in a browser; the grids are "
          f"{out}/*_exits.png, the inputs and masks {out}/inputs")
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    return 0 if summary.complete and summary.failed == 0 else 1


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``jaxcam demo``.

    Args:
      args: the parsed options.
      parser: its parser (for usage errors).

    Returns:
      The exit status.
    """
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    return run_demo(args.out, method=args.method, n=args.n, seed=args.seed)


COMMAND = Command("demo", add_parser, run)

"""``jaxcam demo``: procedural shapes of increasing difficulty, every exit explained."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxcam._cli_io import write_png

__all__ = ["run_demo", "load_demo_model"]

def load_demo_model() -> tuple[Any, dict[str, Any], str, str | None]:
    """The bundled model: ``(model, meta, spec, warning)`` (``warning`` is None for it; tests
    substitute a tiny model with a warning)."""
    from msdnet_flax.pretrained import pretrained

    model, meta = pretrained()
    return model, meta, "bundled", None


def run_demo(out: Path, *, method: str = "gradcam", n: int = 12, seed: int = 0,
             settings_for: Callable[..., dict[str, Any]],
             summary: Callable[..., None]) -> int:
    """Write ``n`` procedural images and masks into ``out/inputs`` and explain them into ``out``.

    Args:
      out: output directory (``./diags`` from the command line).
      method: CAM method.
      n: number of images; their difficulties are spread evenly over [0, 1].
      seed: seed of the images.
      settings_for: ``(spec, model, meta) -> settings`` for the gallery.
      summary: ``(out, n_ok, errors, seconds)`` prints the run's summary.

    Returns:
      The exit status (0 when every image was explained).
    """
    from jaxcam._cli_explain import Job, explain_files
    from msdnet_flax.data import generate
    from msdnet_flax.data.procedural import CLASS_NAMES

    start = time.perf_counter()
    model, meta, spec, warning = load_demo_model()
    size = model.config.image_size
    class_names = [str(c) for c in meta["class_names"]]
    images_dir, masks_dir = out / "inputs" / "images", out / "inputs" / "masks"
    files: list[Path] = []
    masks: dict[Path, tuple[np.ndarray, Path]] = {}
    levels = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    for i, difficulty in enumerate(levels):
        # One image per difficulty level, cycling through the classes so each appears.
        pick = generate(len(CLASS_NAMES), seed=seed * 1000 + i, size=size,
                        difficulty=float(difficulty))
        label = i % len(pick.class_names)
        j = int(np.flatnonzero(pick.labels == label)[0])
        name = f"{i:02d}_d{difficulty:.2f}_{pick.class_names[label]}"
        folder = images_dir / pick.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        masks_dir.mkdir(parents=True, exist_ok=True)
        path, mask_path = folder / f"{name}.png", masks_dir / f"{name}_mask.png"
        write_png(path, pick.images[j])
        write_png(mask_path, np.repeat(pick.masks[j][..., None] * np.uint8(255), 3, -1))
        files.append(path)
        masks[path] = (pick.masks[j], mask_path)
    if list(pick.class_names) != class_names:
        print(f"note: the model's classes {class_names} differ from the procedural data's",
              file=sys.stderr)
    settings = {**settings_for(spec, model, meta), "inputs": f"{n} procedural images, "
                f"difficulty 0..1, seed {seed} (msdnet_flax.data.generate)"}
    job = Job(out=out, method=method, exits=tuple(range(model.num_exits)), target="pred",
              batch_size=max(1, n), settings=settings, masks=masks, warning=warning,
              tag="[UNTRAINED RANDOM MODEL] " if warning else "")
    n_ok, errors = explain_files(model, meta, files, job)
    summary(out, n_ok, errors, time.perf_counter() - start)
    print(f"open {(out / 'index.html').resolve().as_uri()} in a browser; the grids are "
          f"{out}/*_exits.png, the inputs and masks {out}/inputs")
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    return 1 if errors else 0

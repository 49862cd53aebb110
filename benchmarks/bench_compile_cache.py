"""First against second ``jaxcam explain photo.jpg``: what the persistent compilation cache saves.

    python -m benchmarks.bench_compile_cache [--photo PATH] [--record benchmarks/RESULTS.md]

Runs the same command in fresh processes with an empty cache directory (``XDG_CACHE_HOME``
pointed at a temporary folder) and a new output directory each time: the first run compiles and
stores every program, the next ``--warm`` runs (default 5) read them back. Reports each run's
wall time (process start to exit, imports included) and the CLI's own compile line; the warm
runs' median is the number to compare. All runs come from the same invocation of this script,
moments apart.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

from benchmarks._env import cpu_model, usable_cores

PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _run(photo: Path, out: Path, cache: Path) -> tuple[float, str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": str(cache)}
    argv = [str(Path(sys.executable).parent / "jaxcam"), "explain", str(photo), "--out",
            str(out), "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"jaxcam explain failed:\n{proc.stdout}\n{proc.stderr}")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("compiling:")), "?")
    return seconds, line


def measure(photo: Path, warm: int = 5) -> dict[str, object]:
    """Wall time of a cold and of ``warm`` warm ``jaxcam explain photo`` runs.

    Args:
      photo: the image.
      warm: how many runs after the first.

    Returns:
      ``{"first_s", "second_s" (the warm runs' median), "warm_s" (each), "first_line",
      "second_line" (the first warm run's), "load"}``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first_s, first_line = _run(photo, root / "a", root / "cache")
        runs = [_run(photo, root / f"b{i}", root / "cache") for i in range(max(1, warm))]
    warm_s = [s for s, _ in runs]
    return {"first_s": first_s, "second_s": statistics.median(warm_s), "warm_s": warm_s,
            "first_line": first_line, "second_line": runs[0][1],
            "all_cached": all("nothing compiled" in line for _, line in runs),
            "load": os.getloadavg()}


def report(r: dict[str, object], photo: Path) -> str:
    """The Markdown section for RESULTS.md."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in r["load"])  # type: ignore[union-attr]
    warm = r["warm_s"]  # type: ignore[assignment]
    return (f"\n## {when[:10]}: persistent compilation cache, first vs second "
            f"`jaxcam explain photo.jpg`\n\n"
            f"- Machine: {cpu_model()}, {usable_cores()} usable cores, "
            f"{platform.platform()}; load average after the runs {load} (cores shared with "
            f"other processes).\n"
            f"- Date: {when}. Command: `python -m benchmarks.bench_compile_cache` (each run: "
            f"`jaxcam explain {photo.name} --out NEW_DIR --no-progress` in a fresh process, "
            f"`XDG_CACHE_HOME` an initially empty temporary directory).\n"
            f"- Model: EfficientNet-Lite0 (ImageNet), Grad-CAM, batch 1.\n\n"
            f"| run | wall time (s) | the CLI's compile line |\n|---|---|---|\n"
            f"| first (empty cache) | {r['first_s']:.2f} | {r['first_line']} |\n"
            f"| second and later (warm cache): median of {len(warm)} | {r['second_s']:.2f} "
            f"(each: {', '.join(f'{x:.2f}' for x in warm)}) | {r['second_line']} |\n"
            f"\nWarm over cold: {r['first_s'] / r['second_s']:.1f}x faster.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--warm", type=int, default=5, help="runs after the first (default 5)")
    parser.add_argument("--record", default=None, help="append the section to this file")
    args = parser.parse_args()
    r = measure(args.photo, args.warm)
    text = report(r, args.photo)
    print(text)
    if args.record:
        with open(args.record, "a") as f:
            f.write(text)
    if not r["all_cached"]:
        sys.exit("a warm run compiled something")


if __name__ == "__main__":
    main()

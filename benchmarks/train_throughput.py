"""Training throughput of the bundled model's recipe on 1 and on 2 CPU devices, side by side.

``python -m benchmarks.train_throughput`` runs ``python -m msdnet_flax.training`` (cifar10_anytime,
batch 64, the bundled model's settings) for ``--steps`` steps once per device count, each in its
own process (XLA's host device count is fixed at start-up), and reads the steady images/s from
the runs' JSONL logs (the first logged interval, which holds the compile, is dropped). It prints a
table, the ratio of the two, the projected time of the bundled model's 1,560 steps, and appends
them to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._env import cpu_model, usable_cores

BUNDLED_STEPS = 1560
BATCH = 64


def _run(devices: int, steps: int, log_every: int, out: Path) -> list[float]:
    """Images/s of each logged interval after the first."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    cmd = [sys.executable, "-m", "msdnet_flax.training", "--model", "cifar10_anytime",
           "--n-train", "25000", "--n-val", "0", "--epochs", "4", "--lr", "0.1",
           "--warmup-steps", "100", "--schedule", "cosine", "--max-steps", str(steps),
           "--log-every", str(log_every), "--checkpoint-every", "0", "--no-progress",
           "--devices", str(devices), "--out-dir", str(out)]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    times = [r["time"] for r in records if r["kind"] == "step"]
    return [log_every * BATCH / (b - a) for a, b in zip(times[1:], times[2:], strict=False)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--md", default=str(Path(__file__).parent / "RESULTS.md"))
    args = parser.parse_args(argv)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for devices in (1, 2):
            rates[devices] = _run(devices, args.steps, args.log_every, Path(tmp) / str(devices))
    rows, median = [], {}
    for devices, r in rates.items():
        median[devices] = sorted(r)[len(r) // 2]
        minutes = BUNDLED_STEPS * BATCH / median[devices] / 60
        rows.append(f"| {devices} | {len(r) * args.log_every} | {median[devices]:.1f} | "
                    f"{min(r):.1f}-{max(r):.1f} | {minutes:.0f} |")
    ratio = median[2] / median[1]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        f"\n## {now[:10]}: training throughput, bundled model's recipe, 1 vs 2 CPU devices\n",
        f"- machine: {cpu_model()}, {usable_cores()} cores, GPU: none; {now}",
        f"- command: `python -m benchmarks.train_throughput --steps {args.steps}` (each device "
        f"count in its own `python -m msdnet_flax.training` process, one after the other; the "
        f"first {args.log_every}-step interval, with the compile, dropped)",
        "",
        "| CPU devices | timed steps | median images/s | range | projected minutes for "
        f"{BUNDLED_STEPS} steps |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"2 devices / 1 device: {ratio:.2f}x images/s. The projection excludes data generation "
        "and the compile (about 1-2 minutes together).\n"])
    print(text)
    if args.md:
        with open(args.md, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()

"""Command-line flags of ``python -m benchmarks``.

    python -m benchmarks [--configs cifar10_anytime,imagenet_step4] [--batch-sizes 1,16]
        [--methods gradcam] [--rounds 5] [--per-exit-max-batch 0] [--device cpu|gpu]
        [--out benchmarks/results] [--md benchmarks/RESULTS.md] [--quick]

Default suite (CPU): cifar10_anytime at batch 1, 16, 64, 256 and imagenet_step4 at batch 1, 8,
32. ``--batch-sizes`` replaces every config's list. Parity is checked on each config's first
batch size. The per-exit PyTorch contenders (pytorch-grad-cam once per exit, the article's
hooks, captum, torchcam: a minute per call at cifar10_anytime batch 256 on 2 cores) are timed up
to batch 64 (cifar10_anytime) and 8 (imagenet_step4) by default on CPU, which keeps ``make
bench`` under 10 minutes; ``--per-exit-max-batch 0`` times them at every batch size.
``--quick`` runs the parity checks and one round per contender (a smoke run: for tests and for
trying the code, not for numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

from benchmarks.models import CONFIG_NAMES

DEFAULT_CONFIGS = ("cifar10_anytime", "imagenet_step4")
DEFAULT_BATCHES = {"cifar10_anytime": (1, 16, 64, 256), "imagenet_step4": (1, 8, 32),
                   "tiny": (2,)}
GPU_BATCHES = {"cifar10_anytime": (1, 16, 64, 256, 1024), "imagenet_step4": (1, 8, 32, 128),
               "tiny": (2,)}
METHODS = ("gradcam",)
# Largest batch at which the per-exit PyTorch contenders are timed by default (CPU; 0: all).
PER_EXIT_MAX_BATCH = {"cifar10_anytime": 64, "imagenet_step4": 8}


@dataclasses.dataclass(frozen=True)
class Settings:
    configs: tuple[str, ...]
    batches: dict[str, tuple[int, ...]]
    methods: tuple[str, ...]
    rounds: int
    min_rounds: int
    cell_budget_s: float
    time_limit_s: float
    strict_limit: bool
    slow_call_s: float
    device: str
    out: str
    md: str
    quick: bool
    seed: int
    contenders: tuple[str, ...] | None
    per_exit_max_batch: dict[str, int]  # config -> largest batch (0: every batch)
    command: str


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,16,64; got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def parse(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=_names, default=DEFAULT_CONFIGS,
                        help=f"comma-separated, of: {', '.join(CONFIG_NAMES)}")
    parser.add_argument("--batch-sizes", type=_ints, default=None,
                        help="comma-separated batch sizes for every config (default per config)")
    parser.add_argument("--methods", type=_names, default=METHODS, help="gradcam (only)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (at most) per cell")
    parser.add_argument("--min-rounds", type=int, default=1,
                        help="fewest rounds for a slow contender squeezed by the budget")
    parser.add_argument("--cell-budget", type=float, default=60.0,
                        help="at most this many seconds of timed rounds per (config, batch) "
                             "cell; slower contenders get fewer rounds (down to --min-rounds)")
    parser.add_argument("--time-limit", type=float, default=480.0,
                        help="seconds the whole run should take: cells share what is left "
                             "after the calls every cell needs (JAX compilation, warm-ups), "
                             "which can overrun it (0: no limit, every cell gets "
                             "--cell-budget); 480 leaves room for that within 10 minutes")
    parser.add_argument("--strict-limit", action="store_true",
                        help="do not time a PyTorch contender whose predicted call would end "
                             "past --time-limit (it is reported as not timed)")
    parser.add_argument("--slow-call", type=float, default=1.0,
                        help="a PyTorch call slower than this (s) keeps its warm-up call as "
                             "a sample")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--out", default="benchmarks/results", help="JSON and PNG folder")
    parser.add_argument("--md", default="benchmarks/RESULTS.md",
                        help="Markdown file the run's section is appended to ('' for none)")
    parser.add_argument("--quick", action="store_true",
                        help="parity checks and one round: a smoke run, not for numbers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contenders", type=_names, default=None,
                        help="only these contender keys (default all)")
    parser.add_argument("--per-exit-max-batch", type=int, default=None,
                        help="time the per-exit PyTorch contenders (pytorch-grad-cam x K, hooks, "
                             "captum, torchcam) only up to this batch size, in every config "
                             "(0: at every batch; default on CPU: 64 for cifar10_anytime, 8 for "
                             "imagenet_step4; on GPU: every batch)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.configs if c not in CONFIG_NAMES]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {', '.join(CONFIG_NAMES)}")
    bad = [m for m in args.methods if m.lower() != "gradcam"]
    if bad:
        parser.error(f"only gradcam is benchmarked (the PyTorch libraries' common method); "
                     f"got {bad}")
    defaults = GPU_BATCHES if args.device == "gpu" else DEFAULT_BATCHES
    batches = {c: args.batch_sizes or defaults.get(c, (1, 8)) for c in args.configs}
    if args.per_exit_max_batch is not None:
        per_exit = {c: args.per_exit_max_batch for c in args.configs}
    else:
        per_exit = {c: PER_EXIT_MAX_BATCH.get(c, 0) if args.device == "cpu" else 0
                    for c in args.configs}
    rounds, min_rounds, budget = args.rounds, args.min_rounds, args.cell_budget
    if args.quick:
        rounds, min_rounds, budget = 1, 1, 0.0
    words = ["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)]
    return Settings(
        configs=tuple(args.configs), batches=batches,
        methods=tuple(m.lower() for m in args.methods),
        rounds=rounds, min_rounds=min(min_rounds, rounds), cell_budget_s=budget,
        time_limit_s=args.time_limit, strict_limit=args.strict_limit,
        slow_call_s=args.slow_call,
        device=args.device, out=args.out, md=args.md, quick=args.quick,
        seed=args.seed, contenders=args.contenders, per_exit_max_batch=per_exit,
        command=shlex.join(words))

"""Turn a training run into the model shipped with the package, with its model card.

``python -m msdnet_flax.training.bundle RUN_DIR`` (old name: ``python -m msdnet_flax.bundle``)
reads the run's latest checkpoint, stores its parameters and BatchNorm statistics as float16 (no
optimizer state) in ``msdnet_flax/assets/bundled/``, checks that float16 storage leaves every
exit's accuracy within 0.1 points of float32, evaluates the stored model the paper's two ways on
procedural splits the run never saw, and writes ``card.json`` (the model card: command, seeds,
training time, per-exit accuracy and FLOPs, the budgeted-batch curve) next to the weights, plus
the two plots where ``--plots`` says.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msdnet_flax.checkpoint import (
    atomic_write,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from msdnet_flax.data import generate
from msdnet_flax.evaluation.core import anytime, budgeted, exit_accuracy, predict
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.cost import cost
from msdnet_flax.model.msdnet import MSDNet
from msdnet_flax.pretrained import BUNDLED_PATH

__all__ = ["CARD_SEEDS", "FLOAT16_TOLERANCE", "bundle", "main"]

#: Seeds of the card's threshold (validation) and test splits: far from the training run's
#: ``data_seed``, ``+1``, ``+2`` so the card never measures an image the run saw or tuned on.
CARD_SEEDS = {"val": 1001, "test": 1002}

#: Largest change of an exit's test accuracy that float16 storage may make: 0.1 points. Rounding
#: the weights flips the odd prediction that sits on a decision boundary (1-2 of 5,000 for the
#: bundled model), which is far inside the split's sampling error (~0.3 points at 95%).
FLOAT16_TOLERANCE = 0.001


def _training_seconds(run_dir: Path, batch_size: int) -> float | None:
    """Wall time of the run from its log: first to last record plus the first record's steps at
    the logged rate (the compile before the first step is not in the log and not counted)."""
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    timed = [r for r in records if r.get("time")]
    if not timed:
        return None
    first = timed[0]
    rate = first.get("images_per_s")
    lead = first["step"] * batch_size / rate if rate else 0.0
    return float(timed[-1]["time"] - first["time"] + lead)


def bundle(run_dir: str | Path, out_dir: str | Path = BUNDLED_PATH, *, command: str,
           n_val: int = 2000, n_test: int = 5000, train_seconds: float | None = None,
           plots_dir: str | Path | None = None) -> dict[str, Any]:
    """Store ``run_dir``'s latest checkpoint as the bundled model and write its card.

    Args:
      run_dir: a training run's ``out_dir`` (or any path ``resolve_checkpoint`` accepts).
      out_dir: where the float16 checkpoint and ``card.json`` go (replaced).
      command: the exact training command, recorded in the card.
      n_val: procedural images (seed ``CARD_SEEDS['val']``) that set the budgeted thresholds.
      n_test: procedural test images (seed ``CARD_SEEDS['test']``), default difficulty range.
      train_seconds: the run's wall time; default estimated from its ``log.jsonl``.
      plots_dir: where ``anytime.png`` and ``budgeted.png`` go (None: not drawn).

    Returns:
      The card (also written to ``out_dir/card.json``).

    Raises:
      ValueError: float16 storage moves any exit's test accuracy by more than
        ``FLOAT16_TOLERANCE`` (the card records both accuracies either way).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    meta = read_checkpoint(run_dir)[1]
    model32, _ = load_checkpoint(run_dir)
    config = MSDNetConfig(**meta["model_config"])
    train_cfg = meta.get("train_config") or {}

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    stem = save_checkpoint(tmp, model32, step=meta["step"], epoch=meta["epoch"],
                           mean=meta["mean"], std=meta["std"], class_names=meta["class_names"],
                           train_config=train_cfg, storage_dtype="float16")
    model16, _ = load_checkpoint(tmp)
    results = _evaluate(model32, model16, config, meta, n_val, n_test)
    if train_seconds is None:
        train_seconds = _training_seconds(run_dir, int(train_cfg.get("batch_size", 64)))
    card = {
        "model": "cifar10_anytime" if config == _preset(config) else config.to_dict(),
        "model_config": config.to_dict(),
        "class_names": meta["class_names"],
        "mean": meta["mean"], "std": meta["std"],
        "storage": "float16",
        "bytes": int(stem.with_suffix(".safetensors").stat().st_size),
        "step": meta["step"], "epochs": train_cfg.get("epochs"),
        "seed": train_cfg.get("seed"), "data_seed": train_cfg.get("data_seed"),
        "train_config": train_cfg,
        "command": command,
        "train_seconds": train_seconds,
        "machine": f"{platform.machine()}, {_cpu_model()}",
        "eval": {"val": {"n": n_val, "seed": CARD_SEEDS["val"], "difficulty": [0.0, 1.0]},
                 "test": {"n": n_test, "seed": CARD_SEEDS["test"], "difficulty": [0.0, 1.0]}},
        **results,
    }
    atomic_write(tmp / "card.json", json.dumps(card, indent=1).encode())
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    if plots_dir is not None:
        _plot(card, Path(plots_dir))
    return card


def _evaluate(model32: MSDNet, model16: MSDNet, config: MSDNetConfig, meta: dict[str, Any],
              n_val: int, n_test: int) -> dict[str, Any]:
    """The card's measurements of the float16 model on the card's procedural splits.

    Args:
      model32: the run's model as trained.
      model16: the same model stored as float16 (the bundle).
      config: their architecture.
      meta: the checkpoint's metadata (its normalisation).
      n_val: images of the threshold split.
      n_test: images of the test split.

    Returns:
      The card's ``accuracy_float32``, ``anytime``, ``accuracy_by_difficulty`` and ``budgeted``
      entries.

    Raises:
      ValueError: float16 storage moves any exit's test accuracy by more than
        ``FLOAT16_TOLERANCE``.
    """
    size = 32 if config.data == "cifar" else 224
    val = generate(n_val, seed=CARD_SEEDS["val"], size=size)
    test = generate(n_test, seed=CARD_SEEDS["test"], size=size)
    kw = {"mean": meta["mean"], "std": meta["std"]}
    logits32 = predict(model32, test, 500, **kw)
    test_logits = predict(model16, test, 500, **kw)
    acc32 = exit_accuracy(logits32, test.labels)
    acc16 = exit_accuracy(test_logits, test.labels)
    if np.any(np.abs(acc16 - acc32) > FLOAT16_TOLERANCE + 0.5 / n_test):
        raise ValueError(f"float16 storage changes exit accuracies: float32 {acc32.tolist()}, "
                         f"float16 {acc16.tolist()}")
    val_logits = predict(model16, val, 500, **kw)
    flops = [c.flops for c in cost(config)]
    by_difficulty = {}
    for lo, hi in ((0.0, 0.5), (0.5, 1.0)):
        sel = (test.difficulty >= lo) & (test.difficulty < hi if hi < 1 else True)
        by_difficulty[f"{lo}-{hi}"] = exit_accuracy(test_logits[:, sel], test.labels[sel]).tolist()
    return {
        "accuracy_float32": acc32.tolist(),
        "anytime": anytime(test_logits, test.labels, config),
        "accuracy_by_difficulty": by_difficulty,
        "budgeted": budgeted(val_logits, val.labels, test_logits, test.labels, flops),
    }


def _plot(card: dict[str, Any], plots: Path) -> None:
    """The card's ``anytime.png`` and ``budgeted.png`` in ``plots``."""
    from msdnet_flax.evaluation.plots import plot_anytime, plot_budgeted

    plots.mkdir(parents=True, exist_ok=True)
    title = "bundled cifar10_anytime, procedural test split"
    plot_anytime(card["anytime"], plots / "anytime.png", title=title)
    plot_budgeted(card["budgeted"], plots / "budgeted.png", anytime_rows=card["anytime"],
                  title=title)


def _preset(config: MSDNetConfig) -> MSDNetConfig:
    from msdnet_flax.model.presets import cifar10_anytime

    return cifar10_anytime(config.num_classes)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m msdnet_flax.training.bundle RUN_DIR --command '...'``."""
    parser = argparse.ArgumentParser(prog="python -m msdnet_flax.training.bundle",
                                     description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", help="the training run's out_dir")
    parser.add_argument("--command", required=True, help="the exact training command (card)")
    parser.add_argument("--out", default=str(BUNDLED_PATH), help="where the bundle goes")
    parser.add_argument("--train-seconds", type=float, default=None,
                        help="the run's measured wall time (default: from its log)")
    parser.add_argument("--n-val", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--plots", default=None, help="directory for the card's two plots")
    args = parser.parse_args(argv)
    card = bundle(args.run_dir, args.out, command=args.command, n_val=args.n_val,
                  n_test=args.n_test, train_seconds=args.train_seconds, plots_dir=args.plots)
    print(json.dumps({k: card[k] for k in ("step", "bytes", "train_seconds")}))
    print("per-exit test accuracy:", [round(r["accuracy"], 4) for r in card["anytime"]])
    return card


if __name__ == "__main__":
    main()

"""Evaluate an MSD-Net the two ways the paper does (Huang et al., ICLR 2018, section 5).

* Anytime prediction: the top-1 accuracy of every exit against the cumulative multiply-adds
  needed to reach it (``msdnet_flax.model.cost``).
* Budgeted batch classification (kalviny's ``adaptive_inference.py``): for each ``p`` in
  0.05, 0.10, ..., 1.95 the fraction of samples that should leave at exit k (k = 1..K) is
  ``q_k = p^k / sum_j p^j``. On a held-out split, exit k's threshold is the confidence (max
  softmax) of the ``floor(n q_k)``-th most confident sample that no earlier exit took; on the test
  split a sample leaves at the first exit whose confidence reaches its threshold, the last exit
  taking the rest. Each ``p`` gives an accuracy and an average cost per image.

``python -m msdnet_flax.evaluation CHECKPOINT`` prints both tables and draws both plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from msdnet_flax.data import ArrayDataset, normalize
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.cost import cost
from msdnet_flax.model.msdnet import MSDNet

__all__ = ["predict", "exit_accuracy", "anytime", "exit_fractions", "max_softmax",
           "find_thresholds", "apply_thresholds", "budgeted", "DEFAULT_P", "format_anytime",
           "format_budgeted", "main"]

# kalviny: p = 1/20, 2/20, ..., 39/20.
DEFAULT_P = np.arange(1, 40) / 20.0


@functools.lru_cache(maxsize=8)
def _forward(graphdef: nnx.GraphDef):
    @jax.jit
    def forward(state, images, mean, std):
        model = nnx.merge(graphdef, state)
        return jnp.stack(model(normalize(images, mean, std)))
    return forward


def predict(model: MSDNet, dataset: ArrayDataset | np.ndarray, batch_size: int = 256, *,
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None
            ) -> np.ndarray:
    """Every exit's logits for every image, in jitted batches, with BatchNorm's running averages.

    Args:
      model: the network (it is not modified; a copy is put in eval mode).
      dataset: an ArrayDataset, or (N, H, W, 3) uint8 images (then ``mean`` and ``std`` are
        required).
      batch_size: images per forward pass (the last batch is padded, so one compilation serves).
      mean: normalisation mean; default the data set's (pass the training run's, e.g. a
        checkpoint's ``meta['mean']``, when they differ).
      std: normalisation standard deviation; default the data set's.

    Returns:
      (K, N, C) float32 logits.
    """
    images = dataset.images if isinstance(dataset, ArrayDataset) else np.asarray(dataset)
    if mean is None or std is None:
        if not isinstance(dataset, ArrayDataset):
            raise ValueError("predict on a bare image array needs mean and std")
        mean, std = dataset.mean if mean is None else mean, dataset.std if std is None else std
    copy = nnx.merge(*nnx.split(model))
    copy.eval()
    graphdef, state = nnx.split(copy)
    forward = _forward(graphdef)
    mean_a, std_a = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    n = len(images)
    batch_size = max(1, min(batch_size, n))
    outputs = []
    for start in range(0, n, batch_size):
        chunk = images[start:start + batch_size]
        if len(chunk) < batch_size:
            pad = np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        outputs.append(forward(state, chunk, mean_a, std_a))
    logits = np.concatenate(jax.device_get(outputs), axis=1)[:, :n]
    return logits.astype(np.float32)


def exit_accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K,) top-1 accuracy of every exit from (K, N, C) logits and (N,) labels."""
    return (np.asarray(logits).argmax(-1) == np.asarray(labels)[None]).mean(axis=1)


def anytime(logits: np.ndarray, labels: np.ndarray, config: MSDNetConfig
            ) -> list[dict[str, float]]:
    """Anytime prediction: one row per exit, ``{'exit', 'accuracy', 'flops', 'params'}``
    (``flops``: cumulative multiply-adds per image to reach the exit, heads included)."""
    costs = cost(config)
    acc = exit_accuracy(logits, labels)
    return [{"exit": k, "accuracy": float(a), "flops": c.flops, "params": c.params}
            for k, (a, c) in enumerate(zip(acc, costs, strict=True))]


def exit_fractions(p: float, num_exits: int) -> np.ndarray:
    """``q_k = p^k / sum_j p^j`` for k = 1..K: the share of samples meant to leave at each exit."""
    q = float(p) ** np.arange(1, num_exits + 1, dtype=np.float64)
    return q / q.sum()


def max_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(K, N)`` confidence (max softmax probability) and ``(K, N)`` prediction of each exit."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(-1, keepdims=True)
    return prob.max(-1), prob.argmax(-1)


def find_thresholds(confidence: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Per-exit thresholds on a held-out split, as kalviny's ``dynamic_eval_find_threshold``.

    Args:
      confidence: (K, N) max softmax probability of each sample at each exit.
      fractions: (K,) target share of the samples leaving at each exit.

    Returns:
      (K,) thresholds: for k < K-1 the confidence of the ``floor(N q_k)``-th most confident
      sample not taken by an earlier exit (``+inf`` when that count is 0 or exceeds the samples
      left), ``-inf`` for the last exit.
    """
    conf = np.asarray(confidence, np.float64)
    k_exits, n = conf.shape
    thresholds = np.full(k_exits, np.inf)
    taken = np.zeros(n, bool)
    for k in range(k_exits - 1):
        out_n = math.floor(n * float(fractions[k]) + 1e-9)
        left = conf[k, ~taken]
        if 1 <= out_n <= left.size:
            thresholds[k] = -np.partition(-left, out_n - 1)[out_n - 1]
        taken |= conf[k] >= thresholds[k]
    thresholds[-1] = -np.inf
    return thresholds


def apply_thresholds(confidence: np.ndarray, correct: np.ndarray, thresholds: np.ndarray,
                     flops: Sequence[float]) -> dict[str, Any]:
    """Route each sample to the first exit whose confidence reaches its threshold.

    Args:
      confidence: (K, N) max softmax probabilities.
      correct: (K, N) bool, whether each exit's prediction is right.
      thresholds: (K,); the last exit takes every sample left whatever its threshold.
      flops: (K,) cumulative cost of reaching each exit.

    Returns:
      ``{'accuracy', 'flops' (average per image), 'exit_counts' (K,), 'exits' (N,)}``.
    """
    conf = np.asarray(confidence)
    leave = conf >= np.asarray(thresholds)[:, None]
    leave[-1] = True
    exits = leave.argmax(axis=0)
    n = conf.shape[1]
    counts = np.bincount(exits, minlength=conf.shape[0])
    hit = np.asarray(correct)[exits, np.arange(n)]
    return {"accuracy": int(hit.sum()) / n,
            "flops": float(np.asarray(flops, np.float64)[exits].sum() / n),
            "exit_counts": counts.tolist(), "exits": exits}


def budgeted(val_logits: np.ndarray, val_labels: np.ndarray, test_logits: np.ndarray,
             test_labels: np.ndarray, flops: Sequence[float],
             ps: Sequence[float] = DEFAULT_P) -> list[dict[str, Any]]:
    """Budgeted batch classification: thresholds on ``val``, accuracy and cost on ``test``.

    Args:
      val_logits: (K, Nv, C) held-out logits (thresholds).
      val_labels: (Nv,) held-out labels.
      test_logits: (K, N, C) test logits.
      test_labels: (N,) test labels.
      flops: (K,) cumulative cost per exit (``[c.flops for c in cost(config)]``).
      ps: the exit-distribution parameters.

    Returns:
      One row per ``p``: ``{'p', 'fractions', 'thresholds', 'val_accuracy', 'accuracy', 'flops',
      'exit_counts'}``.
    """
    val_conf, val_pred = max_softmax(val_logits)
    test_conf, test_pred = max_softmax(test_logits)
    val_correct = val_pred == np.asarray(val_labels)[None]
    test_correct = test_pred == np.asarray(test_labels)[None]
    rows = []
    for p in ps:
        q = exit_fractions(p, val_conf.shape[0])
        t = find_thresholds(val_conf, q)
        on_val = apply_thresholds(val_conf, val_correct, t, flops)
        on_test = apply_thresholds(test_conf, test_correct, t, flops)
        rows.append({"p": float(p), "fractions": q.tolist(), "thresholds": t.tolist(),
                     "val_accuracy": on_val["accuracy"], "accuracy": on_test["accuracy"],
                     "flops": on_test["flops"], "exit_counts": on_test["exit_counts"]})
    return rows


def format_anytime(rows: Sequence[dict[str, Any]]) -> str:
    """The anytime table as text."""
    lines = [f"{'exit':>4}  {'MAdds (M)':>10}  {'params (M)':>10}  {'top-1 %':>8}"]
    lines += [f"{r['exit']:>4}  {r['flops'] / 1e6:>10.2f}  {r['params'] / 1e6:>10.3f}  "
              f"{100 * r['accuracy']:>8.2f}" for r in rows]
    return "\n".join(lines)


def format_budgeted(rows: Sequence[dict[str, Any]]) -> str:
    """The budgeted table as text (exit counts on the test split)."""
    lines = [f"{'p':>5}  {'avg MAdds (M)':>13}  {'top-1 %':>8}  {'val %':>6}  exit counts"]
    lines += [f"{r['p']:>5.2f}  {r['flops'] / 1e6:>13.2f}  {100 * r['accuracy']:>8.2f}  "
              f"{100 * r['val_accuracy']:>6.2f}  {' '.join(map(str, r['exit_counts']))}"
              for r in rows]
    return "\n".join(lines)


def _splits_for(meta: dict[str, Any], args: argparse.Namespace):
    from msdnet_flax.training.config import TrainConfig
    from msdnet_flax.training.sources import load_splits

    saved = dict(meta.get("train_config") or {})
    base = TrainConfig.from_dict(saved) if saved else TrainConfig(data=args.data or "procedural")
    changes = {k: v for k, v in (("data", args.data), ("data_path", args.data_path),
                                 ("n_test", args.n_test), ("n_val", args.n_val),
                                 ("data_seed", args.data_seed)) if v is not None}
    if changes.get("data", base.data) != base.data:  # another source: its own defaults
        base = dataclasses.replace(base, data_path=None, holdout=0)
    cfg = dataclasses.replace(base, **changes)
    splits = load_splits(cfg)
    test, val = splits["test"], splits["val"]
    note = None
    if val is None or val is test:  # no held-out split: halve the test set
        order = np.random.default_rng(0).permutation(len(test))
        half = len(test) // 2
        val, test = test.subset(np.sort(order[:half])), test.subset(np.sort(order[half:]))
        note = ("no held-out split (train with holdout > 0 for the paper's protocol): thresholds "
                "on a random half of the test set, accuracy on the other half")
    return cfg, val, test, note


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m msdnet_flax.evaluation CHECKPOINT``: tables, ``evaluation.json`` and plots."""
    from msdnet_flax.checkpoint import load_checkpoint
    from msdnet_flax.training.config import DATA_SOURCES

    parser = argparse.ArgumentParser(
        prog="python -m msdnet_flax.evaluation", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint file, checkpoint directory or run out_dir")
    parser.add_argument("--data", choices=DATA_SOURCES, default=None,
                        help="data source (default: the checkpoint's training data)")
    parser.add_argument("--data-path", default=None, help="cifar/folder directory")
    parser.add_argument("--n-test", type=int, default=None, help="procedural: test images")
    parser.add_argument("--n-val", type=int, default=None,
                        help="procedural: held-out images for the thresholds")
    parser.add_argument("--data-seed", type=int, default=None, help="procedural: seed")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out-dir", default=None,
                        help="where evaluation.json and the plots go (default: <run>/eval)")
    parser.add_argument("--plots", default=True, action=argparse.BooleanOptionalAction,
                        help="draw anytime.png and budgeted.png (needs matplotlib)")
    args = parser.parse_args(argv)

    model, meta = load_checkpoint(args.checkpoint)
    cfg, val, test, note = _splits_for(meta, args)
    kw = {"mean": meta["mean"], "std": meta["std"]}
    test_logits = predict(model, test, args.batch_size, **kw)
    val_logits = predict(model, val, args.batch_size, **kw)
    flops = [c.flops for c in cost(model.config)]
    any_rows = anytime(test_logits, test.labels, model.config)
    bud_rows = budgeted(val_logits, val.labels, test_logits, test.labels, flops)
    ckpt = Path(meta["path"])
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out_dir = Path(args.out_dir) if args.out_dir else run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{ckpt.name} (step {meta['step']}), {cfg.data} test split: {len(test)} images, "
          f"thresholds on {len(val)}")
    if note:
        print("note: " + note)
    print("\nanytime prediction\n" + format_anytime(any_rows))
    print("\nbudgeted batch classification\n" + format_budgeted(bud_rows))
    result = {"checkpoint": meta["path"], "step": meta["step"], "data": cfg.data,
              "n_test": len(test), "n_thresholds": len(val), "note": note,
              "anytime": any_rows, "budgeted": bud_rows}
    (out_dir / "evaluation.json").write_text(json.dumps(result, indent=1))
    if args.plots:
        from msdnet_flax.evaluation.plots import plot_anytime, plot_budgeted

        title = f"MSD-Net, {cfg.data}"
        plot_anytime(any_rows, out_dir / "anytime.png", title=title)
        plot_budgeted(bud_rows, out_dir / "budgeted.png", anytime_rows=any_rows, title=title)
    print(f"\nwrote {out_dir}/evaluation.json" + (" and the plots" if args.plots else ""))
    return result


if __name__ == "__main__":
    main()

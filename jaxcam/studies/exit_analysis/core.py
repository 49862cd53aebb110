"""``analyze_exits``: what each exit of a multi-exit network gets right and where it looks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam import EXIT_METHODS
from jaxcam.studies.exit_analysis import compute
from jaxcam.studies.exit_analysis.groups import (
    DEFAULT_BUDGET_P,
    difficulty_groups,
    stop_exit_groups,
)
from jaxcam.studies.exit_analysis.map_metrics import MAP_METRICS, map_metrics, rank_agreement
from jaxcam.studies.exit_analysis.metric_table import keys
from jaxcam.studies.exit_analysis.stats import CI_LEVEL, summarise
from msdnet_flax.data import ArrayDataset, normalize
from msdnet_flax.evaluation.core import predict

__all__ = ["analyze_exits", "DEFAULT_METHODS", "METRICS", "GROUP_METRICS",
           "DEFAULT_FAITHFULNESS_IMAGES", "DEFAULT_SCORECAM_IMAGES", "DEFAULT_STEPS"]

DEFAULT_METHODS = ("gradcam", "gradcamplusplus", "layercam", "scorecam")
# Sized for the 10-exit cifar10_anytime model on 2 CPU cores: per image and method, deletion and
# insertion curves cost 2 (steps + 1) forward passes per exit (about 0.85 s at 8 steps), and
# ScoreCAM one pass per feature channel per exit (about 2,200; 11.5 s per image).
DEFAULT_FAITHFULNESS_IMAGES = 48
DEFAULT_SCORECAM_IMAGES = 8
DEFAULT_STEPS = 8
#: Per-exit metrics of every method, in report order.
METRICS = keys("map", "faithfulness")
#: Metrics reported per group of images (with each exit's accuracy).
GROUP_METRICS = keys("map", grouped=True)


def _pad(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    pad = size - a.shape[axis]
    if pad <= 0:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, pad)
    return np.pad(a, widths)


def _method_values(model: Any, scorer: compute.ExitScorer, method: str, x: np.ndarray,
                   masks: np.ndarray, targets: np.ndarray, n: int, n_faith: int,
                   batch_size: int, steps: int) -> dict[str, np.ndarray]:
    """Per-image values of one method on the first ``n`` images: ``{metric: (K, n)}`` (the
    faithfulness AUCs on the first ``n_faith``), ``'agreement'`` ``(K, K, n)``."""
    out: dict[str, list[np.ndarray]] = {m: [] for m in (*METRICS, "agreement")}
    bs = max(1, min(batch_size, n))
    for start in range(0, n, bs):
        stop = min(n, start + bs)
        xb = jnp.asarray(_pad(x[start:stop], bs, 0))
        tb = jnp.asarray(_pad(targets[:, start:stop], bs, 1))
        if method == "scorecam":
            maps = compute.scorecam_maps(scorer, xb, tb)
        else:
            maps, _ = compute.gradient_maps(model, xb, tb, method)
        keep = stop - start
        values = map_metrics(maps, jnp.asarray(_pad(masks[start:stop], bs, 0)))
        for name in MAP_METRICS:
            out[name].append(np.asarray(values[name])[:, :keep])
        out["agreement"].append(np.asarray(rank_agreement(maps))[..., :keep])
        n_f = min(stop, n_faith) - start
        if n_f > 0:
            d, i = compute.faithfulness(scorer, xb[:n_f], maps[:, :n_f], tb[:, :n_f], steps)
            out["deletion_auc"].append(np.asarray(d))
            out["insertion_auc"].append(np.asarray(i))
    k = targets.shape[0]
    return {name: (np.concatenate(v, axis=-1) if v else np.zeros((k, 0), np.float32))
            for name, v in out.items()}


class _Boot:
    """Bootstrap summaries, each with its own resamples drawn from one key."""

    def __init__(self, key: jax.Array, n_boot: int):
        self.key, self.n_boot, self.calls = key, int(n_boot), 0

    def __call__(self, values: np.ndarray) -> list[dict[str, Any]]:
        self.calls += 1
        return summarise(values, jax.random.fold_in(self.key, self.calls), self.n_boot)


def _grouped(grouping: dict[str, Any], assignment: np.ndarray, correct: np.ndarray,
             per_method: dict[str, dict[str, np.ndarray]], boot: _Boot) -> list[dict[str, Any]]:
    """Per group: the count, each exit's accuracy, and each method's group metrics per exit."""
    groups = []
    for g, label in enumerate(grouping["labels"]):
        members = np.flatnonzero(assignment == g)
        entry: dict[str, Any] = {"label": label, "count": int(members.size),
                                 "accuracy": boot(correct[:, members]), "methods": {}}
        for method, values in per_method.items():
            inside = members[members < values["pointing"].shape[1]]
            entry["methods"][method] = {"n_images": int(inside.size),
                                        **{m: boot(values[m][:, inside]) for m in GROUP_METRICS}}
        groups.append(entry)
    return groups


def analyze_exits(model: Any, dataset: ArrayDataset, *, methods: Sequence[str] = DEFAULT_METHODS,
                  batch_size: int = 64, n_boot: int = 1000, key: jax.Array,
                  val_dataset: ArrayDataset | None = None, target: str = "true",
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  faithfulness_images: int | None = DEFAULT_FAITHFULNESS_IMAGES,
                  scorecam_images: int | None = DEFAULT_SCORECAM_IMAGES,
                  steps: int = DEFAULT_STEPS, difficulty_bins: Sequence[float] | None = None,
                  budget_p: float = DEFAULT_BUDGET_P, rows: int = 64,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Accuracy, localisation, faithfulness, spread and agreement of every exit's maps.

    On images with ground-truth object masks (e.g. ``msdnet_flax.data.generate``), for each
    method and each exit: pointing game and energy pointing game against the masks, deletion and
    insertion AUC (RISE; exit k's softmax probability of the target, through exit k's blocks
    only), area above half the map's maximum (fraction of the image) and normalised entropy of
    the map; each exit's accuracy; Spearman rank agreement of the maps of exit k with exit k+1
    and with the last exit; and the same accuracy / pointing / energy per group of images, grouped
    by the exit where budgeted-batch inference stops them and by the generator's difficulty.
    Every mean comes with a percentile-bootstrap 95% interval over images.

    Images are analysed in a random order drawn from ``key``, so the subsets of the expensive
    parts (ScoreCAM, faithfulness) are random samples: each is the first images of that order.

    Args:
      model: a multi-exit MSD-Net (``exit_features``, ``classify``, ``__call__`` -> exits' logits).
      dataset: uint8 images with ``masks`` (and ``difficulty`` for the difficulty grouping).
      methods: activation-gradient methods (:data:`jaxcam.EXIT_METHODS`) and/or ``'scorecam'``.
      batch_size: images per jitted call.
      n_boot: bootstrap resamples per interval.
      key: JAX PRNG key (image order and resamples).
      val_dataset: the split the budgeted-batch thresholds are set on (default: ``dataset``
        itself, noted in the report).
      target: ``'true'`` (the label) or ``'pred'`` (each exit's own prediction).
      mean, std: the model's input normalisation (default the data set's).
      faithfulness_images: images with deletion/insertion curves per method (``None``: all).
      scorecam_images: images explained with ScoreCAM (``None``: all).
      steps: deletion/insertion curve steps (8: 128 of a 32 x 32 image's pixels per step).
      difficulty_bins: edges of the difficulty groups (default tertiles).
      budget_p: exit-share parameter of the budgeted-batch thresholds (1: equal shares).
      rows: images per jitted call when scoring perturbed copies.
      log: called with a line of progress now and then.

    Returns:
      A JSON-serialisable report: ``settings``, ``notes``, ``n_exits``, ``accuracy`` (per exit),
      ``methods`` (per method: ``n_images``, ``n_faithfulness``, ``per_exit`` {metric: per
      exit}, ``agreement`` {``next``, ``last``, ``matrix``}), ``groupings`` (``stop_exit``,
      ``difficulty``; each with ``assignment`` in the data set's order, ``counts`` and
      ``groups``), ``timing``. A summary is ``{'mean', 'lo', 'hi', 'n'}``.
    """
    say = log or (lambda line: None)
    methods = _check(dataset, methods, target)
    n = len(dataset.labels)
    mean = tuple(dataset.mean if mean is None else mean)
    std = tuple(dataset.std if std is None else std)
    clock: dict[str, float] = {}
    k_order, k_boot = jax.random.split(key)
    order = np.asarray(jax.random.permutation(k_order, n))
    labels = dataset.labels[order]
    t0 = time.perf_counter()
    logits = predict(model, dataset.images[order], batch_size, mean=mean, std=std)
    correct = (logits.argmax(-1) == labels[None]).astype(np.float64)
    clock["predict"] = time.perf_counter() - t0
    per_method, sizes = _all_method_values(
        model, methods, np.asarray(normalize(dataset.images[order], mean, std)),
        dataset.masks[order], _targets(target, labels, logits),
        batch_size=batch_size, steps=steps, rows=rows, scorecam_images=scorecam_images,
        faithfulness_images=faithfulness_images, clock=clock, say=say)

    t0 = time.perf_counter()
    # One key, resampled per summary in call order: the order below fixes every interval.
    boot = _Boot(k_boot, n_boot)
    report_methods = {method: _method_report(values, sizes[method], boot)
                      for method, values in per_method.items()}
    if val_dataset is not None:
        val_logits = predict(model, val_dataset, batch_size, mean=mean, std=std)
    else:
        val_logits = logits
    groupings = _groupings(model, dataset, order, val_logits, logits, labels, correct,
                           per_method, boot, budget_p=budget_p, difficulty_bins=difficulty_bins)
    clock["statistics"] = time.perf_counter() - t0
    return {
        "settings": {"n_images": n, "methods": list(methods), "target": target,
                     "n_boot": int(n_boot), "ci_level": CI_LEVEL, "steps": int(steps),
                     "faithfulness_images": faithfulness_images,
                     "scorecam_images": scorecam_images, "budget_p": float(budget_p),
                     "n_threshold_images": int(val_logits.shape[1]),
                     "thresholds_on": "validation split" if val_dataset is not None
                     else "analysed images", "mean": list(mean), "std": list(std)},
        "notes": _notes(n, val_dataset is not None, sizes, faithfulness_images),
        "n_exits": int(logits.shape[0]),
        "accuracy": boot(correct),
        "methods": report_methods,
        "groupings": groupings,
        "timing": {"seconds": clock, "total_seconds": float(sum(clock.values()))},
    }


def _targets(target: str, labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """``(K, n)`` int32 classes explained: the labels, or each exit's prediction."""
    targets = np.broadcast_to(labels, logits.shape[:2]) if target == "true" \
        else logits.argmax(-1)
    return np.ascontiguousarray(targets, np.int32)


def _check(dataset: ArrayDataset, methods: Sequence[str], target: str) -> tuple[str, ...]:
    """The methods, each once; raises ValueError on anything :func:`analyze_exits` refuses."""
    if dataset.masks is None:
        raise ValueError("analyze_exits needs ground-truth masks (dataset.masks)")
    methods = tuple(dict.fromkeys(methods))
    for m in methods:
        if m not in EXIT_METHODS and m != "scorecam":
            raise ValueError(f"unknown method {m!r}; choose from {EXIT_METHODS + ('scorecam',)}")
    if target not in ("true", "pred"):
        raise ValueError(f"target must be 'true' or 'pred', got {target!r}")
    if len(dataset.labels) == 0:
        raise ValueError("the data set is empty")
    return methods


def _all_method_values(model: Any, methods: Sequence[str], x: np.ndarray, masks: np.ndarray,
                       targets: np.ndarray, *, batch_size: int, steps: int, rows: int,
                       scorecam_images: int | None, faithfulness_images: int | None,
                       clock: dict[str, float], say: Callable[[str], None]
                       ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, tuple[int, int]]]:
    """Every method's per-image values, and its ``(maps, faithfulness)`` image counts."""
    n, n_exits = len(x), targets.shape[0]
    scorer = compute.ExitScorer(model, rows=rows)
    per_method: dict[str, dict[str, np.ndarray]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for method in methods:
        n_m = n if method != "scorecam" or scorecam_images is None else min(n, scorecam_images)
        n_f = n_m if faithfulness_images is None else min(n_m, faithfulness_images)
        say(f"  {method}: maps of {n_m} images x {n_exits} exits, faithfulness on {n_f}")
        t0 = time.perf_counter()
        per_method[method] = _method_values(model, scorer, method, x, masks, targets, n_m, n_f,
                                            batch_size, steps)
        clock[method] = time.perf_counter() - t0
        sizes[method] = (n_m, n_f)
    return per_method, sizes


def _method_report(values: dict[str, np.ndarray], size: tuple[int, int],
                   boot: _Boot) -> dict[str, Any]:
    """One method's summaries: every per-exit metric, and the agreement between exits."""
    agree = values["agreement"]
    last = agree.shape[0] - 1
    return {"n_images": size[0], "n_faithfulness": size[1],
            "per_exit": {m: boot(values[m]) for m in METRICS},
            "agreement": {"next": boot(np.stack([agree[k, k + 1] for k in range(last)])
                                       if last else np.zeros((0, agree.shape[-1]))),
                          "last": boot(agree[:last, last]),
                          "matrix": agree.mean(-1).tolist()}}


def _groupings(model: Any, dataset: ArrayDataset, order: np.ndarray, val_logits: np.ndarray,
               logits: np.ndarray, labels: np.ndarray, correct: np.ndarray,
               per_method: dict[str, dict[str, np.ndarray]], boot: _Boot, *, budget_p: float,
               difficulty_bins: Sequence[float] | None) -> dict[str, Any]:
    """The images grouped by stopping exit and by difficulty, each group summarised."""
    flops = None
    if hasattr(model, "config"):
        from msdnet_flax.model.cost import cost

        flops = [c.flops for c in cost(model.config)]
    stop = stop_exit_groups(val_logits, logits, labels, flops, p=budget_p)
    diff = None
    if dataset.difficulty is not None:
        diff = difficulty_groups(dataset.difficulty[order], difficulty_bins)
    inverse = np.argsort(order)
    groupings: dict[str, Any] = {}
    for grouping in (g for g in (stop, diff) if g is not None):
        assignment = np.asarray(grouping["assignment"])
        grouping["groups"] = _grouped(grouping, assignment, correct, per_method, boot)
        grouping["assignment"] = assignment[inverse].tolist()  # the data set's order
        groupings[grouping["kind"]] = grouping
    return groupings


def _notes(n: int, separate_val: bool, sizes: dict[str, tuple[int, int]],
           faithfulness_images: int | None) -> list[str]:
    """What a reader must know about subsets and thresholds."""
    notes = []
    if not separate_val:
        notes.append("budgeted-batch thresholds were set on the analysed images themselves "
                     "(no separate validation split given)")
    if "scorecam" in sizes and sizes["scorecam"][0] < n:
        notes.append(f"ScoreCAM explains a random subset of {sizes['scorecam'][0]} of the {n} "
                     "images (it scores one masked copy per feature channel)")
    if faithfulness_images is not None and faithfulness_images < n:
        notes.append(f"Deletion/insertion AUCs are on a random subset of at most "
                     f"{faithfulness_images} images per method")
    return notes

"""Grouping images into easy and hard: by where budgeted-batch inference stops, by difficulty."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from msdnet_flax.evaluation.core import (
    apply_thresholds,
    exit_fractions,
    find_thresholds,
    max_softmax,
)

__all__ = ["max_softmax", "stop_exit_groups", "difficulty_groups", "DEFAULT_BUDGET_P"]

#: The budget of the stop-exit grouping: kalviny's exit-share parameter ``p``; ``p = 1`` sends an
#: equal share of the threshold split out of every exit (a mid budget of the paper's range
#: 0.05..1.95).
DEFAULT_BUDGET_P = 1.0


def stop_exit_groups(val_logits: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                     flops: Sequence[float] | None = None, p: float = DEFAULT_BUDGET_P
                     ) -> dict[str, Any]:
    """Images grouped by the exit at which budgeted-batch inference lets them leave.

    Thresholds come from ``val_logits`` by :func:`msdnet_flax.evaluation.core.find_thresholds`
    with the exit shares ``q_k = p^k / sum_j p^j``
    (:func:`msdnet_flax.evaluation.core.exit_fractions`); each image leaves at the first exit
    whose confidence reaches its threshold, the last exit taking the rest
    (:func:`msdnet_flax.evaluation.core.apply_thresholds`).

    Args:
      val_logits: ``(K, Nv, C)`` logits of the threshold split.
      logits: ``(K, N, C)`` logits of the analysed images.
      labels: ``(N,)`` true classes.
      flops: ``(K,)`` cumulative cost per exit (only for the reported average cost).
      p: the exit-share parameter.

    Returns:
      ``{'kind', 'p', 'fractions', 'thresholds', 'labels', 'assignment' (N,), 'counts',
      'accuracy', 'flops'}``: group ``g`` holds the images stopping at exit ``g``.
    """
    k_exits = np.asarray(logits).shape[0]
    val_conf, _ = max_softmax(val_logits)
    conf, pred = max_softmax(logits)
    q = exit_fractions(p, k_exits)
    thresholds = find_thresholds(val_conf, q)
    flops = np.zeros(k_exits) if flops is None else np.asarray(flops, np.float64)
    routed = apply_thresholds(conf, pred == np.asarray(labels)[None], thresholds, flops)
    exits = np.asarray(routed["exits"], np.int64)
    return {"kind": "stop_exit", "p": float(p), "fractions": q.tolist(),
            "thresholds": [float(t) if np.isfinite(t) else None for t in thresholds],
            "labels": [f"stops at exit {k + 1}" for k in range(k_exits)],
            "assignment": exits.tolist(), "counts": routed["exit_counts"],
            "accuracy": routed["accuracy"], "flops": routed["flops"]}


def difficulty_groups(difficulty: np.ndarray, bins: Sequence[float] | None = None
                      ) -> dict[str, Any]:
    """Images grouped by the generator's difficulty: tertiles, or the given bin edges.

    Args:
      difficulty: ``(N,)`` per-image difficulty in ``[0, 1]``.
      bins: increasing edges ``[e_0, ..., e_G]``; an image with ``e_g <= d < e_{g+1}`` is in group
        ``g`` (the last bin is closed; values outside the edges go to the first or last group).
        Default: the tertiles of ``difficulty`` (edges at its min, 1/3 and 2/3 quantiles, max).

    Returns:
      ``{'kind', 'edges', 'labels', 'assignment' (N,), 'counts'}``.
    """
    d = np.asarray(difficulty, np.float64)
    if bins is None:
        edges = np.quantile(d, [0, 1 / 3, 2 / 3, 1]) if d.size else np.array([0, 1 / 3, 2 / 3, 1])
        source = "tertiles"
    else:
        edges = np.asarray(bins, np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"difficulty bins must be at least 2 increasing edges, got {bins}")
        source = "given bins"
    n_groups = edges.size - 1
    assignment = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, n_groups - 1)
    labels = [f"difficulty {edges[g]:.2f}-{edges[g + 1]:.2f}" for g in range(n_groups)]
    counts = np.bincount(assignment, minlength=n_groups)
    return {"kind": "difficulty", "source": source, "edges": edges.tolist(), "labels": labels,
            "assignment": assignment.astype(int).tolist(), "counts": counts.tolist()}

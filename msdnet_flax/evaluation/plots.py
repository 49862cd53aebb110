"""The paper's two evaluation plots (accuracy against multiply-adds), as PNG via matplotlib.

matplotlib is imported inside each function, with the non-interactive Agg backend.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = ["plot_anytime", "plot_budgeted"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_anytime(rows: Sequence[dict[str, Any]], path: str | os.PathLike, *,
                 title: str = "MSD-Net") -> None:
    """Anytime prediction: top-1 accuracy of each exit against its cumulative multiply-adds.

    Args:
      rows: ``msdnet_flax.evaluation.core.anytime`` output.
      path: the PNG to write.
      title: the plot's title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    x = [r["flops"] / 1e6 for r in rows]
    y = [100 * r["accuracy"] for r in rows]
    ax.plot(x, y, "o-", color="tab:red", label="MSD-Net exits")
    for r, xi, yi in zip(rows, x, y, strict=True):
        ax.annotate(str(r["exit"] + 1), (xi, yi), textcoords="offset points", xytext=(3, -10),
                    fontsize=7)
    ax.set(xlabel="budget (multiply-adds per image, millions)", ylabel="top-1 accuracy (%)",
           title=f"{title}: anytime prediction")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_budgeted(rows: Sequence[dict[str, Any]], path: str | os.PathLike, *,
                  anytime_rows: Sequence[dict[str, Any]] | None = None,
                  title: str = "MSD-Net") -> None:
    """Budgeted batch classification: accuracy against the average multiply-adds per image.

    Args:
      rows: ``msdnet_flax.evaluation.core.budgeted`` output (one point per ``p``).
      path: the PNG to write.
      anytime_rows: optionally, the single exits, drawn for reference.
      title: the plot's title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    pts = sorted((r["flops"] / 1e6, 100 * r["accuracy"]) for r in rows)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], ".-", color="tab:red",
            label="MSD-Net, dynamic exits")
    if anytime_rows:
        ax.plot([r["flops"] / 1e6 for r in anytime_rows],
                [100 * r["accuracy"] for r in anytime_rows], "s", color="tab:gray",
                markersize=4, label="single exits")
    ax.set(xlabel="average budget (multiply-adds per image, millions)",
           ylabel="top-1 accuracy (%)", title=f"{title}: budgeted batch classification")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

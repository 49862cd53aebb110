"""Matplotlib figures of an exit-analysis report (PNG, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxcam.studies.exit_analysis.metric_table import METRIC_TABLE, keys

__all__ = ["PANELS", "plot_method", "plot_groups", "plot_agreement", "plot_methods"]

#: (key, title) of the per-exit panels; ``accuracy`` and ``agreement_next`` are special keys.
PANELS = tuple((m.key, m.title) for m in METRIC_TABLE if m.title)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(ax: Any, stats: Sequence[dict[str, Any]], label: str, color: Any,
          offset: int = 1, alpha: float = 0.2) -> None:
    pts = [(k + offset, s) for k, s in enumerate(stats) if s["mean"] is not None]
    if not pts:
        return
    x = [p[0] for p in pts]
    ax.plot(x, [p[1]["mean"] for p in pts], "o-", ms=3, color=color, label=label)
    ax.fill_between(x, [p[1]["lo"] for p in pts], [p[1]["hi"] for p in pts], color=color,
                    alpha=alpha, lw=0)


def _series(split: dict[str, Any], method: str, key: str) -> list[dict[str, Any]]:
    if key == "accuracy":
        return split["accuracy"]
    if key == "agreement_next":
        return split["methods"][method]["agreement"]["next"]
    return split["methods"][method]["per_exit"][key]


def plot_method(splits: Sequence[dict[str, Any]], names: Sequence[str], method: str,
                path: Path) -> None:
    """Every per-exit panel for one method, one line (mean and 95% CI band) per split."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(14, 6), dpi=100)
    colors = plt.get_cmap("tab10")
    for ax, (key, title) in zip(axes.flat, PANELS, strict=True):
        for i, (split, name) in enumerate(zip(splits, names, strict=True)):
            _band(ax, _series(split, method, key), name, colors(i))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("exit" if key != "agreement_next" else "exit k", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{method}: per exit, mean and 95% bootstrap CI over images", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_methods(split: dict[str, Any], name: str, path: Path) -> None:
    """Methods side by side for one split: pointing, energy, deletion and insertion per exit."""
    plt = _pyplot()
    keys = PANELS[1:5]
    fig, axes = plt.subplots(1, len(keys), figsize=(14, 3.4), dpi=100)
    colors = plt.get_cmap("tab10")
    for ax, (key, title) in zip(axes, keys, strict=True):
        for i, method in enumerate(split["methods"]):
            n = split["methods"][method]["n_images"]
            _band(ax, _series(split, method, key), f"{method} (n={n})", colors(i))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("exit", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{name}: methods compared", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_groups(grouping: dict[str, Any], method: str, title: str, path: Path) -> None:
    """Easy vs hard: each exit's accuracy, pointing and energy, one line per group of images."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100)
    groups = [g for g in grouping["groups"] if g["count"] > 0]
    cmap = plt.get_cmap("viridis")
    for ax, key in zip(axes, keys(grouped=True), strict=True):
        for i, g in enumerate(groups):
            stats = g["accuracy"] if key == "accuracy" else g["methods"][method][key]
            color = cmap(i / max(1, len(groups) - 1))
            _band(ax, stats, f"{g['label']} (n={g['count']})", color,
                  alpha=0.2 if len(groups) <= 3 else 0.06)
        ax.set_title(key if key == "accuracy" else f"{key} ({method})", fontsize=9)
        ax.set_xlabel("exit", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_agreement(split: dict[str, Any], name: str, path: Path) -> None:
    """Heatmaps of the mean Spearman correlation between every pair of exits, per method."""
    plt = _pyplot()
    methods = list(split["methods"])
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods), 3.4), dpi=100,
                             squeeze=False)
    image = None
    for ax, method in zip(axes[0], methods, strict=True):
        matrix = split["methods"][method]["agreement"]["matrix"]
        k = len(matrix)
        image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(k), [str(i + 1) for i in range(k)], fontsize=7)
        ax.set_yticks(range(k), [str(i + 1) for i in range(k)], fontsize=7)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("exit", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="mean Spearman rho")
    fig.suptitle(f"{name}: agreement between exits' maps", fontsize=10)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)

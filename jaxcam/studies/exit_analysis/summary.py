"""A short written summary of an exit-analysis report, generated from its numbers only.

A difference is called a difference only where the two 95% confidence intervals do not overlap;
otherwise the text says "no clear difference". Nothing is claimed that the numbers do not show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxcam.studies.exit_analysis.metric_table import keys, metric

__all__ = ["compare", "summary_markdown", "fmt"]



def fmt(s: dict[str, Any] | None) -> str:
    """``0.812 [0.790, 0.833]`` (or ``n/a``)."""
    if not s or s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"


def compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    """``'higher'`` / ``'lower'`` (b relative to a) where the CIs are disjoint, else
    ``'no clear difference'``; ``'n/a'`` when either is missing."""
    if a.get("mean") is None or b.get("mean") is None:
        return "n/a"
    if b["lo"] > a["hi"]:
        return "higher"
    if b["hi"] < a["lo"]:
        return "lower"
    return "no clear difference"


def _trend(name: str, stats: Sequence[dict[str, Any]]) -> str:
    first, last = stats[0], stats[-1]
    verdict = compare(first, last)
    verb = {"higher": "rises", "lower": "falls"}.get(verdict)
    k = len(stats)
    if verb is None:
        return (f"{name}: {verdict} between exit 1 ({fmt(first)}) and exit {k} "
                f"({fmt(last)}).")
    return f"{name} {verb} from {fmt(first)} at exit 1 to {fmt(last)} at exit {k}."


def _groups_text(grouping: dict[str, Any], method: str) -> list[str]:
    groups = [g for g in grouping["groups"] if g["count"] > 0]
    if len(groups) < 2:
        return [f"- {grouping['kind']}: fewer than two non-empty groups; nothing to compare."]
    easy, hard = groups[0], groups[-1]
    k = len(easy["accuracy"])
    lines = [f"- {easy['label']} (n={easy['count']}) vs {hard['label']} (n={hard['count']}):"]
    for exit_ in sorted({0, k - 1}):
        parts = []
        for key in keys(grouped=True):
            a, b = (g["accuracy"][exit_] if key == "accuracy"
                    else g["methods"][method][key][exit_] for g in (easy, hard))
            parts.append(f"{key} {fmt(a)} vs {fmt(b)} ({compare(a, b)} for the harder group)")
        lines.append(f"  - at exit {exit_ + 1}: " + "; ".join(parts) + ".")
    return lines


def summary_markdown(splits: Sequence[dict[str, Any]], names: Sequence[str],
                     header: dict[str, Any]) -> str:
    """The summary of a multi-split report as Markdown.

    Args:
      splits: one :func:`jaxcam.studies.exit_analysis.analyze_exits` report per split.
      names: the splits' names.
      header: model and run details (``model``, ``checkpoint step`` ...), listed first.
    """
    out = ["# Exit analysis: summary", ""]
    out += [f"- {k}: {v}" for k, v in header.items()]
    out += ["", "Intervals are 95% percentile-bootstrap CIs over images. A difference is stated "
            "only where the two intervals do not overlap; overlapping intervals are reported as "
            "\"no clear difference\" (which is not evidence of no difference). The intervals "
            "cover image sampling only, not training randomness (one trained model).", ""]
    for split, name in zip(splits, names, strict=True):
        methods = list(split["methods"])
        primary = methods[0]
        out += [f"## {name} ({split['settings']['n_images']} images)", ""]
        out.append("- " + _trend("Accuracy", split["accuracy"]))
        for method in methods:
            info = split["methods"][method]
            out.append(f"- **{method}** (maps of {info['n_images']} images, faithfulness on "
                       f"{info['n_faithfulness']}):")
            for key in keys("map", "faithfulness"):
                name = metric(key).name[0].upper() + metric(key).name[1:]
                out.append("  - " + _trend(name, info["per_exit"][key]))
            agree = info["agreement"]
            if agree["next"]:
                nxt = [s["mean"] for s in agree["next"] if s["mean"] is not None]
                out.append(f"  - Agreement of consecutive exits' maps (Spearman): from "
                           f"{min(nxt):.2f} to {max(nxt):.2f}; exit 1 vs the last exit: "
                           f"{fmt(agree['last'][0])}.")
        for key, grouping in split["groupings"].items():
            title = ("Grouped by the exit where budgeted-batch inference stops "
                     f"(p = {grouping['p']:g})" if key == "stop_exit"
                     else f"Grouped by generator difficulty ({grouping['source']})")
            out += ["", f"{title}, {primary} maps:"]
            out += _groups_text(grouping, primary)
        if split["notes"]:
            out += ["", "Notes: " + " ".join(f"{n}." for n in split["notes"])]
        out.append("")
    if len(splits) > 1:
        out += _across_splits(splits, names)
    return "\n".join(out)


def _across_splits(splits: Sequence[dict[str, Any]], names: Sequence[str]) -> list[str]:
    """The first split against the last, at the first and the last exit."""
    a, b = splits[0], splits[-1]
    primary = next(iter(a["methods"]))
    k = a["n_exits"]
    out = [f"## {names[0]} vs {names[-1]}", ""]
    for exit_ in sorted({0, k - 1}):
        parts = []
        for key in keys(grouped=True):
            sa, sb = (s["accuracy"][exit_] if key == "accuracy"
                      else s["methods"][primary]["per_exit"][key][exit_] for s in (a, b))
            parts.append(f"{key} {fmt(sa)} vs {fmt(sb)} ({compare(sa, sb)} in {names[-1]})")
        out.append(f"- exit {exit_ + 1} ({primary} maps): " + "; ".join(parts) + ".")
    out.append("")
    return out

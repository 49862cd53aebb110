"""Writing an exit-analysis report: ``report.json``, ``report.html`` with PNG figures, and
``summary.md``."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxcam.studies.exit_analysis import figures
from jaxcam.studies.exit_analysis.metric_table import METRIC_TABLE, keys
from jaxcam.studies.exit_analysis.summary import fmt, summary_markdown

__all__ = ["write_report"]

_COLUMNS = tuple((m.key, m.column) for m in METRIC_TABLE)

_STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:100%}
table{border-collapse:collapse;font-size:12px;margin:.4em 1em 1em 0}
td,th{border:1px solid #bbb;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#eee}.row{display:flex;flex-wrap:wrap;align-items:flex-start}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}.note{color:#a40}"""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "split"


def _cell(s: dict[str, Any] | None) -> str:
    return f"<td>{html.escape(fmt(s))}</td>"


def _method_table(split: dict[str, Any], method: str) -> str:
    info = split["methods"][method]
    k = split["n_exits"]
    nxt, last = info["agreement"]["next"], info["agreement"]["last"]
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in _COLUMNS)
    rows = []
    for e in range(k):
        cells = {"accuracy": split["accuracy"][e],
                 "agreement_next": nxt[e] if e < len(nxt) else None,
                 "agreement_last": last[e] if e < len(last) else None,
                 **{m: info["per_exit"][m][e] for m in info["per_exit"]}}
        rows.append(f"<tr><th>{e + 1}</th>" + "".join(_cell(cells[c]) for c, _ in _COLUMNS)
                    + "</tr>")
    return (f"<table><tr><th>exit</th>{head}</tr>{''.join(rows)}</table>"
            f"<p>maps: {info['n_images']} images; faithfulness: {info['n_faithfulness']}</p>")


def _group_table(grouping: dict[str, Any], method: str, key: str) -> str:
    k = len(grouping["groups"][0]["accuracy"])
    head = "".join(f"<th>exit {e + 1}</th>" for e in range(k))
    rows = []
    for g in grouping["groups"]:
        stats = g["accuracy"] if key == "accuracy" else g["methods"][method][key]
        rows.append(f"<tr><th>{html.escape(g['label'])}</th><td>{g['count']}</td>"
                    + "".join(_cell(s) for s in stats) + "</tr>")
    what = key if key == "accuracy" else f"{key} ({method})"
    return (f"<p><b>{html.escape(what)}</b></p><table><tr><th>group</th><th>n</th>{head}</tr>"
            f"{''.join(rows)}</table>")


def _settings_table(items: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td style='text-align:left'>"
                   f"{html.escape(str(v))}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>"


def write_report(splits: Sequence[dict[str, Any]], names: Sequence[str], out: Path,
                 header: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the report of one or more splits (analysed alike) into ``out``.

    Args:
      splits: :func:`jaxcam.studies.exit_analysis.analyze_exits` reports.
      names: one name per split (e.g. ``"easy (difficulty 0-0.4)"``).
      out: output directory (created).
      header: model and run details shown first.

    Returns:
      ``{'json', 'html', 'summary', 'figures': [...]}`` paths.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = dict(header or {})
    document = {"header": header, "splits": [{"name": n, **s} for n, s in
                                            zip(names, splits, strict=True)]}
    json_path = out / "report.json"
    json_path.write_text(json.dumps(document, indent=1, allow_nan=False))
    pngs: list[Path] = []

    def figure(name: str) -> Path:
        path = out / name
        pngs.append(path)
        return path

    methods = list(splits[0]["methods"])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>jaxcam exit analysis"
             f"</title><style>{_STYLE}</style></head><body><h1>Exit analysis</h1>",
             _settings_table(header)]
    parts.append("<p>Every number is a mean over images with its 95% percentile-bootstrap "
                 "confidence interval; every number is also in <a href='report.json'>report.json"
                 "</a>, and <a href='summary.md'>summary.md</a> states what they show.</p>")
    for s, name in zip(splits, names, strict=True):
        parts.append(f"<h3>{html.escape(name)}</h3>" + _settings_table(s["settings"]))
        parts += [f"<p class='note'>{html.escape(n)}.</p>" for n in s["notes"]]
    for method in methods:
        path = figure(f"exits_{_slug(method)}.png")
        figures.plot_method(splits, names, method, path)
        parts.append(f"<h2>{html.escape(method)}</h2><img src='{path.name}' alt='{method}'>"
                     "<div class='row'>")
        parts += [f"<div><p><b>{html.escape(n)}</b></p>{_method_table(s, method)}</div>"
                  for s, n in zip(splits, names, strict=True)]
        parts.append("</div>")
    parts.append("<h2>Methods compared</h2><div class='row'>")
    for s, name in zip(splits, names, strict=True):
        path = figure(f"methods_{_slug(name)}.png")
        figures.plot_methods(s, name, path)
        parts.append(f"<img src='{path.name}' alt='methods, {html.escape(name)}'>")
    parts.append("</div><h2>Agreement between exits</h2>")
    for s, name in zip(splits, names, strict=True):
        path = figure(f"agreement_{_slug(name)}.png")
        figures.plot_agreement(s, name, path)
        parts.append(f"<img src='{path.name}' alt='agreement, {html.escape(name)}'>")
    parts.append("<h2>Easy vs hard</h2>")
    for s, name in zip(splits, names, strict=True):
        for key, grouping in s["groupings"].items():
            title = (f"{name}: by the exit where budgeted-batch inference stops "
                     f"(p = {grouping['p']:g}, thresholds on {s['settings']['thresholds_on']})"
                     if key == "stop_exit"
                     else f"{name}: by generator difficulty ({grouping['source']})")
            path = figure(f"groups_{_slug(name)}_{key}.png")
            figures.plot_groups(grouping, methods[0], title, path)
            parts.append(f"<h3>{html.escape(title)}</h3><img src='{path.name}' alt='groups'>")
            parts += [_group_table(grouping, methods[0], k) for k in keys(grouped=True)]
            for method in methods[1:]:
                parts += [_group_table(grouping, method, k)
                          for k in keys("map", grouped=True)]
    parts.append("</body></html>")
    html_path = out / "report.html"
    html_path.write_text("\n".join(parts), encoding="utf-8")
    summary_path = out / "summary.md"
    summary_path.write_text(summary_markdown(splits, names, header), encoding="utf-8")
    return {"json": json_path, "html": html_path, "summary": summary_path, "figures": pngs}

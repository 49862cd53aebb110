"""A static HTML gallery of explained images: one ``index.html``, relative links, no scripts."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["write_gallery"]

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin: 0 0 .4em 0; word-break: break-all; }
table { border-collapse: collapse; margin: .4em 0; font-size: .9em; }
td, th { border: 1px solid #ccc; padding: .15em .5em; text-align: left; }
th { background: #eee; }
.entry { background: #fff; border: 1px solid #ddd; padding: .8em; margin: 1em 0; }
.grid { max-width: 100%; height: auto; display: block; }
.ok { color: #080; font-weight: bold; } .bad { color: #c00; font-weight: bold; }
.warn { background: #fee; border: 2px solid #c00; padding: .6em; font-weight: bold; }
.errors td { color: #c00; } .small { color: #666; font-size: .85em; }
"""


def _href(target: str | os.PathLike) -> str:
    """A relative URL for a path relative to the gallery's directory."""
    return quote(Path(target).as_posix())


def _cell(value: Any) -> str:
    if value is True:
        return '<td class="ok">&#10003;</td>'
    if value is False:
        return '<td class="bad">&#10007;</td>'
    if value is None:
        return "<td></td>"
    if isinstance(value, float):
        return f"<td>{value:.3f}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(c)) for c in columns) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_gallery(out_dir: str | os.PathLike, entries: Sequence[Mapping[str, Any]],
                  settings: Mapping[str, Any], *, title: str = "jaxcam explanations",
                  errors: Sequence[tuple[str, str]] = (), warning: str | None = None) -> Path:
    """Write ``out_dir/index.html``: every explained image with its grid and predictions.

    The page is plain HTML with inline CSS (no scripts, no server, nothing fetched from the
    internet); images are linked by paths relative to ``out_dir``, so the folder can be moved or
    zipped and opened anywhere with ``file://``.

    Args:
      out_dir: the directory holding the pictures; ``index.html`` is written there.
      entries: one mapping per image with ``name`` (heading), ``grid`` (the grid's path relative
        to ``out_dir``), and optionally ``source`` (the input file, shown as text), ``links``
        (``{label: relative path}``, e.g. the overlay), ``rows`` (one mapping per exit, shown as
        a table: ``{"exit": 1, "prediction": "circle", "confidence": 0.93, "correct": True}``;
        True/False render as a check mark or a cross) and ``note`` (a line of text).
      settings: the run's settings (model, method, target, ...), shown as a table.
      title: the page title.
      errors: ``(file, reason)`` pairs of inputs that could not be explained.
      warning: a line shown prominently at the top (e.g. that the model is untrained).

    Returns:
      The path of ``index.html``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             '<link rel="icon" href="data:,">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if warning:
        parts.append(f'<p class="warn">{html.escape(warning)}</p>')
    parts.append("<h2>Settings</h2>" + _table([{"setting": k, "value": v}
                                                for k, v in settings.items()]))
    parts.append(f'<p class="small">{len(entries)} image(s) explained'
                 + (f", {len(errors)} could not be read" if errors else "") + ".</p>")
    if errors:
        rows = "".join(f"<tr><td>{html.escape(str(f))}</td><td>{html.escape(str(r))}</td></tr>"
                       for f, r in errors)
        parts.append(f'<h2>Errors</h2><table class="errors"><tr><th>file</th><th>reason</th>'
                     f"</tr>{rows}</table>")
    for entry in entries:
        name = html.escape(str(entry["name"]))
        block = [f'<div class="entry" id="{html.escape(_href(entry["name"]))}"><h2>{name}</h2>']
        if entry.get("source"):
            block.append(f'<p class="small">{html.escape(str(entry["source"]))}</p>')
        if entry.get("note"):
            block.append(f"<p>{html.escape(str(entry['note']))}</p>")
        block.append(f'<a href="{_href(entry["grid"])}"><img class="grid" '
                     f'src="{_href(entry["grid"])}" alt="per-exit maps of {name}"></a>')
        links = entry.get("links") or {}
        if links:
            block.append("<p>" + " &middot; ".join(
                f'<a href="{_href(p)}">{html.escape(str(label))}</a>'
                for label, p in links.items()) + "</p>")
        block.append(_table(entry.get("rows") or []))
        block.append("</div>")
        parts.append("\n".join(block))
    parts.append("</body></html>\n")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path

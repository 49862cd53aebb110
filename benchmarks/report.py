"""Reporting: ratios and targets, the Markdown section for RESULTS.md, the throughput plots."""

from __future__ import annotations

import os
from typing import Any

from benchmarks import jax_side as J
from benchmarks import torch_side as T

# The targets: (name, contender, reference, kind, threshold). "speedup" is the
# contender's median time over jaxcam's (jaxcam this many times the images/s); "cost" is
# jaxcam's median time over the jitted JAX forward's.
TARGETS = (
    ("all-exit: jaxcam vs pytorch-grad-cam (images/s)", T.PGC_ALL, J.JAXCAM_ALL, "speedup", 10.0),
    ("all-exit: jaxcam vs the article's hooks (images/s)", T.HOOKS_ALL, J.JAXCAM_ALL, "speedup",
     3.0),
    ("single exit: jaxcam vs pytorch-grad-cam (images/s)", T.PGC_LAST, J.JAXCAM_LAST, "speedup",
     2.0),
    ("jaxcam all-exit cost / jitted forward", J.JAXCAM_ALL, J.JAX_FORWARD, "cost", 1.6),
    ("jaxcam last-exit cost / jitted forward", J.JAXCAM_LAST, J.JAX_FORWARD, "cost", 1.1),
)
TARGET_CELL = ("cifar10_anytime", 64)

# Columns of the summary table: (header, numerator, denominator) as median-time ratios.
SUMMARY = (
    ("x pgc all", T.PGC_ALL, J.JAXCAM_ALL),
    ("x hooks", T.HOOKS_ALL, J.JAXCAM_ALL),
    ("x captum", T.CAPTUM_ALL, J.JAXCAM_ALL),
    ("x torchcam", T.TORCHCAM_ALL, J.JAXCAM_ALL),
    ("x torch best", T.TORCH_BEST, J.JAXCAM_ALL),
    ("x pgc last", T.PGC_LAST, J.JAXCAM_LAST),
    ("all / jax fwd", J.JAXCAM_ALL, J.JAX_FORWARD),
    ("last / jax fwd", J.JAXCAM_LAST, J.JAX_FORWARD),
    ("torch fwd / jax fwd", T.TORCH_FORWARD, J.JAX_FORWARD),
)


def _ratio(rows: dict[str, Any], num: str, den: str, stat: str = "median_s") -> float | None:
    if stat in rows.get(num, {}) and stat in rows.get(den, {}):
        return rows[num][stat] / rows[den][stat]
    return None


def cell_ratios(rows: dict[str, Any]) -> dict[str, float | None]:
    return {header: _ratio(rows, num, den) for header, num, den in SUMMARY}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, evaluated on cifar10_anytime batch 64 when this run has it."""
    name, batch = TARGET_CELL
    cells = [c for c in results["configs"].get(name, {}).get("cells", []) if c["batch"] == batch]
    if not cells:
        return []
    rows = cells[0]["contenders"]
    found = []
    for label, num, den, kind, threshold in TARGETS:
        value = _ratio(rows, num, den)
        fastest = _ratio(rows, num, den, "min_s")
        met = None if value is None else (value >= threshold if kind == "speedup"
                                          else value <= threshold)
        found.append({"target": label, "value": value, "min_ratio": fastest,
                      "threshold": threshold, "kind": kind, "met": met})
    return found


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _ms(seconds: float) -> str:
    ms = 1e3 * seconds
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _mb(nbytes: int | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.0f}"


def cell_table(cell: dict[str, Any]) -> list[str]:
    lines = [
        "| contender | work | rounds | median ms | IQR ms | min-max ms | images/s "
        "| time / jaxcam | peak mem MB | first call s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in cell["contenders"].values():
        if "skipped" in row:
            lines.append(f"| {row['label']} | {row['work']} | 0 | {row['skipped']} "
                         "| | | | | | |")
            continue
        lines.append(
            f"| {row['label']} | {row['work']} | {row['rounds']}{'*' if row['warmup_kept'] else ''}"
            f" | {_ms(row['median_s'])} "
            f"| {_ms(row['q1_s'])}-{_ms(row['q3_s'])} | {_ms(row['min_s'])}-{_ms(row['max_s'])} "
            f"| {row['images_per_s']:.1f} | {_fmt(row['time_over_jaxcam'])} "
            f"| {_mb(row['peak_memory_bytes'])} | {row['first_call_s']:.2f} |")
    return lines


def markdown(results: dict[str, Any], json_path: str, plots: dict[str, str], md_path: str
             ) -> str:
    m, v = results["machine"], results["versions"]
    s = results["settings"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("jax", "jaxlib", "flax", "torch", "grad-cam",
                                             "captum", "torchcam"))
    base = os.path.dirname(md_path) if md_path else "."
    rel = lambda p: os.path.relpath(p, base)  # noqa: E731
    lines = [
        f"## {m['date'][:10]}: {results['device'].upper()} suite"
        + (" (--quick smoke run: not for numbers)" if s["quick"] else ""),
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu']}; JAX backend "
        f"{results['jax_backend']}; torch threads {results['torch_threads']} (= the cores "
        f"XLA:CPU's pool uses); OMP_WAIT_POLICY={m['omp_wait_policy']}",
        f"- libraries: {libs}; python {v['python']}",
        f"- command: `{results['command']}` ({results.get('wall_s', 0):.0f} s); "
        f"JSON: `{rel(json_path)}`",
        f"- timing: a warm-up call first (JAX's first call = trace + compile + run, shown "
        f"as 'first call'), then interleaved rounds, one call of each contender per round. Up "
        f"to {s['rounds']} rounds; the run's time limit ({s['time_limit_s']:.0f} s, 0 = none) "
        f"is shared among the cells (at most {s['cell_budget_s']:.0f} s of rounds each) and a "
        f"contender too slow for its share gets fewer rounds (at least {s['min_rounds']}; 3 "
        f"for cifar10_anytime batch 64, the targets' cell), spread over the cell's run. "
        f"Rounds marked * count the warm-up call as the first "
        f"sample (PyTorch calls over {s['slow_call_s']:g} s, which have nothing to compile). "
        f"Same weights, inputs and fixed random target classes for all; images NHWC for JAX, "
        f"NCHW for PyTorch, converted before timing.",
        *(["- per-exit PyTorch contenders (pytorch-grad-cam once per exit, hooks, captum, "
           "torchcam) timed up to batch "
           + ", ".join(f"{b} ({c})" for c, b in s["per_exit_max_batch"].items() if b)
           + " (`--per-exit-max-batch`; 0 times them at every batch)"]
          if any(s.get("per_exit_max_batch", {}).values()) else []),
        "- jaxcam is called as a user explaining many batches would: `jaxcam.ExitExplainer` "
        "and `jaxcam.Explainer` built once per model (split, checks), called with device "
        "images and NumPy classes.",
        f"- 'time / jaxcam': median time over jaxcam's for the same work (explain_exits for "
        f"all-exit and forward rows, explain for last-exit rows): how many times faster jaxcam "
        f"is. Peak memory: {results['memory_method']}.",
        "",
    ]
    for name, entry in results["configs"].items():
        labels = entry["labels"]
        lines += [f"### {name} ({entry['exits']} exits, {entry['image_size']}px)", "",
                  f"Parity at batch {entry['parity_batch']}, against jaxcam (max abs diff of "
                  "maps < 1e-4; logits relative to max |logit|); a contender that disagrees "
                  "is not timed.", "",
                  "| contender | compared as | result |", "| --- | --- | --- |"]
        for key, p in entry["parity"].items():
            lines.append(f"| {labels[key]} | {p['compared_as']} | {p['summary']} |")
        lines += ["", "Median-time ratios (x: times faster jaxcam is; cost: times the jitted "
                  "forward):", "",
                  "| batch | " + " | ".join(h for h, _, _ in SUMMARY) + " |",
                  "| ---: |" + " ---: |" * len(SUMMARY)]
        for cell in entry["cells"]:
            lines.append(f"| {cell['batch']} | "
                         + " | ".join(_fmt(cell["ratios"][h]) for h, _, _ in SUMMARY) + " |")
        for cell in entry["cells"]:
            lines += ["", f"Batch {cell['batch']}:", "", *cell_table(cell)]
        if name in plots:
            lines += ["", f"![images/s vs batch, {name}]({rel(plots[name])})"]
        lines.append("")
    found = targets(results)
    if found:
        lines += ["### Targets (cifar10_anytime, batch 64)", "",
                  "Measured = ratio of medians (what 'met' judges); the ratio of the fastest "
                  "calls is shown too, as a load-robust check.", "",
                  "| target | measured | fastest calls | wanted | met |",
                  "| --- | ---: | ---: | ---: | --- |"]
        for t in found:
            want = (">= " if t["kind"] == "speedup" else "<= ") + f"{t['threshold']:g}"
            met = "n/a" if t["met"] is None else "yes" if t["met"] else "**no**"
            lines.append(f"| {t['target']} | {_fmt(t['value'])} | {_fmt(t['min_ratio'])} "
                         f"| {want} | {met} |")
        lines.append("")
    results["targets"] = found
    return "\n".join(lines)


def append(path: str, section: str) -> None:
    new = not os.path.exists(path)
    with open(path, "a") as f:
        if new:
            f.write("# Benchmark results\n\nSections are appended by `python -m benchmarks` "
                    "(see benchmarks/cli.py); newest last.\n")
        f.write("\n" + section + "\n")


def plot_all(results: dict[str, Any], out: str, suffix: str = "") -> dict[str, str]:
    """images/s against batch size, one line per contender, one PNG per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    for name, entry in results["configs"].items():
        cells = entry["cells"]
        if not cells:
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        for key, label in entry["labels"].items():
            points = [(c["batch"], c["contenders"][key]["images_per_s"]) for c in cells
                      if "images_per_s" in c["contenders"].get(key, {})]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            style = "-" if key.startswith("jax") else "--"
            ax.plot(xs, ys, style, marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s (median)")
        machine = results["machine"]
        where = machine["gpu"] if results["device"] == "gpu" else (
            f"{machine['cpu']}, {machine['cores']} cores")
        ax.set_title(f"Grad-CAM on MSD-Net {name}: {where}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = os.path.join(out, f"throughput_{name}{suffix}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths[name] = path
    return paths

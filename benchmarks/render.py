"""Re-render a run's plots and Markdown section from its JSON (e.g. a run stopped by a timeout:
the JSON is written after every cell).

    python -m benchmarks.render benchmarks/results/run_....json [--md benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os

from benchmarks import report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_path")
    parser.add_argument("--md", default="", help="append the section to this file too")
    args = parser.parse_args(argv)
    with open(args.json_path) as f:
        results = json.load(f)
    suffix = "" if results["device"] == "cpu" else f"_{results['device']}"
    plots = report.plot_all(results, os.path.dirname(args.json_path) or ".", suffix=suffix)
    section = report.markdown(results, args.json_path, plots, args.md)
    print(section)
    if args.md:
        report.append(args.md, section)


if __name__ == "__main__":
    main()

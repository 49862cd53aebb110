"""The ``jaxcam`` command: explain images with a multi-exit MSD-Net, see the maps in a gallery.

``jaxcam explain`` turns image files into per-exit class activation maps, overlays, grids, a
``cams.npz`` and a static ``index.html``; ``jaxcam demo`` does so on procedural images with the
bundled model; ``jaxcam methods`` lists the methods.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "parse_exits", "method_descriptions"]

_DESCRIPTION = """Class activation maps (Grad-CAM family) for every exit of a multi-exit MSD-Net.

  jaxcam explain INPUTS...   maps of images or a data set (shards, all devices, several
                             hosts, resumable), overlays, per-exit grids, an HTML gallery
  jaxcam demo                the same on procedural shapes with the bundled model (./diags)
  jaxcam methods             the methods, one line each
  jaxcam analyze-exits       per-exit accuracy, localisation, faithfulness: a report"""
_EPILOG = ("Run 'jaxcam COMMAND --help' for a command's options. Other models: the Python API, "
           "jaxcam.explain / jaxcam.explain_exits (README.md).")


def method_descriptions() -> dict[str, str]:
    """Every name in ``jaxcam.METHODS`` with the first line of its function's docstring."""
    import jaxcam
    from jaxcam import input_space
    from jaxcam.methods import ACTIVATION_GRADIENT_METHODS

    functions = {n.replace("_", ""): getattr(input_space, n) for n in input_space.__all__}
    out = {}
    for name in jaxcam.METHODS:
        fn = ACTIVATION_GRADIENT_METHODS.get(name) or functions.get(name)
        doc = (getattr(fn, "__doc__", None) or "").strip()
        out[name] = doc.splitlines()[0] if doc else name
    return out


def parse_exits(text: str, n_exits: int) -> tuple[int, ...]:
    """0-based exit indices from ``all``, ``last`` or a list of 1-based numbers and ranges.

    ``"1,4-6,last"`` on a 10-exit model gives ``(0, 3, 4, 5, 9)``.

    Raises:
      ValueError: a number out of 1..n_exits, or unparsable text.
    """
    if text.strip().lower() == "all":
        return tuple(range(n_exits))
    picked: list[int] = []
    for part in (p.strip().lower() for p in text.split(",")):
        try:
            if part == "last":
                numbers = [n_exits]
            elif "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                numbers = list(range(lo, hi + 1))
            else:
                numbers = [int(part)]
        except ValueError:
            raise ValueError(f"--exits: cannot read {part!r}; use 'all' or numbers 1..{n_exits} "
                             f"such as 1,5,{n_exits} or 2-4") from None
        for k in numbers:
            if not 1 <= k <= n_exits:
                raise ValueError(f"--exits: exit {k} does not exist; the model has exits "
                                 f"1..{n_exits} (1 is the earliest)")
            if k - 1 not in picked:
                picked.append(k - 1)
    if not picked:
        raise ValueError("--exits: no exit given")
    return tuple(picked)


def _parse_target(text: str, class_names: Sequence[str]) -> str | int:
    if text in ("pred", "true"):
        return text
    if text in class_names:
        return list(class_names).index(text)
    try:
        index = int(text)
    except ValueError:
        raise ValueError(f"--target: {text!r} is neither pred, true, a class name "
                         f"({', '.join(class_names)}) nor a class index") from None
    if not 0 <= index < len(class_names):
        raise ValueError(f"--target: class index {index} out of range 0..{len(class_names) - 1}")
    return index


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``jaxcam`` and its subcommands."""
    from jaxcam import EXIT_METHODS

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="jaxcam", description=_DESCRIPTION, formatter_class=fmt,
                                     epilog=_EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from jaxcam._cli_batch import add_explain_parser

    add_explain_parser(sub, fmt)

    demo = sub.add_parser(
        "demo", formatter_class=fmt, help="explain procedural shapes with the bundled model",
        description="Write N (default 12) procedural shape images of increasing difficulty and\n"
        "their object masks into OUT/inputs, explain every exit of the bundled model on them and\n"
        "write the grids, overlays, cams.npz and index.html into OUT. Takes under a minute on a\n"
        "CPU. The bundled model is msdnet_flax.pretrained() (model card: README).")
    demo.add_argument("--out", default="diags", type=Path, metavar="DIR",
                      help="output directory (default ./diags)")
    demo.add_argument("--method", default="gradcam", choices=EXIT_METHODS,
                      help="CAM method (default gradcam)")
    demo.add_argument("--n", type=int, default=12, metavar="N",
                      help="number of images (default 12)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the images (default 0)")

    sub.add_parser("methods", help="list the CAM methods, one line each",
                   description="List jaxcam.METHODS with one line each. Methods marked '*' work "
                   "with 'jaxcam explain' (multi-exit, one pass); the others with the Python API "
                   "jaxcam.explain.")
    from jaxcam._cli_analyze import add_analyze_parser

    add_analyze_parser(sub, fmt)
    return parser


def _model_settings(spec: str, model: Any, meta: dict[str, Any]) -> dict[str, Any]:
    config = model.config
    size = config.image_size
    return {
        "model": spec if spec != "bundled" else f"bundled ({meta.get('path', '?')})",
        "checkpoint step": meta.get("step", "n/a"),
        "architecture": f"MSD-Net, {config.data} heads, {model.num_exits} exits, "
                        f"{config.num_classes} classes",
        "preprocessing": f"whole image resized to {size}x{size} (INTER_AREA shrinking, "
                         f"INTER_LINEAR enlarging), normalised with mean "
                         f"{[round(m, 4) for m in meta['mean']]}, std "
                         f"{[round(s, 4) for s in meta['std']]}",
        "classes": ", ".join(map(str, meta["class_names"])),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _summary(out: Path, n_ok: int, errors: list, seconds: float) -> None:
    rate = n_ok / max(seconds, 1e-9)
    print(f"explained {n_ok} image(s) in {seconds:.1f} s ({rate:.1f} images/s); "
          f"{len(errors)} failed")
    print(f"  gallery: {out / 'index.html'}")
    print(f"  maps:    {out / 'cams.npz'}")
    if errors:
        print(f"failed inputs (also in {out / 'errors.txt'}):")
        for file, reason in errors:
            print(f"  {file}: {reason}")


def _cmd_explain(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from jaxcam._cli_batch import run_explain

    return run_explain(args, parser)


def _cmd_demo(args: argparse.Namespace) -> int:
    from jaxcam._cli_demo import run_demo

    return run_demo(args.out, method=args.method, n=args.n, seed=args.seed,
                    settings_for=_model_settings, summary=_summary)


def _cmd_methods() -> int:
    from jaxcam import EXIT_METHODS

    for name, line in method_descriptions().items():
        mark = "*" if name in EXIT_METHODS else " "
        print(f"{mark} {name:<20} {line}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jaxcam`` with ``argv`` (default ``sys.argv[1:]``).

    Args:
      argv: the arguments after the program name.

    Returns:
      The exit status: 0 success, 1 some inputs failed, 2 usage or model error.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "explain":
        return _cmd_explain(args, parser)
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "analyze-exits":
        from jaxcam._cli_analyze import run_analyze

        return run_analyze(args, parser)
    return _cmd_methods()


if __name__ == "__main__":
    sys.exit(main())

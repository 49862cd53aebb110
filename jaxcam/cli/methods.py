"""``jaxcam methods``: the registered CAM methods, one line each."""

from __future__ import annotations

import argparse
from typing import Any

from jaxcam.cli.common import Command

__all__ = ["COMMAND", "add_parser", "run", "method_descriptions"]


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    """Add ``methods`` to the ``jaxcam`` subparsers.

    Args:
      sub: the ``jaxcam`` subparsers.
      fmt: the help formatter class.

    Returns:
      The ``methods`` parser.
    """
    return sub.add_parser("methods", formatter_class=fmt,
                          help="list the CAM methods, one line each",
                          description="List the registered methods (jaxcam.registry) with one "
                          "line each: name, what it does, the paper. Methods marked '*' work "
                          "with 'jaxcam explain' (multi-exit, one pass); the others with the "
                          "Python API jaxcam.explain.")


def method_descriptions() -> dict[str, str]:
    """Every registered method's name with its one-line summary and its paper.

    Returns:
      ``{name: "summary (paper)"}`` in registration order.
    """
    from jaxcam import registry

    return {m.name: f"{m.summary} ({m.paper})" if m.paper else m.summary
            for m in registry.all_methods()}


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print the methods, ``*`` marking those ``jaxcam explain`` can use.

    Args:
      args: the parsed options (none).
      parser: its parser.

    Returns:
      0.
    """
    from jaxcam import registry

    multi_exit = set(registry.names(multi_exit=True))
    for name, line in method_descriptions().items():
        mark = "*" if name in multi_exit else " "
        print(f"{mark} {name:<20} {line}")
    return 0


COMMAND = Command("methods", add_parser, run)

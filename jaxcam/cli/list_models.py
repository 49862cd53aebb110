"""``jaxcam models``: the models ``--model`` takes by name, one line each."""

from __future__ import annotations

import argparse
from typing import Any

from jaxcam.cli.common import Command
from jaxcam.cli.models import describe_models

__all__ = ["COMMAND", "add_parser", "run"]


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    """Add ``models`` to the ``jaxcam`` subparsers.

    Args:
      sub: the ``jaxcam`` subparsers.
      fmt: the help formatter class.

    Returns:
      The ``models`` parser.
    """
    return sub.add_parser("models", formatter_class=fmt,
                          help="list the models --model takes by name",
                          description="List the models that --model takes by name, one line "
                          "each. --model also takes an msdnet_flax checkpoint path.")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print the models, one line each.

    Args:
      args: the parsed options (none).
      parser: its parser.

    Returns:
      0.
    """
    for name, summary in describe_models():
        print(f"{name:<20} {summary}")
    print(f"{'CHECKPOINT':<20} an msdnet_flax checkpoint: its .json/.safetensors file, a "
          f"checkpoint directory or a training run's out_dir")
    return 0


COMMAND = Command("models", add_parser, run)

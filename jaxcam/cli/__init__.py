"""The ``jaxcam`` command: explain photos with an ImageNet model or every exit of a multi-exit
MSD-Net, see the maps in a gallery.

The application over the library: each command is a module (:mod:`~jaxcam.cli.explain`,
:mod:`~jaxcam.cli.demo`, :mod:`~jaxcam.cli.methods`, :mod:`~jaxcam.cli.list_models`,
:mod:`~jaxcam.cli.analyze`) with a :class:`~jaxcam.cli.common.Command` record, its parser and
its run function; the models ``--model`` names are in :mod:`~jaxcam.cli.models`; :func:`main` builds
the parser from the table :data:`COMMANDS` and dispatches to the chosen command. Adding a
command is one module and one entry in the table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jaxcam.cli import analyze, demo, explain, list_models, methods
from jaxcam.cli.common import Command, parse_exits, run_with_compile_cache
from jaxcam.cli.methods import method_descriptions

__all__ = ["main", "console_main", "build_parser", "parse_exits", "method_descriptions", "COMMANDS"]

#: Every subcommand, in the order ``jaxcam --help`` lists them.
COMMANDS: tuple[Command, ...] = (explain.COMMAND, demo.COMMAND, methods.COMMAND,
                                 list_models.COMMAND, analyze.COMMAND)

_DESCRIPTION = """Class activation maps (Grad-CAM family) of photos with an ImageNet model, or of
every exit of a multi-exit MSD-Net.

  jaxcam explain INPUTS...   maps of images or a data set (shards, all devices, several
                             hosts, resumable), overlays, per-exit grids, an HTML gallery;
                             EfficientNet-Lite0 (ImageNet) unless --model says otherwise
  jaxcam demo                procedural shapes with the bundled MSD-Net (./diags)
  jaxcam methods             the methods, one line each
  jaxcam models              the models --model takes by name
  jaxcam analyze-exits       per-exit accuracy, localisation, faithfulness: a report

Compiled programs are kept in a persistent cache (~/.cache/jaxcam/xla, or under
$XDG_CACHE_HOME), so a command compiles only the first time it runs on a machine;
--no-compile-cache turns that off."""
_EPILOG = ("Run 'jaxcam COMMAND --help' for a command's options. Other models: the Python API, "
           "jaxcam.explain / jaxcam.explain_exits (README.md).")


def _build(commands: Sequence[Command]
           ) -> tuple[argparse.ArgumentParser, dict[str, tuple[Command, argparse.ArgumentParser]]]:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="jaxcam", description=_DESCRIPTION, formatter_class=fmt,
                                     epilog=_EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    table = {c.name: (c, c.add_parser(sub, fmt)) for c in commands}
    return parser, table


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``jaxcam`` and its subcommands.

    Returns:
      The parser.
    """
    return _build(COMMANDS)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jaxcam`` with ``argv`` (default ``sys.argv[1:]``).

    Args:
      argv: the arguments after the program name.

    Returns:
      The exit status: 0 success, 1 some inputs failed, 2 usage or model error.
    """
    parser, table = _build(COMMANDS)
    args = parser.parse_args(argv)
    command, sub = table[args.command]
    return run_with_compile_cache(command, args, sub)


def console_main() -> None:
    """The ``jaxcam`` executable: :func:`main`, then a prompt exit.

    Python's teardown of the interpreter (freeing every module and object of JAX, Flax and
    NumPy, joining idle worker threads) takes 0.3-0.5 s, a fifth of a warm ``jaxcam explain
    photo.jpg``. When :func:`main` returns, every result file is written and closed, so the
    process flushes its standard streams and logging, runs the ``atexit`` handlers (JAX's own
    clean-up among them) and ends with ``os._exit``. A multi-process run (``jax.distributed``)
    exits the ordinary way.
    """
    import atexit
    import logging
    import os

    status = main()
    jax = sys.modules.get("jax")
    if jax is not None and jax.distributed.is_initialized():
        sys.exit(status)
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

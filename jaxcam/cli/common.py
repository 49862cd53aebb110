"""What the ``jaxcam`` commands share: the command record, ``--model``, exits, targets, the
run's summary."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Command", "add_model_option", "load_model", "preprocessing_for", "model_settings",
           "parse_exits", "parse_target", "print_summary", "add_compile_cache_options",
           "run_with_compile_cache", "print_compile_stats"]


@dataclasses.dataclass(frozen=True)
class Command:
    """One ``jaxcam`` subcommand: how to add its parser, and how to run it.

    Attributes:
      name: the subcommand (``explain``).
      add_parser: ``(subparsers, formatter_class) -> parser`` adds it with its options.
      run: ``(args, parser) -> exit status``; imports what it needs itself, so that
        ``jaxcam --help`` stays fast.
    """

    name: str
    add_parser: Callable[[Any, type[argparse.HelpFormatter]], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace, argparse.ArgumentParser], int]


def add_model_option(parser: argparse.ArgumentParser, default: str = "msdnet-shapes") -> None:
    """Add ``--model NAME|CHECKPOINT``.

    Args:
      parser: the subcommand's parser.
      default: the model used without the option (a name of
        :data:`jaxcam.cli.models.MODELS`).
    """
    from jaxcam.cli.models import MODELS

    parser.add_argument("--model", default=default, metavar="NAME|CHECKPOINT",
                        help=f"a model by name ({', '.join(MODELS)}; 'jaxcam models' lists "
                        f"them; default {default}) or an msdnet_flax checkpoint: its "
                        ".json/.safetensors file, a checkpoint directory or a training run's "
                        "out_dir")


def load_model(spec: str) -> tuple[Any, dict[str, Any]]:
    """``(model in eval mode, meta)`` for ``--model``: a name or a checkpoint path.

    Args:
      spec: the option's value (see :func:`jaxcam.cli.models.load_model`).

    Returns:
      The model and its metadata (``class_names``, ``mean``, ``std``, ``image_size``, ...).

    Raises:
      FileNotFoundError: an unknown name, or the checkpoint does not exist.
      ValueError: the checkpoint is malformed.
    """
    from jaxcam.cli.models import load_model as load

    return load(spec)


def preprocessing_for(model: Any, meta: dict[str, Any]) -> Any:
    """The :class:`jaxcam.batch.Preprocessing` of a loaded model.

    Args:
      model: the model (an MSD-Net's ``config.image_size`` when ``meta`` has no
        ``image_size``).
      meta: its metadata (``mean``, ``std``, ``class_names``; ``image_size`` and ``crop`` when
        :func:`load_model` gave it).

    Returns:
      The record: the model's input size and normalisation, whole-image resize unless ``crop``.
    """
    from jaxcam.batch import Preprocessing

    size = meta.get("image_size") or model.config.image_size
    return Preprocessing(image_size=size, mean=meta["mean"], std=meta["std"],
                         class_names=meta["class_names"], crop=bool(meta.get("crop", False)))


def model_settings(spec: str, model: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """The lines a gallery shows about the model and its preprocessing.

    Args:
      spec: the ``--model`` value.
      model: the model.
      meta: its metadata.

    Returns:
      ``{setting: value}`` in display order.
    """
    from jaxcam.cli.models import MODELS, model_description

    names = [str(c) for c in meta["class_names"]]
    classes = ", ".join(names) if len(names) <= 20 else \
        f"{len(names)}: {', '.join(names[:5])}, ..., {names[-1]}"
    described = model_description(model, meta)
    where = meta.get("path", "?")
    return {
        "model": f"{spec} ({where})" if spec in MODELS or spec == "bundled" else spec,
        "checkpoint step": meta.get("step", "n/a"),
        "architecture": described["architecture"],
        "preprocessing": described["preprocessing"],
        "classes": classes,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def parse_exits(text: str, n_exits: int) -> tuple[int, ...]:
    """0-based exit indices from ``all``, ``last`` or a list of 1-based numbers and ranges.

    ``"1,4-6,last"`` on a 10-exit model gives ``(0, 3, 4, 5, 9)``.

    Args:
      text: the ``--exits`` value.
      n_exits: the model's number of exits.

    Returns:
      The exits, in the order given, each once.

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


def parse_target(text: str, class_names: Sequence[str]) -> str | int:
    """``pred``, ``true``, or the class index that ``--target`` names.

    Args:
      text: the ``--target`` value: ``pred``, ``true``, a class name or a 0-based index.
      class_names: the model's classes.

    Returns:
      ``"pred"``, ``"true"`` or a class index.

    Raises:
      ValueError: neither of those, or an index out of range.
    """
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


def print_summary(summary: Any, n_show: int = 20) -> None:
    """Print what a :func:`jaxcam.batch.explain_dataset` run did, and where its outputs are.

    Args:
      summary: the run's :class:`jaxcam.batch.RunSummary`.
      n_show: failed inputs listed at most.
    """
    from tqdm import tqdm

    t = summary.timings
    rate = f"{summary.images_per_s:.1f} images/s" if summary.resumed < summary.shards \
        else "nothing left to compute"
    print(f"explained {summary.explained} image(s) in {summary.seconds:.1f} s ({rate}); "
          f"{summary.failed} failed")
    if summary.resumed:
        print(f"  resumed: {summary.resumed} of {summary.shards} shard(s) were already complete")
    if getattr(summary, "changed", 0):
        print(f"  recomputed: {summary.changed} shard(s) whose input files changed since they "
              f"were written")
    if t.loop_s > 0:
        wait = t.input_wait_s / t.loop_s
        print(f"  this process: {t.explained / t.loop_s:.1f} images/s after compiling; "
              f"compile {t.compile_s:.1f} s, device {t.compute_s:.1f} s, decode "
              f"{t.decode_s:.1f} s (thread total), write {t.write_s:.1f} s (writer thread); "
              f"device waited on input {100 * wait:.0f}% of {tqdm.format_interval(t.loop_s)}")
    print(f"  {summary.processes} process(es), {summary.devices} device(s) each, batch "
          f"{summary.batch_size}")
    out = summary.out
    print(f"  outputs: {out} (manifest.json, shards/, errors.jsonl)")
    if (out / "index.html").exists():
        print(f"  gallery: {out / 'index.html'}")
    if (out / "cams.npz").exists():
        print(f"  maps:    {out / 'cams.npz'}")
    if not summary.complete:
        print("  INCOMPLETE: shards are missing (another process failed?); run the same "
              "command again to finish")
    if summary.errors:
        print(f"failed inputs (also in {out / 'errors.jsonl'}):")
        from jaxcam.batch import shown

        for file, reason in summary.errors[:n_show]:
            print(shown(f"  {file}: {reason}"))
        if len(summary.errors) > n_show:
            print(f"  ... and {len(summary.errors) - n_show} more")


def add_compile_cache_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-compile-cache`` and ``--compile-cache-dir DIR``.

    Args:
      parser: the parser of a command that compiles (explain, demo, analyze-exits).
    """
    parser.add_argument("--no-compile-cache", dest="compile_cache", action="store_false",
                        help="compile every program anew instead of keeping the compiled "
                        "programs in the persistent cache (default: on)")
    parser.add_argument("--compile-cache-dir", default=None, metavar="DIR",
                        help="the persistent compilation cache (default "
                        "$XDG_CACHE_HOME/jaxcam/xla, or ~/.cache/jaxcam/xla)")


def run_with_compile_cache(command: Command, args: argparse.Namespace,
                           parser: argparse.ArgumentParser) -> int:
    """Run a command, with JAX's persistent compilation cache on unless the options say not.

    Commands without the options (:func:`add_compile_cache_options`) run as they are. Those
    with them print, at the end, how long compiling took and how many programs came from the
    cache; a second identical run compiles nothing.

    Args:
      command: the chosen command.
      args: its parsed options.
      parser: its parser.

    Returns:
      The command's exit status.
    """
    if not hasattr(args, "compile_cache"):
        return command.run(args, parser)
    import time

    import jax
    from jax.experimental.compilation_cache import compilation_cache

    from jaxcam.compile_cache import compile_stats, enable_compile_cache

    # main() may run inside a longer process (tests, a notebook): JAX's settings are put back
    # afterwards, so that the process's later compilations are not all written to disk.
    saved = {name: getattr(jax.config, name) for name in _CACHE_SETTINGS}
    directory = None
    if args.compile_cache:
        try:
            directory = enable_compile_cache(args.compile_cache_dir)
        except OSError as exc:  # a read-only home: explain anyway, compiling as usual
            print(f"jaxcam: compilation cache off ({exc})", file=sys.stderr)
    before, start = compile_stats(), time.perf_counter()
    try:
        status = command.run(args, parser)
    finally:
        if directory is not None:
            for name, value in saved.items():
                jax.config.update(name, value)
            compilation_cache.reset_cache()
    print_compile_stats(compile_stats() - before, directory, time.perf_counter() - start)
    return status


# The settings enable_compile_cache changes.
_CACHE_SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                   "jax_persistent_cache_min_entry_size_bytes", "jax_enable_compilation_cache")


def print_compile_stats(stats: Any, directory: Any, seconds: float) -> None:
    """Print one line: compile time, and what the persistent cache did.

    Args:
      stats: the run's :class:`jaxcam.compile_cache.CompileStats`.
      directory: the cache directory, or None when the cache is off.
      seconds: the command's wall time.
    """
    if directory is None:
        cache = "persistent cache off"
    elif stats.cache_hits and not stats.compiled:
        cache = f"all {stats.cache_hits} from the persistent cache {directory} (nothing compiled)"
    else:
        cache = (f"{stats.cache_hits} from the persistent cache {directory}, "
                 f"{stats.compiled} compiled and stored")
    print(f"compiling: {stats.seconds:.1f} s for {stats.programs} program(s), {cache}; "
          f"the command took {seconds:.1f} s")

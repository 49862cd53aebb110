"""What the ``jaxcam`` commands share: the command record, ``--model``, exits, targets, the
run's summary."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Command", "add_model_option", "load_model", "preprocessing_for", "model_settings",
           "parse_exits", "parse_target", "print_summary"]


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


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--model bundled|CHECKPOINT`` (default ``bundled``).

    Args:
      parser: the subcommand's parser.
    """
    parser.add_argument("--model", default="bundled", metavar="bundled|CHECKPOINT",
                        help="'bundled' (default: the trained model shipped with msdnet_flax) "
                        "or an msdnet_flax checkpoint: its .json/.safetensors file, a "
                        "checkpoint directory or a training run's out_dir")


def load_model(spec: str) -> tuple[Any, dict[str, Any]]:
    """``(model in eval mode, meta)`` for ``--model``: ``bundled`` or a checkpoint path.

    Args:
      spec: the option's value.

    Returns:
      The model and its checkpoint metadata (``class_names``, ``mean``, ``std``, ...).

    Raises:
      FileNotFoundError: the bundled model or the checkpoint does not exist.
      ValueError: the checkpoint is malformed.
    """
    if spec == "bundled":
        from msdnet_flax.pretrained import pretrained

        return pretrained()
    from msdnet_flax.checkpoint import load_checkpoint

    model, meta = load_checkpoint(spec)
    model.eval()
    return model, meta


def preprocessing_for(model: Any, meta: dict[str, Any]) -> Any:
    """The :class:`jaxcam.batch.Preprocessing` of an MSD-Net checkpoint.

    Args:
      model: the MSD-Net (its ``config.image_size``).
      meta: its checkpoint metadata (``mean``, ``std``, ``class_names``).

    Returns:
      The record: whole-image resize to the model's size, the checkpoint's normalisation.
    """
    from jaxcam.batch import Preprocessing

    return Preprocessing(image_size=model.config.image_size, mean=meta["mean"],
                         std=meta["std"], class_names=meta["class_names"])


def model_settings(spec: str, model: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """The lines a gallery shows about the model and its preprocessing.

    Args:
      spec: the ``--model`` value.
      model: the MSD-Net.
      meta: its checkpoint metadata.

    Returns:
      ``{setting: value}`` in display order.
    """
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
        for file, reason in summary.errors[:n_show]:
            print(f"  {file}: {reason}")
        if len(summary.errors) > n_show:
            print(f"  ... and {len(summary.errors) - n_show} more")

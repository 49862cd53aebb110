"""The training run's settings: :class:`TrainConfig`, its JSON form and its command line.

Defaults follow the paper's CIFAR recipe (Huang et al., ICLR 2018, and kalviny/MSDNet-PyTorch):
300 epochs, batch 64, SGD with Nesterov momentum 0.9, learning rate 0.1 divided by 10 after 50%
and 75% of the epochs, weight decay 1e-4 on every parameter.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.presets import PRESETS

__all__ = ["TrainConfig", "DATA_SOURCES", "SCHEDULES", "build_parser", "config_from_args",
           "config_to_argv", "parse"]

DATA_SOURCES = ("procedural", "cifar10", "cifar100", "folder")
SCHEDULES = ("step", "cosine")
_HELP = {
    "model": "MSD-Net preset name (its num_classes follows the data) or an MSDNetConfig",
    "data": "data source: " + ", ".join(DATA_SOURCES),
    "data_path": "directory of the cifar10/cifar100 python batches or of the image folder",
    "n_train": "procedural: training images",
    "n_val": "procedural: validation images (0: none)",
    "n_test": "procedural: test images (used by evaluation)",
    "difficulty": "procedural: range of the per-image difficulty, two numbers in [0, 1]",
    "data_seed": "procedural: seed of the generated images",
    "holdout": "cifar/folder: training images held out for validation (paper: 5000; 0: the "
               "test set validates)",
    "epochs": "training epochs (the schedule spans them all)",
    "max_steps": "stop after this many steps in all (0: train every epoch), e.g. for a smoke "
                 "test or a speed measurement; a later run with a larger value resumes",
    "batch_size": "global batch size (a multiple of the device count)",
    "lr": "peak learning rate",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum",
    "weight_decay": "L2 weight decay added to the gradient, as PyTorch's SGD does",
    "decay_all": "decay every parameter as kalviny's code does; off: only conv/linear kernels "
                 "(no BatchNorm scale/bias, no linear bias)",
    "schedule": "learning-rate schedule: 'step' (x0.1 at 50%% and 75%% of the epochs, the "
                "paper's) or 'cosine' (per step, to zero)",
    "warmup_steps": "linear warm-up steps from 0 to lr before the schedule",
    "augment": "pad-4 random crop and horizontal flip on the device",
    "seed": "seed of the initial weights, the data order and the augmentation",
    "init_from": "start from this checkpoint's weights and BatchNorm statistics instead of a "
                 "random initialisation (fine-tuning; the optimizer and schedule start afresh)",
    "out_dir": "run directory: checkpoints, JSONL logs; an existing run there is resumed",
    "log_every": "steps between JSONL log records and progress refreshes",
    "checkpoint_every": "steps between extra checkpoints (0: only at the end of each epoch)",
    "keep": "checkpoints kept (the oldest are deleted)",
    "devices": "local devices to shard the batch over (0: all)",
    "validate": "evaluate every exit on the validation split after each epoch",
    "fast_conv_grads": "on CPU, rewrite the strided convolutions' input gradients that XLA:CPU "
                       "computes slowly (ignored on GPU/TPU)",
    "progress": "progress line on stderr",
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; ``TrainConfig.from_dict(c.to_dict()) == c``.

    Attributes are documented by ``python -m msdnet_flax.training --help`` (one flag per field).
    """

    model: str | MSDNetConfig = "cifar10_anytime"
    data: str = "procedural"
    data_path: str | None = None
    n_train: int = 5000
    n_val: int = 1000
    n_test: int = 1000
    difficulty: tuple[float, float] = (0.0, 1.0)
    data_seed: int = 0
    holdout: int = 0
    epochs: int = 300
    max_steps: int = 0
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    decay_all: bool = True
    schedule: str = "step"
    warmup_steps: int = 0
    augment: bool = True
    seed: int = 0
    init_from: str | None = None
    out_dir: str = "runs/msdnet"
    log_every: int = 50
    checkpoint_every: int = 0
    keep: int = 3
    devices: int = 0
    validate: bool = True
    fast_conv_grads: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "difficulty", tuple(float(d) for d in self.difficulty))

        def fail(field: str, why: str) -> None:
            raise ValueError(f"TrainConfig.{field}={getattr(self, field)!r} is invalid: {why}")

        if isinstance(self.model, str) and self.model not in PRESETS:
            fail("model", f"unknown preset; known: {', '.join(PRESETS)}")
        if not isinstance(self.model, str | MSDNetConfig):
            fail("model", "expected a preset name or an MSDNetConfig")
        if self.data not in DATA_SOURCES:
            fail("data", f"expected one of {', '.join(DATA_SOURCES)}")
        if self.data != "procedural" and not self.data_path:
            fail("data_path", f"data={self.data!r} needs the directory holding it")
        if self.schedule not in SCHEDULES:
            fail("schedule", f"expected one of {', '.join(SCHEDULES)}")
        for name in ("epochs", "batch_size", "n_train", "log_every", "keep"):
            if getattr(self, name) < 1:
                fail(name, "expected a positive integer")
        for name in ("n_val", "n_test", "holdout", "warmup_steps", "checkpoint_every",
                     "devices", "max_steps"):
            if getattr(self, name) < 0:
                fail(name, "expected a non-negative integer")
        if len(self.difficulty) != 2 or not 0 <= self.difficulty[0] <= self.difficulty[1] <= 1:
            fail("difficulty", "expected (low, high) with 0 <= low <= high <= 1")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            fail("lr", "expected lr > 0, weight_decay >= 0 and 0 <= momentum < 1")

    @property
    def image_size(self) -> int:
        """The input side the model expects (32 for CIFAR-style networks)."""
        model = PRESETS[self.model]() if isinstance(self.model, str) else self.model
        return model.image_size

    def model_config(self, num_classes: int) -> MSDNetConfig:
        """The architecture for a data set of ``num_classes`` classes.

        Raises:
          ValueError: ``model`` is an MSDNetConfig with another number of classes.
        """
        if isinstance(self.model, str):
            return PRESETS[self.model](num_classes=num_classes)
        if self.model.num_classes != num_classes:
            raise ValueError(f"TrainConfig.model has num_classes={self.model.num_classes} but "
                             f"the {self.data} data has {num_classes} classes")
        return self.model

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (an MSDNetConfig ``model`` becomes its dict)."""
        d = dataclasses.asdict(self)
        d["model"] = self.model if isinstance(self.model, str) else self.model.to_dict()
        d["difficulty"] = list(self.difficulty)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        if isinstance(d.get("model"), Mapping):
            d["model"] = MSDNetConfig(**d["model"])
        return cls(**d)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    """``int`` for ``'int'``, ``str`` for ``'str | None'``, ``bool`` for ``'bool'``."""
    hint = eval(annotation, {"MSDNetConfig": MSDNetConfig, "tuple": tuple}) \
        if isinstance(annotation, str) else annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0]
    return hint


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m msdnet_flax.training`` parser: one flag per TrainConfig field, and optional
    MSDNetConfig flags that override the preset's architecture."""
    parser = argparse.ArgumentParser(
        prog="python -m msdnet_flax.training",
        description="Train an MSD-Net with the paper's loss (sum of every exit's cross-entropy), "
                    "data-parallel over the local devices, resumable from its out-dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        default = getattr(defaults, field.name)
        kind = _base_type(field.type)
        help_ = _HELP[field.name]
        if field.name == "model":
            parser.add_argument("--model", default=default, choices=sorted(PRESETS), help=help_)
        elif kind is bool:
            parser.add_argument(_flag(field.name), default=default,
                                action=argparse.BooleanOptionalAction, help=help_)
        elif field.name == "difficulty":
            parser.add_argument("--difficulty", type=float, nargs=2, default=list(default),
                                metavar=("LOW", "HIGH"), help=help_)
        else:
            parser.add_argument(_flag(field.name), type=kind, default=default, help=help_,
                                **({"choices": DATA_SOURCES} if field.name == "data" else {}),
                                **({"choices": SCHEDULES} if field.name == "schedule" else {}))
    arch = parser.add_argument_group(
        "architecture", "MSDNetConfig fields overriding the --model preset (num_classes "
                        "defaults to the data's)")
    choices = {"data": ("cifar", "imagenet"), "step_mode": ("even", "lin_grow"),
               "prune": ("max", "min")}
    for field in dataclasses.fields(MSDNetConfig):
        kind = _base_type(field.type)
        name = "--arch-" + field.name.replace("_", "-")
        help_ = f"MSDNetConfig.{field.name} (unset: the preset's)%(default).0s"
        if kind is bool:
            arch.add_argument(name, default=None, action=argparse.BooleanOptionalAction,
                              help=help_)
        elif typing.get_origin(kind) is tuple:
            arch.add_argument(name, type=int, nargs="+", default=None, help=help_ + " per scale")
        else:
            arch.add_argument(name, type=kind, default=None, help=help_,
                              choices=choices.get(field.name))
    return parser


def config_from_args(args: argparse.Namespace, num_classes: int | None = None) -> TrainConfig:
    """The TrainConfig of parsed flags; architecture flags turn ``model`` into an MSDNetConfig
    (``num_classes``: the data's class count, used unless ``--arch-num-classes`` is given)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    overrides = {f.name: getattr(args, "arch_" + f.name) for f in dataclasses.fields(MSDNetConfig)
                 if getattr(args, "arch_" + f.name) is not None}
    if overrides:
        if "num_classes" not in overrides:
            if num_classes is None:
                raise ValueError("architecture overrides need the number of classes")
            overrides["num_classes"] = num_classes
        preset = PRESETS[values["model"]](num_classes=overrides["num_classes"])
        values["model"] = dataclasses.replace(preset, **overrides)
    return TrainConfig(**values)


def parse(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, bool]:
    """Parsed flags, and whether any architecture flag was given."""
    args = build_parser().parse_args(argv)
    has_arch = any(getattr(args, "arch_" + f.name) is not None
                   for f in dataclasses.fields(MSDNetConfig))
    return args, has_arch


def config_to_argv(cfg: TrainConfig) -> list[str]:
    """Command-line flags that :func:`parse` and :func:`config_from_args` turn back into
    ``cfg`` (e.g. to launch ``python -m msdnet_flax.training`` in a subprocess)."""
    argv: list[str] = []
    for field in dataclasses.fields(TrainConfig):
        value = getattr(cfg, field.name)
        if field.name == "model":
            if isinstance(value, str):
                argv += ["--model", value]
                continue
            argv += ["--model", "cifar10_anytime"]
            for arch in dataclasses.fields(MSDNetConfig):
                v = getattr(value, arch.name)
                flag = "--arch-" + arch.name.replace("_", "-")
                if isinstance(v, bool):
                    argv.append(flag if v else "--no-" + flag[2:])
                elif isinstance(v, tuple):
                    argv += [flag, *map(str, v)]
                else:
                    argv += [flag, str(v)]
        elif isinstance(value, bool):
            argv.append(_flag(field.name) if value else "--no-" + _flag(field.name)[2:])
        elif value is None:
            continue
        elif isinstance(value, tuple):
            argv += [_flag(field.name), *map(repr, value)]
        else:
            argv += [_flag(field.name), repr(value) if isinstance(value, float) else str(value)]
    return argv

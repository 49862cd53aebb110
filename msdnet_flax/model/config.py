"""MSD-Net hyper-parameters, validated, named after kalviny/MSDNet-PyTorch's arguments."""

from __future__ import annotations

import dataclasses
import math

__all__ = ["MSDNetConfig"]


@dataclasses.dataclass(frozen=True)
class MSDNetConfig:
    """The architecture of one MSD-Net (Huang et al., ICLR 2018).

    Each field is the kalviny/MSDNet-PyTorch command-line argument of the same meaning
    (``n_blocks`` is ``--nBlocks``, ``gr_factor`` is ``--grFactor`` as a tuple, ...).

    Attributes:
      data: ``'cifar'`` (32x32 inputs, 3x3 stem) or ``'imagenet'`` (224x224 inputs, 7x7/2 stem
        and 3x3/2 max-pool).
      num_classes: number of classes of every exit.
      n_blocks: number of blocks, hence of exits.
      n_channels: channels of the finest scale after the stem (multiplied by ``gr_factor``).
      base: layers in the first block.
      step: layers added per block (``'even'``) or the slope of the growth (``'lin_grow'``).
      step_mode: ``'even'`` (every later block has ``step`` layers) or ``'lin_grow'`` (block i has
        ``step * i + 1`` layers).
      growth_rate: channels each MSD layer adds at the finest scale.
      gr_factor: channel multiplier of each scale; its length is the number of scales.
      bn_factor: bottleneck width multiplier of each scale.
      prune: ``'max'`` or ``'min'``, how coarse-only layers drop the finest scales.
      reduction: compression of the transition layers (0 for none).
      bottleneck: whether each 3x3 convolution is preceded by a 1x1 bottleneck.
    """

    data: str = "cifar"
    num_classes: int = 10
    n_blocks: int = 10
    n_channels: int = 16
    base: int = 4
    step: int = 2
    step_mode: str = "even"
    growth_rate: int = 6
    gr_factor: tuple[int, ...] = (1, 2, 4)
    bn_factor: tuple[int, ...] = (1, 2, 4)
    prune: str = "max"
    reduction: float = 0.5
    bottleneck: bool = True

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the config stays hashable.
        object.__setattr__(self, "gr_factor", tuple(self.gr_factor))
        object.__setattr__(self, "bn_factor", tuple(self.bn_factor))
        self._validate()

    def _validate(self) -> None:
        def fail(field: str, why: str) -> None:
            raise ValueError(f"MSDNetConfig.{field}={getattr(self, field)!r} is invalid: {why}")

        if self.data not in ("cifar", "imagenet"):
            fail("data", "expected 'cifar' or 'imagenet'")
        for name in ("num_classes", "n_blocks", "n_channels", "base", "growth_rate"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(name, "expected a positive integer")
        if not isinstance(self.step, int) or self.step < 0:
            fail("step", "expected a non-negative integer")
        if self.step_mode not in ("even", "lin_grow"):
            fail("step_mode", "expected 'even' or 'lin_grow'")
        if self.step_mode == "even" and self.step < 1 and self.n_blocks > 1:
            fail("step", "with step_mode='even' and more than one block, step must be at least 1")
        if len(self.gr_factor) < 1 or any(not isinstance(f, int) or f < 1 for f in self.gr_factor):
            fail("gr_factor", "expected a non-empty tuple of positive integers, one per scale")
        if len(self.bn_factor) != len(self.gr_factor):
            fail("bn_factor",
                 f"expected one factor per scale ({len(self.gr_factor)}, like gr_factor)")
        if any(not isinstance(f, int) or f < 1 for f in self.bn_factor):
            fail("bn_factor", "expected positive integers")
        if self.prune not in ("max", "min"):
            fail("prune", "expected 'max' or 'min'")
        if not (0.0 <= self.reduction <= 1.0):
            fail("reduction", "expected a number in [0, 1]")
        if self.reduction > 0 and math.floor(self.reduction * self.n_channels) < 1:
            fail("reduction", "it compresses the channels to zero")
        if not isinstance(self.bottleneck, bool):
            fail("bottleneck", "expected a bool")
        if any(self.growth_rate * f % 2 for f in self.gr_factor[1:]):
            fail("growth_rate", "growth_rate * gr_factor[s] must be even for every scale s >= 1 "
                 "(those layers split their new channels between two convolutions)")
        # The exit classifiers (two 3x3/2 convolutions, a 2x2 average pool, then a linear layer
        # sized for a 1x1 map) need the coarsest scale at 8x8 (CIFAR) or 7x7 (ImageNet).
        scales, coarsest = (3, 8) if self.data == "cifar" else (4, 7)
        if self.num_scales != scales:
            fail("gr_factor", f"{'too many' if self.num_scales > scales else 'too few'} scales "
                 f"for {self.data} ({self.image_size}x{self.image_size} inputs): expected exactly "
                 f"{scales} factors, the exit classifiers need the coarsest scale at "
                 f"{coarsest}x{coarsest}")
        n_layers = self.base + sum(
            self.step if self.step_mode == "even" else self.step * i + 1
            for i in range(1, self.n_blocks))
        if self.prune == "min" and n_layers < self.num_scales - 1:
            fail("prune", f"'min' pruning needs at least num_scales - 1 = {self.num_scales - 1} "
                 f"MSD layers in all (base and step give {n_layers})")

    @property
    def num_scales(self) -> int:
        """Number of scales, ``len(gr_factor)``."""
        return len(self.gr_factor)

    @property
    def image_size(self) -> int:
        """The input height and width the classifier heads are built for."""
        return 32 if self.data == "cifar" else 224

    def to_dict(self) -> dict:
        """A JSON-friendly dict; ``MSDNetConfig(**d)`` rebuilds the config."""
        d = dataclasses.asdict(self)
        d["gr_factor"] = list(self.gr_factor)
        d["bn_factor"] = list(self.bn_factor)
        return d

"""What a contender is, and the inputs every contender is given (the same for all of them)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

WORK_ALL = "all exits"
WORK_LAST = "last exit"
WORK_FORWARD = "forward"

# What a contender's output is compared with (jaxcam's maps or the JAX forward's logits).
REF_FINAL = "final"      # (K, B, H, W) maps, pytorch-grad-cam's post-processing, input size
REF_LAST = "last"        # (B, H, W): REF_FINAL's last exit
REF_LOGITS = "logits"    # (K, B, classes): the JAX forward's logits


@dataclasses.dataclass
class Inputs:
    """One batch of NHWC images and (K, B) target classes, in each framework's form.

    Conversions happen once, outside any timed call.
    """

    images: np.ndarray   # (B, S, S, 3) float32
    classes: np.ndarray  # (K, B) int: exit k's target class for each image
    device: torch.device

    @property
    def batch(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.images.shape[1], self.images.shape[2]

    @functools.cached_property
    def jax_images(self) -> jax.Array:
        return jax.block_until_ready(jnp.asarray(self.images))

    @functools.cached_property
    def jax_classes(self) -> jax.Array:
        return jax.block_until_ready(jnp.asarray(self.classes, jnp.int32))

    @functools.cached_property
    def torch_images(self) -> torch.Tensor:
        nchw = np.ascontiguousarray(self.images.transpose(0, 3, 1, 2))
        return torch.from_numpy(nchw).to(self.device)

    @functools.cached_property
    def torch_classes(self) -> torch.Tensor:
        return torch.from_numpy(self.classes.astype(np.int64)).to(self.device)

    @functools.cached_property
    def class_lists(self) -> list[list[int]]:
        return [[int(c) for c in row] for row in self.classes]


def make_inputs(batch: int, size: int, num_exits: int, num_classes: int, seed: int,
                device: torch.device) -> Inputs:
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    classes = rng.integers(0, num_classes, size=(num_exits, batch))
    return Inputs(images, classes, device)


@dataclasses.dataclass(frozen=True)
class Contender:
    """One way of computing the benchmarked work.

    ``prepare(inputs)`` does the one-off set-up (not timed) and returns the call to time, which
    finishes all its device work before returning. ``comparable(output)`` turns that call's
    output into an array in the convention of ``reference`` for the parity check.
    """

    key: str
    label: str
    framework: str
    work: str
    prepare: Callable[[Inputs], Callable[[], Any]]
    reference: str
    comparable: Callable[[Any], np.ndarray]
    compared_as: str
    relative_tolerance: bool = False


def sync_torch(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

"""The small MSD-Net twin most parity tests explain: the same random weights in PyTorch
(kalviny's definition) and Flax NNX, in float32 and float64.

A small network (4 exits, both pruning transitions) keeps compilation short. Two places are
explained: exit 2 at its classifier input (8x8), and exit 3 at a 16x16 layer inside block 1,
whose gradient comes through the rest of the backbone and varies across positions. The
``twins`` and ``twins64`` fixtures (conftest.py) build one pair per test module.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import numpy as np
from _seeds import fresh_seed
from flax import nnx

from msdnet_flax import MSDNetConfig
from msdnet_flax.testing import make_twins

SMALL = MSDNetConfig(data="cifar", num_classes=10, n_blocks=4, n_channels=8, base=2, step=2,
                     growth_rate=6)
EXIT = 2
INNER_LAYER, INNER_EXIT = "blocks/1/0/layers/1", 3


def small_twins() -> tuple[Any, nnx.Module]:
    """A fresh ``(torch twin, Flax model)`` pair of :data:`SMALL`, its seed recorded."""
    return make_twins(SMALL, np.random.default_rng(fresh_seed("twins")))


def as_float64(twin: Any, flax_model: nnx.Module) -> tuple[Any, nnx.Module]:
    """Float64 copies of both twins (the Flax one's arrays stay float64: use it under
    ``jax.enable_x64``); the originals are left as they are."""
    with jax.enable_x64(True):
        model = nnx.clone(flax_model)
        nnx.update(model, jax.tree.map(lambda a: a.astype(np.float64), nnx.state(model)))
    assert {a.dtype for a in jax.tree.leaves(nnx.state(model))} == {np.dtype(np.float64)}
    return copy.deepcopy(twin).double(), model

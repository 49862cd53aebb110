"""The JAX contenders: jaxcam's all-exit and last-exit Grad-CAM, and the jitted forward alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

import jaxcam
from benchmarks.contender import (
    REF_FINAL,
    REF_LAST,
    REF_LOGITS,
    WORK_ALL,
    WORK_FORWARD,
    WORK_LAST,
    Contender,
    Inputs,
)
from benchmarks.models import BenchTwins

JAXCAM_ALL = "jaxcam_all"
JAXCAM_LAST = "jaxcam_last"
JAX_FORWARD = "jax_forward"


def _as_numpy(output: Any) -> np.ndarray:
    return np.asarray(output)


def jaxcam_all_exits(twins: BenchTwins, inputs: Inputs, **options: Any) -> jax.Array:
    """All-exit maps (``explain_exits``) through the twins' :class:`jaxcam.ExitExplainer`."""
    return twins.exit_explainer(inputs.jax_images, inputs.classes, **options)


def _forward_fn(twins: BenchTwins) -> Callable[[jax.Array], Any]:
    graphdef, state = nnx.split(twins.flax_model)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    return lambda x: forward(state, x)


def contenders(twins: BenchTwins) -> list[Contender]:
    """jaxcam as a user explaining many batches would call it: the explainer objects are built
    once (split, layer checks) and called with device images and host (NumPy) classes."""
    last = twins.num_exits - 1
    forward = _forward_fn(twins)
    last_exit = jaxcam.Explainer(twins.flax_model, target_layer=twins.exit_path(last),
                                 output_index=last)

    def prep_all(inputs: Inputs) -> Callable[[], Any]:
        return lambda: jax.block_until_ready(jaxcam_all_exits(twins, inputs))

    def prep_last(inputs: Inputs) -> Callable[[], Any]:
        classes = inputs.classes[last]
        return lambda: jax.block_until_ready(last_exit(inputs.jax_images, classes))

    def prep_forward(inputs: Inputs) -> Callable[[], Any]:
        return lambda: jax.block_until_ready(forward(inputs.jax_images))

    return [
        Contender(JAXCAM_ALL, "jaxcam explain_exits (ExitExplainer)", "jax", WORK_ALL,
                  prep_all, REF_FINAL, _as_numpy, "the reference"),
        Contender(JAXCAM_LAST, "jaxcam explain (Explainer, last exit)", "jax", WORK_LAST,
                  prep_last, REF_LAST, _as_numpy, "final maps vs explain_exits' last exit"),
        Contender(JAX_FORWARD, "JAX forward, all exits (jit)", "jax", WORK_FORWARD,
                  prep_forward, REF_LOGITS, lambda out: np.stack([np.asarray(o) for o in out]),
                  "logits vs explain_exits' logits, relative to the largest abs logit",
                  relative_tolerance=True),
    ]

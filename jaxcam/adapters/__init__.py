"""How activations and gradients are obtained from each kind of model, without editing it.

An adapter turns a model into a *tapped forward*: ``forward(state, images, edits)`` returns the
model's output and the outputs of the chosen layers, after applying ``edits[i]`` to layer i's
output on its way to the rest of the network. ``edit = a -> a + delta`` makes ``d score / d delta``
the gradient with respect to the activation (one ``jax.vjp``, no parameter gradients);
``edit = a -> a_new`` evaluates the network above the layer on new activations (Ablation-CAM).

One adapter class per model kind, behind :class:`ModelAdapter`:

* :class:`NnxAdapter` (Flax NNX): split once into a hashed structure and its weights; merged in
  eval mode inside the trace (:func:`merge_eval`, the one place that does it).
* :class:`LinenAdapter` (Flax Linen): ``flax.linen.intercept_methods`` taps the module.
* :class:`PairAdapter`: a pair ``(features_fn, head_fn)`` of plain functions.

Multi-exit models (:class:`MultiExitModel`) have their own :func:`make_exit_adapter`. The state
(parameters, batch statistics) is an argument, not a constant closed over, so a new model of the
same structure reuses the compiled computation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import flax.linen as nn
import jax

from jaxcam.adapters._tap import Edit, LayerPath, normalize_layer_path
from jaxcam.adapters.exits import MultiExitModel, ObjectExitAdapter, make_exit_adapter
from jaxcam.adapters.linen import LinenAdapter, check_linen_layers, linen_layer_paths
from jaxcam.adapters.nnx import (
    Frozen,
    NnxAdapter,
    is_nnx,
    is_presplit,
    merge_eval,
    new_weights,
    nnx_child,
    nnx_layer_paths,
    split_model,
)
from jaxcam.adapters.pair import PairAdapter, is_function_pair

__all__ = [
    "Edit",
    "Frozen",
    "LayerPath",
    "LinenAdapter",
    "ModelAdapter",
    "MultiExitModel",
    "NnxAdapter",
    "ObjectExitAdapter",
    "PairAdapter",
    "check_linen_layers",
    "is_function_pair",
    "is_nnx",
    "is_presplit",
    "linen_layer_paths",
    "make_adapter",
    "make_exit_adapter",
    "merge_eval",
    "new_weights",
    "nnx_child",
    "nnx_layer_paths",
    "normalize_layer_path",
    "split_model",
]


class ModelAdapter(Protocol):
    """What the explain pipeline asks of a model, whatever its kind. Implementations are
    hashable (a static argument of ``jax.jit``); the weights travel separately as the state.

    Attributes:
      layers: the tapped layers' paths.
      kind: a short name of the model kind, for messages.
    """

    layers: tuple[LayerPath, ...]
    kind: str

    def forward(self, state: Any, images: jax.Array, edits: Sequence[Edit] | None = None
                ) -> tuple[Any, list[jax.Array]]:
        """The model's output and the tapped layers' outputs (before ``edits``)."""
        ...

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Checks that need the images (a Linen model's layers), on the host, before a call."""
        ...

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """The state of new weights of the same model (``Explainer.update``'s arguments).

        Raises:
          TypeError: the wrong argument for this kind, or a kind that holds no weights.
          ValueError: weights of another structure.
        """
        ...


def make_adapter(model: Any, layers: Sequence[LayerPath], variables: Any
                 ) -> tuple[ModelAdapter, Any]:
    """The adapter for ``model`` tapping ``layers``, and the state to pass to its forward.

    Args:
      model: an ``nnx.Module``, an ``nnx.split`` pair, a ``flax.linen.Module`` or a pair of
        functions.
      layers: the paths to tap.
      variables: a Linen model's variables (ignored otherwise).

    Returns:
      The adapter and its state: an NNX model's weights (a snapshot, as a flat list), a Linen
      model's variables, or None.

    Raises:
      ValueError: an NNX layer that does not exist (the message lists the ones that do), a Linen
        module without ``variables``, or a function pair given several layers.
      TypeError: a model of an unsupported kind.
    """
    if is_nnx(model):
        return NnxAdapter.prepare(model, layers)
    if isinstance(model, nn.Module):
        return LinenAdapter.prepare(model, layers, variables)
    if is_function_pair(model):
        return PairAdapter.prepare(model, layers)
    raise TypeError(
        f"cannot explain a {type(model).__name__}: expected a flax.nnx.Module (or its "
        "nnx.split pair), a flax.linen.Module (with variables=...), or a pair (features_fn, "
        "head_fn) of functions where head_fn(features_fn(images)) is the model output")

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
* :class:`EquinoxAdapter` (Equinox): layers by attribute path, swapped for tapping wrappers
  with ``eqx.tree_at`` inside the trace; one ``(C, H, W)`` image per call, vmapped here.
* :class:`HaikuAdapter` (Haiku): ``hk.intercept_methods`` taps modules by name.
* :class:`KerasAdapter` (Keras 3 on JAX): run with ``stateless_call``; a layer's ``call`` is
  wrapped for the duration of a trace.
* :class:`TorchAdapter` (PyTorch through torchax): forward hooks tap modules by dotted name.
* :class:`PairAdapter`: a pair ``(features_fn, head_fn)`` of plain functions.

Frameworks other than Flax are imported only when a model of theirs is given (a model of a
framework exists only if the framework was imported: the kind checks look in ``sys.modules``).

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
from jaxcam.adapters.equinox import (
    EquinoxAdapter,
    EquinoxModel,
    equinox_layer_paths,
    is_equinox,
)
from jaxcam.adapters.exits import MultiExitModel, ObjectExitAdapter, make_exit_adapter
from jaxcam.adapters.haiku import (
    HaikuAdapter,
    HaikuModel,
    haiku_layer_paths,
    haiku_transformed_error,
    is_haiku,
    is_haiku_transformed,
)
from jaxcam.adapters.keras import KerasAdapter, is_keras_model, keras_layer_name
from jaxcam.adapters.linen import (
    LinenAdapter,
    LinenModel,
    check_linen_layers,
    linen_layer_paths,
)
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
from jaxcam.adapters.torch import TorchAdapter, is_torch_module, torch_layer_name

__all__ = [
    "Edit",
    "EquinoxAdapter",
    "EquinoxModel",
    "Frozen",
    "HaikuAdapter",
    "HaikuModel",
    "KerasAdapter",
    "LayerPath",
    "LinenAdapter",
    "LinenModel",
    "ModelAdapter",
    "MultiExitModel",
    "NnxAdapter",
    "ObjectExitAdapter",
    "PairAdapter",
    "TorchAdapter",
    "check_linen_layers",
    "equinox_layer_paths",
    "haiku_layer_paths",
    "haiku_transformed_error",
    "is_equinox",
    "is_function_pair",
    "is_haiku",
    "is_haiku_transformed",
    "is_keras_model",
    "is_nnx",
    "is_presplit",
    "is_torch_module",
    "keras_layer_name",
    "linen_layer_paths",
    "make_adapter",
    "make_exit_adapter",
    "merge_eval",
    "new_weights",
    "nnx_child",
    "nnx_layer_paths",
    "normalize_layer_path",
    "split_model",
    "torch_layer_name",
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
        """Checks that need the images (a Linen or Haiku model's layers), on the host, before a
        call."""
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
      model: an ``nnx.Module``, an ``nnx.split`` pair, a ``flax.linen.Module`` or
        :class:`LinenModel`, an ``eqx.Module`` or :class:`EquinoxModel`, a :class:`HaikuModel`,
        or a pair of functions.
      layers: the paths to tap.
      variables: a bare Linen module's variables (an error with an Equinox or Haiku model).

    Returns:
      The adapter and its state: an NNX or Equinox model's weights (a snapshot, as a flat
      list), a Linen model's ``(variables, rngs)``, a Haiku model's ``(params, state, rng)``,
      or None.

    Raises:
      ValueError: an NNX layer that does not exist (the message lists the ones that do), a Linen
        module without ``variables``, or a function pair given several layers.
      TypeError: a model of an unsupported kind, or a bare Haiku transformed pair.
    """
    if is_nnx(model):
        return NnxAdapter.prepare(model, layers)
    if isinstance(model, (nn.Module, LinenModel)):
        return LinenAdapter.prepare(model, layers, variables)
    if is_equinox(model):
        _no_variables(model, variables, "pass jaxcam.EquinoxModel(model, state) for an "
                      "eqx.nn.State")
        return EquinoxAdapter.prepare(model, layers)
    if is_haiku(model):
        _no_variables(model, variables, "the HaikuModel holds params and state")
        return HaikuAdapter.prepare(model, layers)
    if is_haiku_transformed(model):
        raise haiku_transformed_error()
    if is_keras_model(model):  # first: on Keras's torch backend a model is a torch Module too
        _no_variables(model, variables, "the model holds its weights")
        return KerasAdapter.prepare(model, layers)
    if is_torch_module(model):
        _no_variables(model, variables, "the module holds its weights (update(new_model) or "
                      "update(variables=state_dict) to change them)")
        return TorchAdapter.prepare(model, layers)
    if is_function_pair(model):
        return PairAdapter.prepare(model, layers)
    raise TypeError(
        f"cannot explain a {type(model).__name__}: expected a flax.nnx.Module (or its "
        "nnx.split pair), a flax.linen.Module (with variables=...) or jaxcam.LinenModel, an "
        "equinox.Module or jaxcam.EquinoxModel, a jaxcam.HaikuModel, a keras.Model (Keras 3 "
        "on JAX), a torch.nn.Module (run through torchax), or a pair (features_fn, "
        "head_fn) of functions where head_fn(features_fn(images)) is the model output")


def _no_variables(model: Any, variables: Any, hint: str) -> None:
    if variables is not None:
        raise TypeError(f"variables= is for a bare Flax Linen module, not a "
                        f"{type(model).__name__}; {hint}")

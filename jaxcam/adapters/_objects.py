"""Target layers given as objects (``model.layer3``, ``model.get_layer("conv4_block6_out")``,
``model.blocks[3]``), as pytorch-grad-cam takes them, turned into the names the adapters use.

Each framework's layer is found in its model by identity: a PyTorch module among
``model.named_modules()``, a Keras layer among the model's (nested) layers, an NNX module in the
model's graph (``nnx.iter_graph``), an Equinox module in the model's pytree. Strings and tuples
of path parts pass through unchanged.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from jaxcam.adapters.equinox import equinox_layer_name, is_equinox
from jaxcam.adapters.keras import is_keras_model, keras_layer_name
from jaxcam.adapters.torch import is_torch_module, torch_layer_name

__all__ = ["layer_name", "resolve_layers"]


def _nnx_layer_name(model: nnx.Module, layer: nnx.Module) -> str:
    for path, node in nnx.iter_graph(model):
        if node is layer and path:
            return "/".join(str(p) for p in path)
    raise ValueError(f"the {type(layer).__name__} given as a target layer is not a submodule of "
                     f"this {type(model).__name__}; pass one of its modules or a '/'-separated "
                     "path")


def layer_name(model: Any, layer: Any) -> Any:
    """The name of ``layer`` in ``model`` if it is a layer object, else ``layer`` unchanged.

    Args:
      model: the model being explained.
      layer: a layer object of ``model``'s framework, or a name / path.

    Returns:
      A dotted (PyTorch) or '/'-separated (Keras, NNX) name, or ``layer`` itself.

    Raises:
      ValueError: a layer object that is not part of ``model``.
    """
    if isinstance(layer, (str, tuple)):
        return layer
    if is_keras_model(model):  # first: on Keras's torch backend a layer is a torch Module too
        import keras

        if isinstance(layer, keras.layers.Layer):
            return keras_layer_name(model, layer)
    if is_torch_module(model) and is_torch_module(layer):
        return torch_layer_name(model, layer)
    if isinstance(model, nnx.Module) and isinstance(layer, nnx.Module):
        return _nnx_layer_name(model, layer)
    if is_equinox(model) and is_equinox(layer):
        return equinox_layer_name(model, layer)
    return layer


def resolve_layers(model: Any, target_layer: Any) -> Any:
    """``target_layer`` (one layer or a list of them) with layer objects replaced by names."""
    if isinstance(target_layer, list):
        return [layer_name(model, layer) for layer in target_layer]
    if target_layer is None:
        return None
    return layer_name(model, target_layer)

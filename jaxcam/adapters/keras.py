"""Keras 3 models on the JAX backend, run statelessly and tapped by wrapping layers' ``call``.

A ``keras.Model`` is run with ``model.stateless_call(trainable, non_trainable, x,
training=False)``: the variables' values are arguments (the adapter's state), not the model's
own mutable variables, so the forward jits and new weights of the same model reuse the compiled
computation (:meth:`KerasAdapter.new_state`); ``training=False`` puts BatchNormalization on its
moving statistics and dropout off, whatever the model's own flags.

A layer is named as ``model.get_layer`` names it (``"conv4_block6_out"``; a layer inside a nested
model as ``"inner_model/layer"``) or given as the layer object. For the duration of one trace the
layer's ``call`` is wrapped (an instance attribute shadowing the class's method, deleted in a
``finally``): the wrapper records the output and returns the edited value in its place. Keras
calls ``self.call`` for every layer of a functional or subclassed model alike, so no graph is
rebuilt.

Keras must run on the JAX backend (``KERAS_BACKEND=jax`` set before keras is first imported).
The adapter's ``default_layout`` is Keras's image data format (``"NHWC"`` for ``channels_last``,
the default); :class:`jaxcam._layout.MapAdapter` turns channels-first images and maps around.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcam.adapters._tap import Edit, LayerPath, Recorder, unknown_layer_error

__all__ = ["KerasAdapter", "check_model", "is_keras_model", "keras_head_wrappers",
           "keras_layer_name", "keras_layer_paths", "keras_layers", "keras_values",
           "new_keras_values", "run_keras"]

def is_keras_model(model: Any) -> bool:
    """Whether ``model`` is a Keras 3 ``keras.Model`` (without importing keras when it is not
    imported already)."""
    keras = sys.modules.get("keras")
    return keras is not None and hasattr(keras, "Model") and isinstance(model, keras.Model)


def check_model(model: Any) -> str:
    """Check that Keras runs on JAX and ``model`` is built; return its native layout.

    Returns:
      ``"NCHW"`` under Keras's ``channels_first`` image data format, else ``"NHWC"``.

    Raises:
      RuntimeError: Keras runs on another backend than JAX.
      ValueError: an unbuilt model.
    """
    keras = _check_backend()
    if not model.built:
        raise ValueError("the Keras model is not built; call it once on images (or "
                         "model.build(input_shape)) before explaining it")
    return "NCHW" if keras.config.image_data_format() == "channels_first" else "NHWC"


def _check_backend() -> Any:
    """The keras module, or an error if it runs on another backend than JAX."""
    import keras

    backend = keras.backend.backend()
    if backend != "jax":
        raise RuntimeError(f"this Keras runs on the {backend!r} backend; jaxcam runs Keras models "
                           "on the JAX backend: set the environment variable KERAS_BACKEND=jax "
                           "before keras is first imported (Keras cannot switch backends "
                           "once imported)")
    return keras


def _walk(model: Any, prefix: LayerPath = ()) -> Iterator[tuple[LayerPath, Any]]:
    """Every layer of ``model`` with its path, nested models' layers included."""
    for layer in getattr(model, "layers", []):
        path = (*prefix, layer.name)
        yield path, layer
        if hasattr(layer, "layers"):
            yield from _walk(layer, path)


def keras_layers(model: Any) -> list[tuple[LayerPath, Any]]:
    """Every layer of ``model`` with its path (``outer/inner`` inside nested models)."""
    return list(_walk(model))


def keras_layer_paths(model: Any) -> list[LayerPath]:
    """Every layer's path in ``model`` (its name; ``outer/inner`` inside nested models)."""
    return [path for path, _ in _walk(model)]


def keras_layer_name(model: Any, layer: Any) -> str:
    """The '/'-separated path of layer object ``layer`` in ``model``, found by identity.

    Raises:
      ValueError: ``layer`` is not one of ``model``'s layers.
    """
    for path, candidate in _walk(model):
        if candidate is layer:
            return "/".join(path)
    raise ValueError(f"the layer {getattr(layer, 'name', type(layer).__name__)!r} given as a "
                     "target layer is not a layer of this model; pass one of its layers "
                     "(model.get_layer(name)) or a layer name")


def _layer(model: Any, path: LayerPath) -> Any:
    node = model
    for part in path:
        node = node.get_layer(part)
    return node


@dataclasses.dataclass(frozen=True)
class KerasAdapter:
    """A ``keras.Model`` run statelessly and tapped at some layers; its state is the pair
    (trainable values, non-trainable values), lists of ``jax.Array``.

    Attributes:
      model: the ``keras.Model``.
      layers: the tapped layers' paths.
      default_layout: ``"NCHW"`` under Keras's ``channels_first`` image data format, else
        ``"NHWC"``.
    """

    model: Any
    layers: tuple[LayerPath, ...]
    default_layout: str = "NHWC"
    kind = "keras"

    @classmethod
    def prepare(cls, model: Any, layers: Sequence[LayerPath]) -> tuple[KerasAdapter, Any]:
        """Check the backend and the layers, and take the variables' values, once.

        Args:
          model: the ``keras.Model`` (built).
          layers: the layers' paths.

        Returns:
          The adapter and its state.

        Raises:
          RuntimeError: Keras runs on another backend than JAX.
          ValueError: an unbuilt model, or a layer that does not exist (the message lists
            those that do).
        """
        native = check_model(model)
        available = keras_layer_paths(model)
        for layer in layers:
            if layer not in available:
                raise unknown_layer_error(layer, available)
        return cls(model, tuple(layers), native), keras_values(model)

    def forward(self, state: Any, images: jax.Array, edits: Sequence[Edit] | None = None
                ) -> tuple[Any, list[jax.Array]]:
        """The model's output and the tapped layers' outputs.

        Args:
          state: (trainable values, non-trainable values).
          images: the model's input, as it takes it.
          edits: ``edits[i]`` replaces layer i's output on its way up.

        Returns:
          The model output and the tapped layers' outputs as they are (before ``edits``).
        """
        recorder = Recorder(self.layers, edits or [lambda a: a] * len(self.layers))

        def wrap(path: LayerPath) -> Callable[[Any], Any]:
            def wrapper(call: Any) -> Any:
                def tapped_call(*args: Any, **kwargs: Any) -> Any:
                    value = call(*args, **kwargs)
                    if not isinstance(value, jax.Array):
                        raise TypeError(f"layer {'/'.join(path)!r} returns "
                                        f"{type(value).__name__}, not an array; choose a layer "
                                        "whose output is a single feature map")
                    return recorder.record(path, value)
                return tapped_call
            return wrapper

        output = run_keras(self.model, state, images, [(path, wrap(path)) for path in self.layers])
        return output, recorder.collected()

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Nothing to check per call: the layers were checked when prepared."""

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: ``model`` (a Keras model of the same structure, e.g. this one trained
        further) or ``variables`` ((trainable values, non-trainable values)).

        Raises:
          TypeError: neither, or both.
          ValueError: weights of other shapes.
        """
        return new_keras_values(self.model, model, variables)


def run_keras(model: Any, state: Any, images: jax.Array,
              wrappers: Sequence[tuple[LayerPath, Callable[[Any], Any]]]) -> Any:
    """``model``'s output on ``images``, run statelessly on the values ``state``, with some
    layers' ``call`` wrapped for the duration of the call.

    Args:
      model: the ``keras.Model``.
      state: (trainable values, non-trainable values).
      images: its input.
      wrappers: ``(layer path, wrap)``: the layer's ``call`` is replaced by ``wrap(call)`` (an
        instance attribute shadowing the class's method, deleted in a ``finally``). A layer may
        be listed twice: the second wrapper wraps the first.

    Returns:
      The model's output.

    Raises:
      RuntimeError: a layer that is being tapped already (a trace in another thread).
    """
    layers = []
    for path, wrap in wrappers:
        layer = _layer(model, path)
        if "call" in vars(layer):
            raise RuntimeError(f"layer {'/'.join(path)!r} is already being tapped (a trace "
                               "of this model is running in another thread)")
        layers.append((layer, wrap))
    trainable, non_trainable = state
    try:
        for layer, wrap in layers:
            # An instance attribute shadows the class's call; Layer.__setattr__ would try to
            # track it, object's does not.
            object.__setattr__(layer, "call", wrap(layer.call))
        output, _ = model.stateless_call(list(trainable), list(non_trainable), images,
                                         training=False)
    finally:
        for layer, _ in layers:
            if "call" in vars(layer):
                object.__delattr__(layer, "call")
    return output


def keras_head_wrappers(heads: Sequence[tuple[LayerPath, LayerPath]], recorder: Any
                        ) -> list[tuple[LayerPath, Callable[[Any], Any]]]:
    """The ``call`` wrappers (for :func:`run_keras`) of multi-exit heads.

    Args:
      heads: each exit's ``(entry, exit)`` layer paths: the entry layer's input is the exit's
        features, the exit layer's output its logits (the same layer for a one-layer head).
      recorder: ``recorder.enter(i, x)`` takes exit i's features and returns what the entry
        layer is fed instead; ``recorder.leave(i, y)`` takes its logits
        (:class:`jaxcam.adapters.exits.HeadRecorder`).

    Returns:
      ``(layer path, wrap)`` pairs; only the head's own call sees the entered value, the rest
      of the network the layer's input as it is.
    """
    wrappers: list[tuple[LayerPath, Callable[[Any], Any]]] = []
    for i, (entry, last) in enumerate(heads):
        def enter(call: Any, i: int = i, entry: LayerPath = entry) -> Any:
            def entered(*args: Any, **kwargs: Any) -> Any:
                if not args or not isinstance(args[0], jax.Array):
                    raise TypeError(f"head layer {'/'.join(entry)!r} is not called on one "
                                    "array as its first argument; name a head layer whose "
                                    "input is the exit's feature map")
                return call(recorder.enter(i, args[0]), *args[1:], **kwargs)
            return entered

        def leave(call: Any, i: int = i, last: LayerPath = last) -> Any:
            def left(*args: Any, **kwargs: Any) -> Any:
                value = call(*args, **kwargs)
                if not isinstance(value, jax.Array):
                    raise TypeError(f"head layer {'/'.join(last)!r} returns "
                                    f"{type(value).__name__}, not an array of logits")
                recorder.leave(i, value)
                return value
            return left

        wrappers += [(entry, enter), (last, leave)]
    return wrappers


def new_keras_values(reference: Any, model: Any = None, variables: Any = None
                     ) -> tuple[list[jax.Array], list[jax.Array]]:
    """New weights for an adapter of the Keras model ``reference``: ``model`` (a Keras model of
    the same structure, e.g. this one trained further) or ``variables`` ((trainable values,
    non-trainable values)), checked against ``reference``'s shapes.

    Raises:
      TypeError: neither, or both.
      ValueError: weights of other shapes.
    """
    if (model is None) == (variables is None):
        raise TypeError("a Keras explainer's update takes the model (a keras.Model of the "
                        "same structure) or variables=(trainable values, non-trainable "
                        "values), one of them")
    if model is not None:
        if not is_keras_model(model):
            raise TypeError(f"update takes a keras.Model, got {type(model).__name__}")
        new = keras_values(model)
    else:
        trainable, non_trainable = variables
        new = ([jnp.asarray(v) for v in trainable], [jnp.asarray(v) for v in non_trainable])
    old = keras_values(reference)
    if jax.tree.map(jnp.shape, old) != jax.tree.map(jnp.shape, new):
        raise ValueError("the new weights do not fit this explainer: their shapes differ "
                         "from the model's it was built for; build a new explainer for the "
                         "new model")
    return new


def keras_values(model: Any) -> tuple[list[jax.Array], list[jax.Array]]:
    """The current values of a model's trainable and non-trainable variables (JAX arrays)."""
    return ([jnp.asarray(v.value) for v in model.trainable_variables],
            [jnp.asarray(v.value) for v in model.non_trainable_variables])

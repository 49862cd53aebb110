"""Flax NNX models: split once into a hashed structure and a snapshot of the weights.

Splitting an NNX model into its graph definition and state, and hashing the graph definition
for ``jax.jit``'s cache, take tens of milliseconds for a network the size of MSD-Net (about
100 ms for cifar10_anytime). :class:`Frozen` holds the structure with its hash computed once;
the weights are a flat list of arrays, a snapshot taken at split time, refreshed only when
asked (``update``), never behind the user's back. Inside the traced function a copy is merged
in eval mode (:func:`merge_eval`, the one place that does it) and the chosen submodules are
swapped for tapping wrappers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from jaxcam.adapters._split_cache import cached_split
from jaxcam.adapters._tap import Edit, LayerPath, Recorder, unknown_layer_error

__all__ = ["Frozen", "NnxAdapter", "is_presplit", "merge_eval", "new_weights", "nnx_child",
           "nnx_layer_paths", "split_model"]


def merge_eval(graphdef: Any, state: Any) -> Any:
    """A fresh NNX model from ``nnx.split``'s parts, in eval mode (BatchNorm's running
    statistics, dropout off: what an explanation of a trained model means).

    Args:
      graphdef: the ``nnx.GraphDef``.
      state: its ``nnx.State`` (or a pytree of that structure).

    Returns:
      The merged model, its ``eval()`` called.
    """
    model = nnx.merge(graphdef, state)
    model.eval()
    return model


@dataclasses.dataclass(frozen=True, eq=False)
class Frozen:
    """An NNX model's structure: graph definition and state tree, hashed once.

    A static argument of ``jax.jit`` is hashed on every call; an NNX ``GraphDef`` recomputes its
    hash each time (15 ms for cifar10_anytime), this holder does not. Two holders of the same
    structure are equal, so explainers of twin models share one compilation.

    Attributes:
      graphdef: the ``nnx.GraphDef`` from ``nnx.split``.
      treedef: the tree structure of the state's leaves (the weights, as a flat list).
    """

    graphdef: Any
    treedef: Any
    _hash: int = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.graphdef, self.treedef)))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Frozen) and self._hash == other._hash
                                 and self.graphdef == other.graphdef
                                 and self.treedef == other.treedef)

    def merge(self, leaves: list[Any]) -> Any:
        """A fresh model in eval mode from the weights' leaves (see :func:`merge_eval`)."""
        return merge_eval(self.graphdef, jax.tree.unflatten(self.treedef, leaves))


def is_presplit(model: Any) -> bool:
    """Whether ``model`` is a ``(graphdef, state)`` pair as ``nnx.split`` returns it."""
    return (isinstance(model, tuple) and len(model) == 2
            and isinstance(model[0], nnx.GraphDef) and isinstance(model[1], nnx.State))


def is_nnx(model: Any) -> bool:
    """Whether ``model`` is an NNX module or an ``nnx.split`` pair."""
    return isinstance(model, nnx.Module) or is_presplit(model)


def split_model(model: Any) -> tuple[Frozen, list[jax.Array]]:
    """An NNX module (or an ``nnx.split`` pair) as its structure and a snapshot of its weights.

    Args:
      model: an ``nnx.Module`` or a ``(graphdef, state)`` pair.

    Returns:
      The :class:`Frozen` structure and the state's leaves (the arrays themselves: later in-place
      updates of the model's variables do not reach them).

    A module's structure is cached per object (:mod:`jaxcam.adapters._split_cache`): a second
    call on the same, structurally unchanged model returns the same :class:`Frozen` (hashed
    once) and re-reads the current weights, so the one-shot ``explain``/``explain_exits`` do
    not pay ``nnx.split`` on every call and still see weights changed in place.
    """
    if is_presplit(model):
        graphdef, state = model
        leaves, treedef = jax.tree.flatten(state)
        return Frozen(graphdef, treedef), leaves
    return cached_split(model, Frozen)


def new_weights(frozen: Frozen, source: Any) -> list[jax.Array]:
    """The leaves of ``source`` after checking that it has the structure ``frozen`` was made for.

    Args:
      frozen: the structure.
      source: a model, an ``nnx.split`` pair or an ``nnx.State``.

    Returns:
      The new weights' leaves.

    Raises:
      ValueError: the structure differs (the message says to build a new explainer).
      TypeError: ``source`` is none of the accepted kinds.
    """
    if isinstance(source, nnx.State):
        leaves, treedef = jax.tree.flatten(source)
        same = treedef == frozen.treedef
    elif is_nnx(source):
        other, leaves = split_model(source)
        same = other == frozen
    else:
        raise TypeError(f"update takes an nnx.Module, an nnx.split pair or an nnx.State, got "
                        f"{type(source).__name__}")
    if not same:
        raise ValueError("the new weights do not fit this explainer: the model's structure "
                         "(modules, variable names or shapes' tree) differs from the one it was "
                         "built for; build a new explainer for the new model")
    return leaves


def nnx_child(node: Any, part: str) -> Any:
    """The child ``part`` of an NNX node (an attribute, or an ``nnx.List``/``nnx.Dict`` item)."""
    if isinstance(node, nnx.List):
        return node[int(part)]
    if isinstance(node, nnx.Dict):
        return node[part]
    return getattr(node, part)


def nnx_layer_paths(model: Any) -> list[LayerPath]:
    """Every submodule path of an NNX model, in graph order."""
    return [tuple(str(p) for p in path) for path, node in nnx.iter_graph(model)
            if isinstance(node, nnx.Module) and not isinstance(node, (nnx.List, nnx.Dict))
            and path]


def check_nnx_layers(model: Any, layers: Sequence[LayerPath]) -> None:
    """Raise unless every path names a submodule of ``model`` (walked directly: listing every
    path of a large model takes as long as splitting it)."""
    for layer in layers:
        node = model
        try:
            for part in layer:
                node = nnx_child(node, part)
        except (AttributeError, IndexError, KeyError, ValueError, TypeError):
            node = None
        if not isinstance(node, nnx.Module) or isinstance(node, (nnx.List, nnx.Dict)):
            raise unknown_layer_error(layer, nnx_layer_paths(model))


@dataclasses.dataclass(frozen=True)
class NnxAdapter:
    """An NNX model split at some layers; its state is the weights' leaves.

    Attributes:
      frozen: the model's structure.
      layers: the tapped layers' paths.
    """

    frozen: Frozen
    layers: tuple[LayerPath, ...]
    kind = "nnx"

    @classmethod
    def prepare(cls, model: Any, layers: Sequence[LayerPath]) -> tuple[NnxAdapter, Any]:
        """Check the layers and split the model, once.

        Args:
          model: an ``nnx.Module`` or its ``nnx.split`` pair.
          layers: the paths to tap.

        Returns:
          The adapter and its state (the weights' leaves).

        Raises:
          ValueError: a layer that does not exist (the message lists the ones that do).
        """
        check_nnx_layers(nnx.merge(*model) if is_presplit(model) else model, layers)
        frozen, leaves = split_model(model)
        return cls(frozen, tuple(layers)), leaves

    def model(self, state: Any) -> Any:
        """The model in eval mode, from the state (for a multi-exit model's methods)."""
        return self.frozen.merge(state)

    def forward(self, state: Any, images: jax.Array, edits: Sequence[Edit] | None = None
                ) -> tuple[Any, list[jax.Array]]:
        """The model's output and the tapped layers' outputs.

        Args:
          state: the weights' leaves.
          images: the model input.
          edits: ``edits[i]`` replaces layer i's output on its way up (default: none).

        Returns:
          The model output and the tapped layers' outputs (before ``edits``).
        """
        recorder = Recorder(self.layers, edits or [lambda a: a] * len(self.layers))

        class Tap(nnx.Module):
            def __init__(self, inner: nnx.Module, path: LayerPath):
                self.inner = inner
                self.path = path

            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                return recorder.record(self.path, self.inner(*args, **kwargs))

        model = self.frozen.merge(state)
        for layer in self.layers:
            parent = model
            for part in layer[:-1]:
                parent = nnx_child(parent, part)
            last = layer[-1]
            if isinstance(parent, nnx.List):
                parent[int(last)] = Tap(parent[int(last)], layer)
            elif isinstance(parent, nnx.Dict):
                parent[last] = Tap(parent[last], layer)
            else:
                setattr(parent, last, Tap(getattr(parent, last), layer))
        return model(images), recorder.collected()

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Nothing to check per call: the layers were checked when prepared."""

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: ``model`` (the model again, its ``nnx.split`` pair or its state)."""
        if model is None or variables is not None:
            raise TypeError("an NNX explainer's update takes the model only")
        return new_weights(self.frozen, model)

"""How activations and gradients are obtained from each kind of model, without editing it.

An adapter turns a model into a *tapped forward*: ``forward(state, images, edits)`` returns the
model's output and the outputs of the chosen layers, after applying ``edits[i]`` to layer i's
output on its way to the rest of the network. ``edit = a -> a + delta`` makes ``d score / d delta``
the gradient with respect to the activation (one ``jax.vjp``, no parameter gradients);
``edit = a -> a_new`` evaluates the network above the layer on new activations (Ablation-CAM).

* Flax NNX: the model is split into its structure (:class:`jaxcam._prepared.Frozen`) and its
  weights; inside the traced function a copy is merged, put in eval mode, and the chosen
  submodule is swapped for a tapping wrapper.
* Flax Linen: ``flax.linen.intercept_methods`` intercepts the chosen module's ``__call__``.
* A pair ``(features_fn, head_fn)`` of plain functions: composition.

The state (parameters, batch statistics) is an argument, not a constant closed over, so a new
model of the same structure reuses the compiled computation.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._prepared import Frozen, is_presplit, split_model

__all__ = ["Adapter", "make_adapter", "check_linen_layers", "normalize_layer_path", "LayerPath"]

LayerPath = tuple[str, ...]
Edit = Callable[[jax.Array], jax.Array]


def normalize_layer_path(layer: str | Sequence[Any]) -> LayerPath:
    """``"a/b/0"`` or ``("a", "b", 0)`` -> ``("a", "b", "0")``."""
    if isinstance(layer, str):
        parts = tuple(p for p in layer.split("/") if p)
    elif isinstance(layer, Sequence):
        parts = tuple(str(p) for p in layer)
    else:
        raise TypeError(f"target_layer must be a '/'-separated path or a tuple of path parts, "
                        f"got {type(layer).__name__}")
    if not parts:
        raise ValueError("target_layer is empty; name a layer by its module path, e.g. 'head'")
    return parts


def _unknown_layer_error(layer: LayerPath, available: Sequence[LayerPath]) -> ValueError:
    names = ["/".join(p) for p in available if p]
    shown = "\n  ".join(names[:200]) + ("\n  ..." if len(names) > 200 else "")
    return ValueError(f"target layer {'/'.join(layer)!r} does not exist in this model. "
                      f"The layers are ({len(names)}):\n  {shown}")


class _TapCalledTwice(RuntimeError):
    pass


class _Recorder:
    """Collects tapped outputs during one trace; refuses layers that run twice."""

    def __init__(self, layers: Sequence[LayerPath], edits: Sequence[Edit]):
        self.index = {layer: i for i, layer in enumerate(layers)}
        self.edits = edits
        self.outputs: list[Any] = [None] * len(layers)

    def record(self, layer: LayerPath, output: jax.Array) -> jax.Array:
        i = self.index[layer]
        if self.outputs[i] is not None:
            raise _TapCalledTwice(
                f"layer {'/'.join(layer)!r} runs more than once in one forward pass, so its "
                "output is not one feature map; choose a layer that runs once")
        if not isinstance(output, jax.Array):
            raise TypeError(f"layer {'/'.join(layer)!r} returns {type(output).__name__}, not an "
                            "array; choose a layer whose output is a single (B, h, w, C) array")
        self.outputs[i] = output
        return self.edits[i](output)

    def collected(self) -> list[jax.Array]:
        for layer, i in self.index.items():
            if self.outputs[i] is None:
                raise ValueError(f"layer {'/'.join(layer)!r} exists but was not called in the "
                                 "forward pass; choose a layer the model uses")
        return self.outputs


@dataclasses.dataclass(frozen=True)
class Adapter:
    """A model split at some layers. Hashable, so it can be a static argument of ``jax.jit``.

    Attributes:
      kind: ``'nnx'``, ``'linen'`` or ``'functions'``.
      layers: the tapped layers' paths.
      static: what stays fixed: the NNX model's :class:`Frozen` structure (its hash computed
        once, so ``jax.jit`` does not rehash the graph on every call), the Linen module, or the
        function pair.
    """

    kind: str
    layers: tuple[LayerPath, ...]
    static: Any

    def forward(self, state: Any, images: jax.Array, edits: Sequence[Edit] | None = None
                ) -> tuple[Any, list[jax.Array]]:
        """The model's output and the tapped layers' outputs (before ``edits``)."""
        if edits is None:
            edits = [lambda a: a] * len(self.layers)
        if self.kind == "functions":
            features_fn, head_fn = self.static
            acts = features_fn(images)
            return head_fn(edits[0](acts)), [acts]
        recorder = _Recorder(self.layers, edits)
        if self.kind == "nnx":
            output = _nnx_forward(self.static, state, images, self.layers, recorder)
        else:
            output = _linen_forward(self.static, state, images, recorder)
        return output, recorder.collected()


def _nnx_forward(frozen: Frozen, leaves: list[jax.Array], images: jax.Array,
                 layers: Sequence[LayerPath], recorder: _Recorder) -> Any:
    from flax import nnx

    class Tap(nnx.Module):
        def __init__(self, inner: nnx.Module, path: LayerPath):
            self.inner = inner
            self.path = path

        def __call__(self, *args, **kwargs):
            return recorder.record(self.path, self.inner(*args, **kwargs))

    model = frozen.merge(leaves)  # in eval mode, as pytorch-grad-cam explains
    for layer in layers:
        parent = model
        for part in layer[:-1]:
            parent = _nnx_child(parent, part)
        last = layer[-1]
        if isinstance(parent, nnx.List):
            parent[int(last)] = Tap(parent[int(last)], layer)
        elif isinstance(parent, nnx.Dict):
            parent[last] = Tap(parent[last], layer)
        else:
            setattr(parent, last, Tap(getattr(parent, last), layer))
    return model(images)


def _nnx_child(node: Any, part: str) -> Any:
    from flax import nnx

    if isinstance(node, nnx.List):
        return node[int(part)]
    if isinstance(node, nnx.Dict):
        return node[part]
    return getattr(node, part)


def _linen_forward(module: Any, variables: Any, images: jax.Array, recorder: _Recorder) -> Any:
    import flax.linen as nn

    def interceptor(next_fun, args, kwargs, context):
        output = next_fun(*args, **kwargs)
        path = tuple(context.module.path)
        if context.method_name == "__call__" and path in recorder.index:
            return recorder.record(path, output)
        return output

    with nn.intercept_methods(interceptor):
        return module.apply(variables, images)


def nnx_layer_paths(model: Any) -> list[LayerPath]:
    """Every submodule path of an NNX model, in graph order."""
    from flax import nnx

    return [tuple(str(p) for p in path) for path, node in nnx.iter_graph(model)
            if isinstance(node, nnx.Module) and not isinstance(node, (nnx.List, nnx.Dict))
            and path]


def linen_layer_paths(module: Any, variables: Any, images: jax.Array) -> list[LayerPath]:
    """Every submodule path a Linen module calls on ``images`` (found by abstract evaluation).

    Cached by the module and the shapes and dtypes of the variables and images, so explaining a
    new batch of the same shape does not trace the model again.
    """
    leaves, treedef = jax.tree.flatten(variables)
    leaf_types = tuple((tuple(np.shape(leaf)), np.dtype(jnp.result_type(leaf))) for leaf in leaves)
    image_type = (tuple(images.shape), np.dtype(images.dtype))
    try:
        hash(module)
    except TypeError:  # an unhashable module: trace every time
        return _linen_layer_paths(module, variables, images)
    return list(_cached_linen_layer_paths(module, treedef, leaf_types, image_type))


@functools.lru_cache(maxsize=32)
def _cached_linen_layer_paths(module: Any, treedef: Any, leaf_types: tuple, image_type: tuple
                              ) -> tuple[LayerPath, ...]:
    variables = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(*t) for t in leaf_types])
    return tuple(_linen_layer_paths(module, variables, jax.ShapeDtypeStruct(*image_type)))


def _linen_layer_paths(module: Any, variables: Any, images: Any) -> list[LayerPath]:
    import flax.linen as nn

    paths: list[LayerPath] = []

    def interceptor(next_fun, args, kwargs, context):
        path = tuple(context.module.path)
        if context.method_name == "__call__" and path and path not in paths:
            paths.append(path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v, x: module.apply(v, x), variables, images)
    return paths


def _check_nnx_layers(model: Any, layers: Sequence[LayerPath]) -> None:
    """Raise unless every path names a submodule of ``model`` (walked directly: listing every
    path of a large model takes as long as splitting it)."""
    from flax import nnx

    for layer in layers:
        node = model
        try:
            for part in layer:
                node = _nnx_child(node, part)
        except (AttributeError, IndexError, KeyError, ValueError, TypeError):
            node = None
        if not isinstance(node, nnx.Module) or isinstance(node, (nnx.List, nnx.Dict)):
            raise _unknown_layer_error(layer, nnx_layer_paths(model))


def check_linen_layers(module: Any, layers: Sequence[LayerPath], variables: Any,
                       images: jax.Array) -> None:
    """Raise unless every path names a submodule that ``module`` calls on ``images``."""
    available = linen_layer_paths(module, variables, images)
    for layer in layers:
        if layer not in available:
            raise _unknown_layer_error(layer, available)


def make_adapter(model: Any, layers: Sequence[LayerPath], variables: Any) -> tuple[Adapter, Any]:
    """The adapter for ``model`` tapping ``layers``, and the state to pass to its forward.

    A Linen model's layers can only be listed by running it on images: they are checked by
    :func:`check_linen_layers`, once per image shape, by the caller.

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
        module without ``variables``, or a model of an unsupported kind.
    """
    import flax.linen as nn
    from flax import nnx

    if isinstance(model, nnx.Module) or is_presplit(model):
        _check_nnx_layers(nnx.merge(*model) if is_presplit(model) else model, layers)
        frozen, leaves = split_model(model)
        return Adapter("nnx", tuple(layers), frozen), leaves
    if isinstance(model, nn.Module):
        if variables is None:
            raise ValueError("a Flax Linen model needs its variables: pass "
                             "variables={'params': ..., 'batch_stats': ...} (what model.init "
                             "returned, or your trained state)")
        return Adapter("linen", tuple(layers), model), variables
    if (isinstance(model, tuple) and len(model) == 2 and all(callable(f) for f in model)):
        if len(layers) > 1:
            raise ValueError("a (features_fn, head_fn) model has one tap point, the output of "
                             "features_fn; pass target_layer=None")
        return Adapter("functions", (("features",),), tuple(model)), None
    raise TypeError(
        f"cannot explain a {type(model).__name__}: expected a flax.nnx.Module (or its "
        "nnx.split pair), a flax.linen.Module (with variables=...), or a pair (features_fn, "
        "head_fn) of functions where head_fn(features_fn(images)) is the model output")

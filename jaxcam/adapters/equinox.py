"""Equinox models: layers by attribute path, tapped by swapping the submodule inside the trace.

An Equinox model is a pytree. It is flattened once into its arrays (the state, passed to the
jitted function as arguments) and everything else (the tree structure and the non-array leaves:
activation functions, static fields), hashed once; a new model of the same structure therefore
reuses the compiled computation. Inside the traced function the model is rebuilt, put in
inference mode (``eqx.nn.inference_mode``: BatchNorm's running statistics, dropout off), and
each tapped submodule is replaced by a wrapper with ``eqx.tree_at`` -- the user's model is never
edited.

Equinox layers are per example and channels-first: ``eqx.nn.Conv2d`` takes ``(C, H, W)``, and a
model is written for one image and ``jax.vmap``-ed by its caller. :class:`EquinoxModel` says how
the model is called (``batched=False``: one ``(C, H, W)`` image, vmapped here; ``layout``: the
images' and the feature maps' layout, ``"NCHW"`` by default). Under ``jax.vmap`` a tapped
activation cannot leave the model mid-call to be edited as a batch, so an edited forward runs
the model once per tapped layer plus once: pass ``j`` replaces the layers already tapped by
their edited batch and returns layer ``j``'s output; the parts of each pass that are not used
(below a replaced layer, above the returned one) are dead code that XLA removes, so the compiled
cost stays that of one forward pass.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcam.adapters._tap import Edit, LayerPath, unknown_layer_error

__all__ = ["EquinoxAdapter", "EquinoxModel", "equinox_layer_name", "equinox_layer_paths",
           "equinox_new_state", "equinox_with_heads", "is_equinox", "new_equinox_arrays"]

LAYOUTS = ("NCHW", "NHWC")


class EquinoxModel:
    """An Equinox model and how to call it, for :func:`jaxcam.explain` and friends.

    A bare ``eqx.Module`` is taken as ``EquinoxModel(model)``: one ``(C, H, W)`` image per call,
    channels-first, no state.

    Example::

        model, state = eqx.nn.make_with_state(ResNet18)(key)       # BatchNorm state
        maps = jaxcam.explain(jaxcam.EquinoxModel(model, state), images_nchw,
                              target_layer="layer4")

    Args:
      model: the ``eqx.Module``. Called as ``model(x, **call_kwargs)``, or
        ``model(x, state, **call_kwargs)[0]`` when ``state`` is given.
      state: the model's ``eqx.nn.State`` (BatchNorm statistics), for a model made with
        ``eqx.nn.make_with_state``.
      layout: the model's channel order, ``"NCHW"`` (default: Equinox's convolutions are
        channels-first) or ``"NHWC"``: of the images it takes (``(C, H, W)`` per example for
        NCHW) and of its layers' outputs (``(C, h, w)``). It is also the default layout of the
        images passed to explain (``(B, C, H, W)``); ``explain(..., layout="NHWC")`` takes
        ``(B, H, W, C)`` images for the same model.
      batched: False (default): the model takes one image, ``(C, H, W)``, and is vmapped over
        the batch here; True: it takes the batch itself.
      **call_kwargs: further keyword arguments of every call (e.g. ``key=None``).

    Raises:
      ValueError: an unknown layout.
    """

    def __init__(self, model: Any, state: Any = None, *, layout: str = "NCHW",
                 batched: bool = False, **call_kwargs: Any):
        self.model = model
        self.state = state
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be 'NCHW' (Equinox's channels-first order, the "
                             f"default) or 'NHWC'; got {layout!r}")
        self.layout = layout
        self.batched = bool(batched)
        self.call_kwargs = dict(call_kwargs)

    def __repr__(self) -> str:
        return (f"EquinoxModel({type(self.model).__name__}, state={self.state is not None}, "
                f"layout={self.layout!r}, batched={self.batched}, **{self.call_kwargs})")


def is_equinox(model: Any) -> bool:
    """Whether ``model`` is an Equinox module or an :class:`EquinoxModel` (without importing
    Equinox: a model of it exists only if it was imported)."""
    if isinstance(model, EquinoxModel):
        return True
    eqx = sys.modules.get("equinox")
    return eqx is not None and isinstance(model, eqx.Module)


def _child(node: Any, part: str) -> Any:
    """The child ``part`` of a pytree node: a list/tuple item, a dict value or an attribute."""
    if isinstance(node, (list, tuple)):
        return node[int(part)]
    if isinstance(node, dict):
        return node[part] if part in node else node[int(part)]
    if part.startswith("_"):  # private fields are not layers one names
        raise AttributeError(part)
    return getattr(node, part)


def _is_layer(node: Any) -> bool:
    import equinox as eqx

    return isinstance(node, eqx.Module) and callable(node)


def equinox_layer_paths(model: Any) -> list[LayerPath]:
    """Every callable submodule's attribute path, in field order (``("layers", "3")``).

    Args:
      model: the ``eqx.Module``.

    Returns:
      The paths (the model itself excluded).
    """
    paths: list[LayerPath] = []

    def walk(node: Any, path: LayerPath) -> None:
        if _is_layer(node) or dataclasses.is_dataclass(node) and not isinstance(node, type):
            if path and _is_layer(node):
                paths.append(path)
            for field in dataclasses.fields(node):
                if not field.name.startswith("_"):
                    walk(getattr(node, field.name, None), path + (field.name,))
        elif isinstance(node, (list, tuple)):
            for i, item in enumerate(node):
                walk(item, path + (str(i),))
        elif isinstance(node, dict):
            for key, item in node.items():
                walk(item, path + (str(key),))

    walk(model, ())
    return paths


def equinox_layer_name(model: Any, layer: Any) -> str:
    """The attribute path of the submodule object ``layer`` in ``model`` (found by identity).

    Args:
      model: an ``eqx.Module`` or an :class:`EquinoxModel`.
      layer: one of its submodules (``model.layer3[1]``).

    Returns:
      Its '/'-separated path.

    Raises:
      ValueError: ``layer`` is not a submodule of ``model``.
    """
    model = model.model if isinstance(model, EquinoxModel) else model
    for path in equinox_layer_paths(model):
        if _resolve(model, path) is layer:
            return "/".join(path)
    raise ValueError(f"the {type(layer).__name__} given as a target layer is not a submodule of "
                     f"this {type(model).__name__}; pass one of its modules or a '/'-separated "
                     "path")


def _resolve(model: Any, layer: LayerPath) -> Any:
    node = model
    for part in layer:
        node = _child(node, part)
    return node


def check_equinox_layers(model: Any, layers: Sequence[LayerPath]) -> None:
    """Raise unless every path names a callable submodule of ``model``."""
    for layer in layers:
        try:
            node = _resolve(model, layer)
        except (AttributeError, IndexError, KeyError, ValueError, TypeError):
            node = None
        if not _is_layer(node):
            raise unknown_layer_error(layer, equinox_layer_paths(model))


def _same(a: Any, b: Any) -> bool:
    """``a == b`` for non-array leaves, False where the comparison is not a plain bool."""
    if a is b:
        return True
    try:
        return bool(type(a) is type(b) and (a == b) is True)
    except Exception:  # an object whose == raises or is ambiguous: not the same
        return False


@dataclasses.dataclass(frozen=True, eq=False)
class EquinoxStructure:
    """An Equinox model (and its ``eqx.nn.State``) without its arrays, hashed once.

    Attributes:
      treedef: the tree structure of ``(model, state)``.
      statics: ``(index, leaf)`` for every leaf that is not an array.
      n_leaves: the number of leaves.
    """

    treedef: Any
    statics: tuple[tuple[int, Any], ...]
    n_leaves: int
    _hash: int = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            value = hash((self.treedef, self.statics))
        except TypeError:  # an unhashable leaf: equal only to itself (no sharing of compiles)
            value = id(self)
        object.__setattr__(self, "_hash", value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return (isinstance(other, EquinoxStructure) and self._hash == other._hash
                and self.treedef == other.treedef and len(self.statics) == len(other.statics)
                and all(i == j and _same(a, b)
                        for (i, a), (j, b) in zip(self.statics, other.statics, strict=True)))

    @classmethod
    def split(cls, model: Any, state: Any) -> tuple[EquinoxStructure, list[Any]]:
        """The structure of ``(model, state)`` and its arrays (``eqx.is_array`` leaves)."""
        import equinox as eqx

        leaves, treedef = jax.tree.flatten((model, state))
        statics = tuple((i, leaf) for i, leaf in enumerate(leaves) if not eqx.is_array(leaf))
        arrays = [leaf for leaf in leaves if eqx.is_array(leaf)]
        return cls(treedef, statics, len(leaves)), arrays

    def merge(self, arrays: Sequence[Any]) -> tuple[Any, Any]:
        """``(model, state)`` from the arrays."""
        statics = dict(self.statics)
        it = iter(arrays)
        leaves = [statics[i] if i in statics else next(it) for i in range(self.n_leaves)]
        return jax.tree.unflatten(self.treedef, leaves)


@functools.cache
def _tap_class() -> type:
    """The wrapper module that replaces a tapped layer (made once, when Equinox is in use)."""
    import equinox as eqx

    class Tap(eqx.Module):
        """Calls the layer, then ``hook`` on its output (``(y, state)``: on ``y``)."""

        inner: Any
        hook: Callable[[Any], Any] = eqx.field(static=True)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            output = self.inner(*args, **kwargs)
            if isinstance(output, tuple) and len(output) == 2 and isinstance(
                    output[1], eqx.nn.State):
                return self.hook(output[0]), output[1]
            return self.hook(output)

    return Tap


@dataclasses.dataclass(frozen=True)
class EquinoxAdapter:
    """An Equinox model tapped at some layers; its state is the model's arrays.

    Attributes:
      structure: the model (and BatchNorm state) without its arrays.
      layers: the tapped layers' paths.
      stateful: whether the model is called as ``model(x, state)``.
      layout: the layout of the images the caller passes (the explainer turns them NHWC).
      model_layout: the model's own channel order, ``"NCHW"`` or ``"NHWC"``: of the images it
        takes and of its layers' outputs (turned here from and to the pipeline's NHWC).
      batched: whether the model takes the whole batch (else one image, vmapped).
      call_kwargs: the call's keyword arguments, sorted.
    """

    structure: EquinoxStructure
    layers: tuple[LayerPath, ...]
    stateful: bool = False
    layout: str = "NCHW"
    model_layout: str = "NCHW"
    batched: bool = False
    call_kwargs: tuple[tuple[str, Any], ...] = ()
    kind = "equinox"

    @classmethod
    def prepare(cls, model: Any, layers: Sequence[LayerPath]) -> tuple[EquinoxAdapter, Any]:
        """Check the layers and split the model, once.

        Args:
          model: an ``eqx.Module`` or an :class:`EquinoxModel`.
          layers: the attribute paths to tap.

        Returns:
          The adapter and its state (the arrays of the model and of its ``eqx.nn.State``).

        Raises:
          ValueError: a layer that does not exist (the message lists the ones that do).
        """
        spec = model if isinstance(model, EquinoxModel) else EquinoxModel(model)
        check_equinox_layers(spec.model, layers)
        structure, arrays = EquinoxStructure.split(spec.model, spec.state)
        return cls(structure, tuple(layers), spec.state is not None, spec.layout, spec.layout,
                   spec.batched, tuple(sorted(spec.call_kwargs.items()))), arrays

    def _call(self, model: Any, bn_state: Any, x: jax.Array) -> Any:
        kwargs = dict(self.call_kwargs)
        return model(x, bn_state, **kwargs)[0] if self.stateful else model(x, **kwargs)

    def _tapped(self, model: Any, hooks: Mapping[LayerPath, Callable[[Any], Any]]) -> Any:
        """``model`` with each hooked layer wrapped (innermost first, so nested taps nest)."""
        import equinox as eqx

        tap = _tap_class()
        for layer in sorted(hooks, key=len, reverse=True):
            model = eqx.tree_at(lambda m, layer=layer: _resolve(m, layer), model,
                                replace_fn=lambda inner, layer=layer: tap(inner, hooks[layer]))
        return model

    def _features_out(self, a: Any) -> Any:
        """A tapped batch as the pipeline reads it: a channels-first map ``(B, C, h, w)`` as
        ``(B, h, w, C)``; any other output as it is (a ``reshape_transform`` or the explainer's
        check of maps takes it from there)."""
        if self.model_layout == "NCHW" and getattr(a, "ndim", 0) == 4:
            return jnp.transpose(a, (0, 2, 3, 1))
        return a

    def _features_in(self, a: Any) -> Any:
        """The inverse of :meth:`_features_out` (also the images: NHWC -> the model's)."""
        if self.model_layout == "NCHW" and getattr(a, "ndim", 0) == 4:
            return jnp.transpose(a, (0, 3, 1, 2))
        return a

    def _run(self, model: Any, bn_state: Any, x: jax.Array,
             replace: Mapping[LayerPath, jax.Array], record: Sequence[LayerPath]
             ) -> tuple[Any, dict[LayerPath, jax.Array], list[LayerPath]]:
        """One pass: layers in ``replace`` output the given batch instead of their own; layers
        in ``record`` have their outputs returned; also returns the order they completed in."""
        order: list[LayerPath] = []

        def run_one(x: jax.Array, replacements: dict[LayerPath, jax.Array]
                    ) -> tuple[Any, dict[LayerPath, jax.Array]]:
            seen: dict[LayerPath, jax.Array] = {}

            def hook(layer: LayerPath) -> Callable[[Any], Any]:
                def apply(output: Any) -> Any:
                    if layer in seen:
                        raise RuntimeError(
                            f"layer {'/'.join(layer)!r} runs more than once in one forward "
                            "pass, so its output is not one feature map; choose a layer that "
                            "runs once")
                    order.append(layer)
                    seen[layer] = output
                    return replacements.get(layer, output)
                return apply

            tapped = self._tapped(model, {layer: hook(layer) for layer in self.layers})
            return self._call(tapped, bn_state, x), {k: seen[k] for k in record if k in seen}

        if self.batched:
            output, recorded = run_one(x, dict(replace))
        else:
            output, recorded = jax.vmap(run_one)(x, dict(replace))
        for layer in record:
            if layer not in recorded:
                raise ValueError(f"layer {'/'.join(layer)!r} exists but was not called in the "
                                 "forward pass; choose a layer the model uses")
        return output, recorded, list(dict.fromkeys(order))

    def forward(self, state: Any, images: jax.Array, edits: Sequence[Edit] | None = None
                ) -> tuple[Any, list[jax.Array]]:
        """The model's output and the tapped layers' outputs.

        Args:
          state: the model's arrays.
          images: ``(B, H, W, C)`` images (the pipeline's layout).
          edits: ``edits[i]`` replaces layer i's output ``(B, h, w, C)`` on its way up.

        Returns:
          The model output and the tapped layers' ``(B, h, w, C)`` outputs (before ``edits``).
        """
        import equinox as eqx

        model, bn_state = self.structure.merge(state)
        model = eqx.nn.inference_mode(model)
        x = self._features_in(images)
        output, recorded, order = self._run(model, bn_state, x, {}, self.layers)
        acts = {layer: self._features_out(recorded[layer]) for layer in self.layers}
        if edits is None:
            return output, [acts[layer] for layer in self.layers]
        edit_of = dict(zip(self.layers, edits, strict=True))
        replaced: dict[LayerPath, jax.Array] = {}
        for j, layer in enumerate(order):
            if j > 0 and replaced:  # its input may depend on the layers edited below it
                _, recorded, _ = self._run(model, bn_state, x, replaced, (layer,))
                acts[layer] = self._features_out(recorded[layer])
            edited = edit_of[layer](acts[layer])
            if edited is not acts[layer]:  # an identity edit needs no replacement
                replaced[layer] = self._features_in(edited)
        if replaced:
            output, _, _ = self._run(model, bn_state, x, replaced, ())
        return output, [acts[layer] for layer in self.layers]

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Nothing to check per call: the layers were checked when prepared."""

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: ``model`` (an ``eqx.Module`` or an :class:`EquinoxModel` of the same
        structure), with ``variables`` its new ``eqx.nn.State`` if it has one."""
        return equinox_new_state(self.structure, self.stateful, model, variables)


def new_equinox_arrays(structure: EquinoxStructure, stateful: bool, model: Any,
                       variables: Any) -> list[Any]:
    """The arrays of ``model`` (and its ``eqx.nn.State`` ``variables``), checked to fit
    ``structure``.

    Raises:
      TypeError: a state given to (or missing for) a model without (with) one.
      ValueError: a model of another structure.
    """
    if (variables is not None) != stateful:
        raise TypeError("the new weights must " + ("" if stateful else "not ")
                        + "come with an eqx.nn.State, as the model the explainer was "
                        "built for")
    new_structure, arrays = EquinoxStructure.split(model, variables)
    if new_structure != structure:
        raise ValueError("the new weights do not fit this explainer: the model's structure "
                         "(modules, fields or array shapes' tree) differs from the one it "
                         "was built for; build a new explainer for the new model")
    return arrays


@functools.cache
def _head_tap_class() -> type:
    """The wrapper module that replaces a multi-exit head's first and / or last module."""
    import equinox as eqx

    class HeadTap(eqx.Module):
        """Calls the module on ``enter(x)`` (if set), then ``leave`` on its output (``(y,
        state)``: on ``y``)."""

        inner: Any
        name: str = eqx.field(static=True)
        enter: Callable[[Any], Any] | None = eqx.field(static=True, default=None)
        leave: Callable[[Any], Any] | None = eqx.field(static=True, default=None)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            if self.enter is not None:
                if not args or not isinstance(args[0], jax.Array):
                    raise TypeError(f"head module {self.name!r} is not called on one array as "
                                    "its first argument; name a head module whose input is "
                                    "the exit's feature map")
                args = (self.enter(args[0]), *args[1:])
            output = self.inner(*args, **kwargs)
            if self.leave is not None:
                stateful = isinstance(output, tuple) and len(output) == 2 and isinstance(
                    output[1], eqx.nn.State)
                logits = output[0] if stateful else output
                if not isinstance(logits, jax.Array):
                    raise TypeError(f"head module {self.name!r} returns "
                                    f"{type(logits).__name__}, not an array of logits")
                self.leave(logits)
            return output

    return HeadTap


def equinox_with_heads(model: Any, heads: Sequence[tuple[LayerPath, LayerPath]],
                       recorder: Any) -> Any:
    """``model`` with multi-exit heads' modules wrapped (a new model; ``model`` is unchanged).

    Args:
      model: the ``eqx.Module``.
      heads: each exit's ``(entry, exit)`` attribute paths: the entry module's input is the
        exit's features, the exit module's output its logits (the same module for a one-module
        head).
      recorder: ``recorder.enter(i, x)`` takes exit i's features and returns what the entry
        module is fed instead; ``recorder.leave(i, y)`` takes its logits
        (:class:`jaxcam.adapters.exits.HeadRecorder`).

    Returns:
      The model with the wrappers: only the head's own call sees the entered value, the rest of
      the network the features as they are.
    """
    import equinox as eqx

    hooks: dict[LayerPath, dict[str, Any]] = {}
    for i, (entry, last) in enumerate(heads):
        hooks.setdefault(entry, {})["enter"] = functools.partial(recorder.enter, i)
        hooks.setdefault(last, {})["leave"] = functools.partial(recorder.leave, i)
    tap = _head_tap_class()
    for layer in sorted(hooks, key=len, reverse=True):  # innermost first, so wrappers nest
        model = eqx.tree_at(lambda m, layer=layer: _resolve(m, layer), model,
                            replace_fn=lambda inner, layer=layer: tap(inner, "/".join(layer),
                                                                      **hooks[layer]))
    return model


def equinox_new_state(structure: Any, stateful: bool, model: Any, variables: Any) -> Any:
    """An Equinox explainer's new weights (its ``update``): ``model`` (an ``eqx.Module`` or an
    :class:`EquinoxModel` of the same structure), with ``variables`` its new ``eqx.nn.State``.

    Raises:
      TypeError: no model, or the state given both inside an EquinoxModel and as ``variables``.
    """
    if model is None:
        raise TypeError("an Equinox explainer's update takes the model (an eqx.Module or "
                        "jaxcam.EquinoxModel), and variables=its new eqx.nn.State if any")
    if isinstance(model, EquinoxModel):
        if variables is not None:
            raise TypeError("pass the new eqx.nn.State inside the EquinoxModel or as "
                            "variables=, not both")
        model, variables = model.model, model.state
    return new_equinox_arrays(structure, stateful, model, variables)

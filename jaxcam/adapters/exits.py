"""Multi-exit models: one adapter protocol (:class:`ExitAdapter`) for every kind of model.

``explain_exits`` explains each exit k at its own classifier head: the exit's features ``f_k``
are the head's input, its logits the head's output, and exit k's map is built from
``d score_k / d f_k`` through head k alone. Every adapter therefore runs the model once with
head k fed ``f_k + delta_k`` (the deltas zeros, the variables of differentiation) while the rest
of the network sees ``f_k`` itself: ``d (sum_k score_k) / d delta_k`` is then exactly exit k's
gradient, even where ``f_k`` also feeds the later blocks (their exits do not leak into it), and
all exits come out of one backward pass.

Three kinds of model:

* a :class:`MultiExitModel` (``exit_features(x)`` and ``classify(k, f_k)``, e.g.
  ``msdnet_flax.MSDNet``): an NNX one is split once (:class:`NnxExitAdapter`, its weights the
  state, merged in eval mode inside the trace); any other object is used as it is
  (:class:`ObjectExitAdapter`). ``exits`` selects exits by index.
* a PyTorch module (run as JAX through torchax, :class:`TorchExitAdapter`) or a Keras 3 model
  on JAX (:class:`KerasExitAdapter`), whose exits are *named*: ``exits`` lists each exit's
  classifier head, as a module / layer name (``"classifiers.0"``; a Keras layer nested in a
  sub-model as ``"inner/head0"``), the module / layer object itself, or a pair
  ``(first, last)`` for a head of several layers (features: ``first``'s input; logits:
  ``last``'s output). The head's input is swapped by a forward pre-hook (PyTorch) or a wrapped
  ``call`` (Keras) for that one call. Whatever the model's forward returns, each exit's logits
  are taken from its head.

torch and keras are imported only when a model of theirs is given.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import jax
from flax import nnx

from jaxcam.adapters.keras import (
    check_model,
    is_keras_model,
    keras_head_wrappers,
    keras_layer_paths,
    keras_layers,
    keras_values,
    new_keras_values,
    run_keras,
)
from jaxcam.adapters.nnx import NnxAdapter, is_nnx, is_presplit, split_model
from jaxcam.adapters.torch import (
    is_torch_module,
    new_torch_weights,
    run_module,
    torch_head_hooks,
    torch_module_names,
    torch_weights,
)

__all__ = ["ExitAdapter", "HeadRecorder", "KerasExitAdapter", "MultiExitModel",
           "NnxExitAdapter", "ObjectExitAdapter", "TorchExitAdapter", "make_exit_adapter"]


@runtime_checkable
class MultiExitModel(Protocol):
    """A network with several classifiers (exits) along its depth, e.g. ``msdnet_flax.MSDNet``.

    ``num_exits`` is optional: without it the exits are counted on the first call.
    """

    def exit_features(self, x: jax.Array) -> Sequence[jax.Array]:
        """Each exit's classifier input ``[f_1, ..., f_K]`` (NHWC) for images ``x``."""
        ...

    def classify(self, k: int, features: jax.Array) -> jax.Array:
        """Exit ``k``'s logits from its classifier input ``f_k``."""
        ...


class ExitAdapter(Protocol):
    """What :func:`jaxcam._exit_pipeline.explain_exits_core` asks of a multi-exit model.
    Implementations are hashable (a static argument of ``jax.jit``); the weights travel
    separately as the state.

    Attributes:
      kind: a short name of the model kind, for messages.
    """

    kind: str

    def exit_forward(self, state: Any, images: jax.Array, exits: Sequence[int],
                     deltas: Sequence[jax.Array] | None = None
                     ) -> tuple[list[jax.Array], list[jax.Array]]:
        """The features ``f_k`` (each head's input, as the network computes it) and the logits
        of the exits ``exits``, head k fed ``f_k + deltas[i]`` (``f_k`` without deltas) and the
        rest of the network ``f_k``."""
        ...

    def count_exits(self, state: Any, images: jax.Array) -> int:
        """The model's number of exits (may trace the model abstractly)."""
        ...

    def exit_label(self, k: int) -> str:
        """Exit ``k`` in messages (``"exit 0"``, ``"exit 0 (head 'classifiers.0')"``)."""
        ...

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Checks that need the images, on the host, before a call."""
        ...

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """The state of new weights of the same model (``ExitExplainer.update``'s arguments)."""
        ...


# ---------------------------------------------------------------------------------------------
# MultiExitModel: exit_features / classify


class _ProtocolExits:
    """:class:`ExitAdapter` over a :class:`MultiExitModel`; ``self.model(state)`` is the model."""

    def exit_forward(self, state: Any, images: jax.Array, exits: Sequence[int],
                     deltas: Sequence[jax.Array] | None = None
                     ) -> tuple[list[jax.Array], list[jax.Array]]:
        """``exit_features`` once, then ``classify(k, f_k + delta_k)`` per exit."""
        model = self.model(state)  # type: ignore[attr-defined]
        features = model.exit_features(images)
        selected = [features[k] for k in exits]
        fed = selected if deltas is None else [f + d for f, d in zip(selected, deltas,
                                                                       strict=True)]
        return selected, [model.classify(k, f) for k, f in zip(exits, fed, strict=True)]

    def count_exits(self, state: Any, images: jax.Array) -> int:
        """``len(exit_features(images))``, traced abstractly."""
        return len(jax.eval_shape(lambda x: self.model(state).exit_features(x),  # type: ignore
                                  images))

    def exit_label(self, k: int) -> str:
        """``"exit k"``."""
        return f"exit {k}"


@dataclasses.dataclass(frozen=True)
class NnxExitAdapter(NnxAdapter, _ProtocolExits):
    """An NNX :class:`MultiExitModel`, split once; its state is the weights' leaves (see
    :class:`jaxcam.adapters.NnxAdapter`, whose ``model``, ``check_call`` and ``new_state`` it
    keeps)."""


@dataclasses.dataclass(frozen=True)
class ObjectExitAdapter(_ProtocolExits):
    """A :class:`MultiExitModel` that is not an NNX module: used as it is, holding no state.

    Attributes:
      obj: the model (hashable: it is a static argument of ``jax.jit``).
    """

    obj: Any
    kind = "object"

    def model(self, state: Any) -> Any:
        """The model itself (``state`` is None)."""
        return self.obj

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Nothing to check per call."""

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """Always refuses: the model holds no weights of its own here."""
        raise TypeError("this explainer's model is not a Flax NNX, PyTorch or Keras model: it "
                        "holds no weights of its own to update; build a new ExitExplainer "
                        "instead")


# ---------------------------------------------------------------------------------------------
# PyTorch and Keras: exits named by their classifier heads


class HeadRecorder:
    """Each head's input and output during one forward pass; feeds head i ``x + deltas[i]``.

    Args:
      labels: the exits' labels, for messages.
      deltas: what to add to each head's input (None: nothing).
    """

    def __init__(self, labels: Sequence[str], deltas: Sequence[jax.Array] | None):
        self.labels = list(labels)
        self.deltas = deltas
        self.features: list[Any] = [None] * len(self.labels)
        self.logits: list[Any] = [None] * len(self.labels)

    def enter(self, i: int, x: jax.Array) -> jax.Array:
        """Head i's input ``x``; returns what the head is fed instead."""
        if self.features[i] is not None:
            raise RuntimeError(
                f"{self.labels[i]} runs more than once in one forward pass (a head shared by "
                "several exits, or called in a loop), so its input is not one exit's features; "
                "name, per exit, a head module that runs once")
        self.features[i] = x
        return x if self.deltas is None else x + self.deltas[i]

    def leave(self, i: int, y: jax.Array) -> None:
        """Head i's output ``y``: the exit's logits."""
        if self.features[i] is None:
            raise RuntimeError(f"the last layer of {self.labels[i]} ran before its first; give "
                               "a head of several layers as (first, last) in the order they run")
        if self.logits[i] is not None:
            raise RuntimeError(f"{self.labels[i]} runs more than once in one forward pass; "
                               "name, per exit, a head module that runs once")
        self.logits[i] = y

    def collected(self) -> tuple[list[jax.Array], list[jax.Array]]:
        """Every head's input and output, in the order of the exits."""
        for i, label in enumerate(self.labels):
            if self.features[i] is None or self.logits[i] is None:
                raise ValueError(f"{label} is not called in the model's forward pass; name "
                                 "heads the model uses")
        return self.features, self.logits


def _label(k: int, head: tuple[str, str]) -> str:
    first, last = head
    return f"exit {k} (head {first!r})" if first == last else (
        f"exit {k} (head {first!r} .. {last!r})")


@dataclasses.dataclass(frozen=True)
class TorchExitAdapter:
    """A ``torch.nn.Module`` with named exit heads, run through torchax; its state is the
    parameters and buffers (name -> ``jax.Array``), as :class:`jaxcam.adapters.TorchAdapter`'s.

    Attributes:
      module: the ``torch.nn.Module``.
      heads: each exit's ``(first, last)`` dotted module names (equal for a one-module head).
      default_layout: PyTorch's ``"NCHW"`` (images and rank-4 features channels-first).
    """

    module: Any
    heads: tuple[tuple[str, str], ...]
    kind = "torch"
    default_layout = "NCHW"

    def exit_forward(self, state: Any, images: jax.Array, exits: Sequence[int],
                     deltas: Sequence[jax.Array] | None = None
                     ) -> tuple[list[jax.Array], list[jax.Array]]:
        """One forward pass with the heads hooked (see :class:`ExitAdapter`)."""
        recorder = HeadRecorder([self.exit_label(k) for k in exits], deltas)
        run_module(self.module, state, images,
                   torch_head_hooks([self.heads[k] for k in exits], recorder))
        return recorder.collected()

    def count_exits(self, state: Any, images: jax.Array) -> int:
        """The number of heads named."""
        return len(self.heads)

    def exit_label(self, k: int) -> str:
        """``"exit k (head 'classifiers.0')"``."""
        return _label(k, self.heads[k])

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Nothing to check per call: the heads were checked when prepared."""

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: the module trained further, or ``variables=`` its ``state_dict``."""
        return new_torch_weights(self.module, model, variables)


@dataclasses.dataclass(frozen=True)
class KerasExitAdapter:
    """A ``keras.Model`` with named exit heads, run statelessly; its state is (trainable
    values, non-trainable values), as :class:`jaxcam.adapters.KerasAdapter`'s.

    Attributes:
      model: the ``keras.Model``.
      heads: each exit's ``(first, last)`` layer paths (equal for a one-layer head).
      default_layout: ``"NCHW"`` under Keras's ``channels_first`` image data format, else
        ``"NHWC"``.
    """

    model: Any
    heads: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    default_layout: str = "NHWC"
    kind = "keras"

    def exit_forward(self, state: Any, images: jax.Array, exits: Sequence[int],
                     deltas: Sequence[jax.Array] | None = None
                     ) -> tuple[list[jax.Array], list[jax.Array]]:
        """One forward pass with the heads' calls wrapped (see :class:`ExitAdapter`)."""
        recorder = HeadRecorder([self.exit_label(k) for k in exits], deltas)
        run_keras(self.model, state, images,
                  keras_head_wrappers([self.heads[k] for k in exits], recorder))
        return recorder.collected()

    def count_exits(self, state: Any, images: jax.Array) -> int:
        """The number of heads named."""
        return len(self.heads)

    def exit_label(self, k: int) -> str:
        """``"exit k (head 'head0')"``."""
        first, last = self.heads[k]
        return _label(k, ("/".join(first), "/".join(last)))

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Nothing to check per call: the heads were checked when prepared."""

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: the model trained further, or ``variables=(trainable values,
        non-trainable values)``."""
        return new_keras_values(self.model, model, variables)


def _listing(names: Sequence[str]) -> str:
    shown = "\n  ".join(names[:200]) + ("\n  ..." if len(names) > 200 else "")
    return f"({len(names)}):\n  {shown}"


def _named_heads(model: Any, exits: Any, framework: str, names: list[str],
                 resolve_object: Any, sep: str) -> list[tuple[str, str]]:
    """Each exit's ``(first, last)`` head names, checked.

    Args:
      model: the model.
      exits: the user's ``exits``.
      framework: ``"PyTorch"`` or ``"Keras"``, for messages.
      names: the model's module / layer names.
      resolve_object: a module / layer object -> its name, or None if it is not one of the
        framework's objects (raises ValueError for an object not in ``model``).
      sep: the framework's path separator (``"."`` for PyTorch, ``"/"`` for Keras).

    Raises:
      TypeError: ``exits`` not a list of names, objects or pairs.
      ValueError: no exits, an unknown name, or a head named twice.
    """
    what = "module" if framework == "PyTorch" else "layer"
    example = "'classifiers.0', 'classifiers.1'" if framework == "PyTorch" else "'head0', 'head1'"
    fix = (f"name each exit's classifier head, in exit order: exits=[{example}, ...] (the "
           f"{what}s' names or the {what} objects; a (first, last) pair for a head of several "
           f"{what}s)")
    if exits is None:
        raise ValueError(f"explain_exits on a {framework} model needs its exits: {fix}. This "
                         f"{type(model).__name__}'s {what}s are {_listing(names)}")
    if isinstance(exits, (str, bytes)) or not isinstance(exits, (list, tuple)):
        raise TypeError(f"exits must be a list with one entry per exit; got "
                        f"{type(exits).__name__}. {fix}")
    if not exits:
        raise ValueError(f"exits is empty; {fix}")

    def one(i: int, item: Any) -> str:
        if isinstance(item, str):
            name = sep.join(p for p in item.replace("/", sep).split(sep) if p)
            if name not in names:
                raise ValueError(f"exits[{i}] = {item!r} is not a {what} of this "
                                 f"{type(model).__name__}; {fix}. Its {what}s are "
                                 f"{_listing(names)}")
            return name
        name = resolve_object(item)
        if name is None:
            kind = "an index" if isinstance(item, int) else f"a {type(item).__name__}"
            raise TypeError(f"exits[{i}] is {kind}: on a {framework} model the exits are named, "
                            f"not numbered; {fix}. Its {what}s are {_listing(names)}")
        return name

    heads = []
    for i, item in enumerate(exits):
        if isinstance(item, tuple) and len(item) == 2:
            heads.append((one(i, item[0]), one(i, item[1])))
        elif isinstance(item, tuple):
            raise TypeError(f"exits[{i}] is a tuple of {len(item)}; a head of several "
                            f"{what}s is a pair (first, last). {fix}")
        else:
            name = one(i, item)
            heads.append((name, name))
    for i, head in enumerate(heads):
        if head in heads[:i]:
            raise ValueError(f"exits[{i}] names head {head[0]!r} again (exit "
                             f"{heads.index(head)}); each exit has its own head")
    return heads


def _torch_exit_adapter(model: Any, exits: Any) -> tuple[TorchExitAdapter, Any]:
    from jaxcam.adapters._torchax_compat import import_torchax

    import_torchax()
    by_id = {id(module): name for name, module in model.named_modules() if name}

    def resolve(item: Any) -> str | None:
        if not is_torch_module(item):
            return None
        if id(item) not in by_id:
            raise ValueError(f"the {type(item).__name__} given in exits is not a submodule of "
                             f"this {type(model).__name__}; pass its heads (e.g. "
                             f"model.classifiers[0]) or their dotted names")
        return by_id[id(item)]

    if type(exits).__name__ == "ModuleList":  # exits=model.classifiers: one head per entry
        exits = list(exits)
    heads = _named_heads(model, exits, "PyTorch", torch_module_names(model), resolve, ".")
    return TorchExitAdapter(model, tuple(heads)), torch_weights(model)


def _keras_exit_adapter(model: Any, exits: Any) -> tuple[KerasExitAdapter, Any]:
    native = check_model(model)
    import keras

    paths = keras_layer_paths(model)
    by_id = {id(layer): "/".join(path) for path, layer in keras_layers(model)}

    def resolve(item: Any) -> str | None:
        if not isinstance(item, keras.layers.Layer):
            return None
        if id(item) not in by_id:
            raise ValueError(f"the layer {item.name!r} given in exits is not a layer of this "
                             f"model; pass its head layers (model.get_layer(name)) or their "
                             f"names")
        return by_id[id(item)]

    heads = _named_heads(model, exits, "Keras", ["/".join(p) for p in paths], resolve, "/")
    split = tuple((tuple(first.split("/")), tuple(last.split("/"))) for first, last in heads)
    return KerasExitAdapter(model, split, native), keras_values(model)


def _indices(model: Any, exits: Any) -> tuple[int, ...]:
    """A numbered model's requested exits as ints, or a TypeError naming the fix."""
    try:
        if isinstance(exits, (str, bytes)):
            raise TypeError
        return tuple(operator.index(k) for k in exits)
    except TypeError:
        raise TypeError(f"this {type(model).__name__}'s exits are numbered (it has "
                        f"exit_features/classify): pass exits as a list of indices, e.g. "
                        f"exits=[0, 2], or None for all; got {exits!r}") from None


def make_exit_adapter(model: Any, exits: Any = None
                      ) -> tuple[ExitAdapter, Any, int | None, tuple[int, ...] | None]:
    """The adapter of a multi-exit model, its state, and the exits to explain.

    Args:
      model: a :class:`MultiExitModel` (or an NNX one's ``nnx.split`` pair), a
        ``torch.nn.Module`` or a ``keras.Model``.
      exits: for a :class:`MultiExitModel`, the exits' indices (None: all); for a PyTorch or
        Keras model, each exit's classifier head, in exit order (see the module docstring).

    Returns:
      ``(adapter, state, num_exits, requested)``: ``num_exits`` is the model's ``num_exits``
      attribute or the number of heads named (None when unknown until the first call);
      ``requested`` the requested exits' indices (None: all).

    Raises:
      TypeError: a model of no multi-exit kind, or exits of the wrong type (indices for a model
        whose exits are named, or names for one whose exits are numbered).
      ValueError: a head that is not part of the model (the message lists those that are), a
        head named twice, or no exits.
    """
    if is_keras_model(model):  # first: on Keras's torch backend a model is a torch Module too
        adapter, state = _keras_exit_adapter(model, exits)
        return adapter, state, len(adapter.heads), None
    if is_torch_module(model):
        adapter, state = _torch_exit_adapter(model, exits)
        return adapter, state, len(adapter.heads), None
    # An nnx.split pair is merged once here, for the checks.
    probe = nnx.merge(*model) if is_presplit(model) else model
    missing = [attr for attr in ("exit_features", "classify")
               if not callable(getattr(probe, attr, None))]
    if missing or not isinstance(probe, MultiExitModel):
        raise TypeError(f"explain_exits needs a multi-exit model: one with exit_features(x) and "
                        f"classify(k, features) (a MultiExitModel), or a torch.nn.Module or "
                        f"keras.Model with exits=[...] naming each exit's classifier head; "
                        f"{type(probe).__name__} has no {missing[0] if missing else 'exits'}")
    requested = None if exits is None else _indices(probe, exits)
    n_exits = getattr(probe, "num_exits", None)
    n_exits = None if n_exits is None else int(n_exits)
    if is_nnx(model):
        frozen, leaves = split_model(model)
        return NnxExitAdapter(frozen, ()), leaves, n_exits, requested
    return ObjectExitAdapter(model), None, n_exits, requested

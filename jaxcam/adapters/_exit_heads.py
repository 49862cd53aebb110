"""Multi-exit models whose exits are named by their classifier heads: PyTorch, Keras 3, Flax
Linen, Haiku and Equinox (see :mod:`jaxcam.adapters.exits`, whose :func:`make_exit_adapter`
chooses among them). Each adapter runs the model once with head k fed ``f_k + delta_k`` while
the rest of the network sees ``f_k``; :class:`HeadRecorder` does the bookkeeping for all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from jaxcam.adapters._tap import LayerPath
from jaxcam.adapters.equinox import (
    EquinoxModel,
    EquinoxStructure,
    equinox_layer_paths,
    equinox_new_state,
    equinox_with_heads,
    is_equinox,
)
from jaxcam.adapters.haiku import (
    HaikuAdapter,
    HaikuModel,
    haiku_head_interceptor,
    haiku_layer_paths,
    haiku_transformed_error,
    is_haiku_transformed,
    run_haiku,
)
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
from jaxcam.adapters.linen import (
    LinenAdapter,
    LinenModel,
    linen_head_interceptor,
    linen_layer_paths,
    run_linen,
)
from jaxcam.adapters.torch import (
    is_torch_module,
    new_torch_weights,
    run_module,
    torch_head_hooks,
    torch_module_names,
    torch_weights,
)

__all__ = ["EquinoxExitAdapter", "HaikuExitAdapter", "HeadRecorder", "KerasExitAdapter",
           "LinenExitAdapter", "TorchExitAdapter", "is_exit_protocol", "named_exit_adapter"]


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


class _NamedHeads:
    """What every named-head adapter shares: ``heads`` (each exit's ``(first, last)``), so the
    exits are counted without running the model; labels from the heads' paths; and nothing
    to check per call (the heads were checked when prepared) unless an adapter says otherwise.
    """

    heads: tuple[tuple[Any, Any], ...]

    def count_exits(self, state: Any, images: jax.Array) -> int:
        """The number of heads named."""
        return len(self.heads)

    def exit_label(self, k: int) -> str:
        """``"exit k (head 'heads/0')"``."""
        return _path_label(k, self.heads[k])

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Nothing to check per call: the heads were checked when prepared."""


@dataclasses.dataclass(frozen=True)
class TorchExitAdapter(_NamedHeads):
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

    def exit_label(self, k: int) -> str:
        """``"exit k (head 'classifiers.0')"``."""
        return _label(k, self.heads[k])

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: the module trained further, or ``variables=`` its ``state_dict``."""
        return new_torch_weights(self.module, model, variables)


@dataclasses.dataclass(frozen=True)
class KerasExitAdapter(_NamedHeads):
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

    def exit_label(self, k: int) -> str:
        """``"exit k (head 'head0')"``."""
        first, last = self.heads[k]
        return _label(k, ("/".join(first), "/".join(last)))

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: the model trained further, or ``variables=(trainable values,
        non-trainable values)``."""
        return new_keras_values(self.model, model, variables)


# ---------------------------------------------------------------------------------------------
# Flax Linen, Haiku and Equinox: exits named by their classifier heads, as for PyTorch / Keras


def _path_label(k: int, head: tuple[LayerPath, LayerPath]) -> str:
    first, last = head
    return _label(k, ("/".join(first), "/".join(last)))


def _check_called(heads: Sequence[tuple[LayerPath, LayerPath]], available: Sequence[LayerPath],
                  framework: str, model_name: str) -> None:
    """Raise unless every head module is among those the model calls (``available``): the
    check of a Flax Linen or Haiku model's head names, which can only be listed by running it.

    Raises:
      ValueError: an unknown head, naming the fix and listing the modules that are called.
    """
    names = ["/".join(p) for p in available if p]
    for i, head in enumerate(heads):
        for part in dict.fromkeys(head):
            if part not in available:
                raise ValueError(f"exits[{i}] = {'/'.join(part)!r} is not a module of this "
                                 f"{model_name} (none of that name is called on these images); "
                                 f"{_fix(framework)}. Its modules are {_listing(names)}")


@dataclasses.dataclass(frozen=True)
class LinenExitAdapter(_NamedHeads):
    """A Flax Linen model with named exit heads (module paths, ``"head_0"``, ``"Dense_3"``);
    its state is ``(variables, rngs)``, as :class:`jaxcam.adapters.LinenAdapter`'s, whose call
    and ``new_state`` it keeps (``base``, tapping nothing). The heads' ``__call__`` are
    intercepted with ``flax.linen.intercept_methods``; they are checked against the modules the
    model calls once per image shape (:meth:`check_call`), as a Linen model's layers can only be
    listed by running it.

    Attributes:
      base: the model's :class:`jaxcam.adapters.LinenAdapter` (no layers).
      heads: each exit's ``(first, last)`` module paths (equal for a one-module head).
    """

    base: LinenAdapter
    heads: tuple[tuple[LayerPath, LayerPath], ...]
    _checked: set = dataclasses.field(default_factory=set, compare=False, hash=False,
                                      repr=False)
    kind = "linen"
    default_layout = "NHWC"

    def exit_forward(self, state: Any, images: jax.Array, exits: Sequence[int],
                     deltas: Sequence[jax.Array] | None = None
                     ) -> tuple[list[jax.Array], list[jax.Array]]:
        """One forward pass with the heads intercepted (see :class:`ExitAdapter`)."""
        recorder = HeadRecorder([self.exit_label(k) for k in exits], deltas)
        run_linen(self.base.call, state, images,
                  linen_head_interceptor([self.heads[k] for k in exits], recorder))
        return recorder.collected()

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Check the heads are modules the model calls, once per image shape and dtype."""
        signature = (tuple(images.shape), images.dtype)
        if signature not in self._checked:
            available = linen_layer_paths(self.base.call, state, images)
            _check_called(self.heads, available, "Flax Linen",
                          type(self.base.call.module).__name__)
            self._checked.add(signature)

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: ``variables=`` (the rngs stay), or a :class:`jaxcam.LinenModel` of the
        same module applied the same way."""
        state = self.base.new_state(model, variables)
        self._checked.clear()
        return state


@dataclasses.dataclass(frozen=True)
class HaikuExitAdapter(_NamedHeads):
    """A Haiku model with named exit heads (module names, ``"head_0"``,
    ``"net/~/head_0"``); its state is ``(params, state, rng)``, as
    :class:`jaxcam.adapters.HaikuAdapter`'s, whose call and ``new_state`` it keeps (``base``,
    tapping nothing). The heads' ``__call__`` are intercepted with ``hk.intercept_methods`` and
    checked once per image shape (:meth:`check_call`).

    Attributes:
      base: the model's :class:`jaxcam.adapters.HaikuAdapter` (no layers).
      heads: each exit's ``(first, last)`` module names, as paths.
    """

    base: HaikuAdapter
    heads: tuple[tuple[LayerPath, LayerPath], ...]
    _checked: set = dataclasses.field(default_factory=set, compare=False, hash=False,
                                      repr=False)
    kind = "haiku"
    default_layout = "NHWC"

    def exit_forward(self, state: Any, images: jax.Array, exits: Sequence[int],
                     deltas: Sequence[jax.Array] | None = None
                     ) -> tuple[list[jax.Array], list[jax.Array]]:
        """One forward pass with the heads intercepted (see :class:`ExitAdapter`)."""
        recorder = HeadRecorder([self.exit_label(k) for k in exits], deltas)
        run_haiku(self.base.transformed, self.base.call_kwargs, state, images,
                  haiku_head_interceptor([self.heads[k] for k in exits], recorder))
        return recorder.collected()

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Check the heads are modules the model calls, once per image shape and dtype."""
        signature = (tuple(images.shape), images.dtype)
        if signature not in self._checked:
            available = haiku_layer_paths(self.base.transformed, self.base.call_kwargs, state,
                                          images)
            _check_called(self.heads, available, "Haiku", "Haiku model")
            self._checked.add(signature)

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: a :class:`jaxcam.HaikuModel` of the same transformed functions."""
        state = self.base.new_state(model, variables)
        self._checked.clear()
        return state


@dataclasses.dataclass(frozen=True)
class EquinoxExitAdapter(_NamedHeads):
    """An Equinox model with named exit heads (attribute paths, ``"heads/0"``); its state is
    the model's arrays (and its ``eqx.nn.State``'s), as :class:`jaxcam.adapters.EquinoxAdapter`'s.
    Inside the trace the model is rebuilt in inference mode and each head swapped for a wrapper
    (``eqx.tree_at``). A per-example model (``batched=False``) is vmapped here, the heads'
    inputs and outputs leaving the vmapped function as batches.

    Attributes:
      structure: the model (and BatchNorm state) without its arrays.
      heads: each exit's ``(first, last)`` attribute paths (equal for a one-module head).
      stateful: whether the model is called as ``model(x, state)``.
      default_layout: the model's channel order (``"NCHW"`` unless the :class:`EquinoxModel`
        says otherwise): the images are passed to it as they are.
      batched: whether the model takes the whole batch (else one image, vmapped).
      call_kwargs: the call's keyword arguments, sorted.
    """

    structure: EquinoxStructure
    heads: tuple[tuple[LayerPath, LayerPath], ...]
    stateful: bool = False
    default_layout: str = "NCHW"
    batched: bool = False
    call_kwargs: tuple[tuple[str, Any], ...] = ()
    kind = "equinox"

    def exit_forward(self, state: Any, images: jax.Array, exits: Sequence[int],
                     deltas: Sequence[jax.Array] | None = None
                     ) -> tuple[list[jax.Array], list[jax.Array]]:
        """One forward pass with the heads wrapped (see :class:`ExitAdapter`)."""
        import equinox as eqx

        model, bn_state = self.structure.merge(state)
        model = eqx.nn.inference_mode(model)
        heads = [self.heads[k] for k in exits]
        labels = [self.exit_label(k) for k in exits]
        kwargs = dict(self.call_kwargs)

        def run_one(x: jax.Array, deltas: Any) -> tuple[list[jax.Array], list[jax.Array]]:
            recorder = HeadRecorder(labels, deltas)
            tapped = equinox_with_heads(model, heads, recorder)
            if self.stateful:
                tapped(x, bn_state, **kwargs)
            else:
                tapped(x, **kwargs)
            return recorder.collected()

        deltas = None if deltas is None else list(deltas)
        features, logits = (run_one(images, deltas) if self.batched
                            else jax.vmap(run_one)(images, deltas))
        return list(features), list(logits)

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: ``model`` (an ``eqx.Module`` or :class:`jaxcam.EquinoxModel` of the same
        structure), with ``variables`` its new ``eqx.nn.State`` if it has one."""
        return equinox_new_state(self.structure, self.stateful, model, variables)


def _listing(names: Sequence[str]) -> str:
    shown = "\n  ".join(names[:200]) + ("\n  ..." if len(names) > 200 else "")
    return f"({len(names)}):\n  {shown}"


_EXAMPLES = {"PyTorch": "'classifiers.0', 'classifiers.1'", "Keras": "'head0', 'head1'",
             "Flax Linen": "'head_0', 'head_1'", "Haiku": "'head_0', 'head_1'",
             "Equinox": "'heads/0', 'heads/1'"}


def _a(framework: str) -> str:
    """``"a PyTorch"``, ``"an Equinox"``."""
    return f"{'an' if framework[0] in 'AEIOU' else 'a'} {framework}"


def _what(framework: str) -> str:
    return "layer" if framework == "Keras" else "module"


def _fix(framework: str) -> str:
    """How to name the heads, for messages."""
    what = _what(framework)
    named = (f"the {what}s' names or the {what} objects" if framework in (
        "PyTorch", "Keras", "Equinox") else f"the {what}s' '/'-separated names")
    return (f"name each exit's classifier head, in exit order: exits=[{_EXAMPLES[framework]}, "
            f"...] ({named}; a (first, last) pair for a head of several {what}s)")


def _named_heads(model: Any, exits: Any, framework: str, names: list[str] | None,
                 resolve_object: Any, sep: str) -> list[tuple[str, str]]:
    """Each exit's ``(first, last)`` head names, checked.

    Args:
      model: the model.
      exits: the user's ``exits``.
      framework: ``"PyTorch"``, ``"Keras"``, ``"Flax Linen"``, ``"Haiku"`` or ``"Equinox"``,
        for messages.
      names: the model's module / layer names (None: known only once the model runs on images
        -- Flax Linen, Haiku --, checked then by :func:`_check_called`).
      resolve_object: a module / layer object -> its name, or None if it is not one of the
        framework's objects (raises ValueError for an object not in ``model``).
      sep: the framework's path separator (``"."`` for PyTorch, ``"/"`` for the others).

    Raises:
      TypeError: ``exits`` not a list of names, objects or pairs.
      ValueError: no exits, an unknown name, or a head named twice.
    """
    what = _what(framework)
    fix = _fix(framework)
    if exits is None:
        listing = ("" if names is None else
                   f" This {type(model).__name__}'s {what}s are {_listing(names)}")
        raise ValueError(f"explain_exits on {_a(framework)} model needs its exits: {fix}."
                         f"{listing}")
    if isinstance(exits, (str, bytes)) or not isinstance(exits, (list, tuple)):
        raise TypeError(f"exits must be a list with one entry per exit; got "
                        f"{type(exits).__name__}. {fix}")
    if not exits:
        raise ValueError(f"exits is empty; {fix}")

    def one(i: int, item: Any) -> str:
        if isinstance(item, str):
            name = sep.join(p for p in item.replace("/", sep).split(sep) if p)
            if names is not None and name not in names:
                raise ValueError(f"exits[{i}] = {item!r} is not a {what} of this "
                                 f"{type(model).__name__}; {fix}. Its {what}s are "
                                 f"{_listing(names)}")
            return name
        name = resolve_object(item)
        if name is None:
            kind = "an index" if isinstance(item, int) else f"a {type(item).__name__}"
            listing = "" if names is None else f". Its {what}s are {_listing(names)}"
            raise TypeError(f"exits[{i}] is {kind}: on {_a(framework)} model the exits are "
                            f"named, not numbered; {fix}{listing}")
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


def _no_object(framework: str) -> Any:
    """``resolve_object`` for a framework whose modules exist only inside ``apply``."""
    def resolve(item: Any) -> str | None:
        if isinstance(item, (int, str, bytes, tuple)) or item is None:
            return None
        raise TypeError(f"a {type(item).__name__} object cannot name a head of a {framework} "
                        f"model (its modules are bound only inside apply); {_fix(framework)}")
    return resolve


def _paths(heads: Sequence[tuple[str, str]]) -> tuple[tuple[LayerPath, LayerPath], ...]:
    return tuple((tuple(first.split("/")), tuple(last.split("/"))) for first, last in heads)


def _linen_exit_adapter(model: Any, exits: Any) -> tuple[LinenExitAdapter, Any]:
    if not isinstance(model, LinenModel):
        raise TypeError(f"explain_exits on a Flax Linen module needs its variables: pass "
                        f"jaxcam.LinenModel({type(model).__name__}(...), variables, "
                        f"train=False, ...) as the model, with exits=[...] naming each exit's "
                        f"classifier head")
    heads = _named_heads(model.module, exits, "Flax Linen", None, _no_object("Flax Linen"), "/")
    base, state = LinenAdapter.prepare(model, ())
    return LinenExitAdapter(base, _paths(heads)), state


def _haiku_exit_adapter(model: Any, exits: Any) -> tuple[HaikuExitAdapter, Any]:
    heads = _named_heads(model, exits, "Haiku", None, _no_object("Haiku"), "/")
    base, state = HaikuAdapter.prepare(model, ())
    return HaikuExitAdapter(base, _paths(heads)), state


def _equinox_exit_adapter(model: Any, exits: Any) -> tuple[EquinoxExitAdapter, Any]:
    import equinox as eqx

    spec = model if isinstance(model, EquinoxModel) else EquinoxModel(model)
    paths = equinox_layer_paths(spec.model)
    names = ["/".join(p) for p in paths]

    def resolve(item: Any) -> str | None:
        if not isinstance(item, eqx.Module):
            return None
        for name in names:
            node = spec.model
            for part in name.split("/"):
                node = node[int(part)] if isinstance(node, (list, tuple)) else (
                    node[part] if isinstance(node, dict) else getattr(node, part))
            if node is item:
                return name
        raise ValueError(f"the {type(item).__name__} given in exits is not a submodule of this "
                         f"{type(spec.model).__name__}; pass its heads (e.g. model.heads[0]) or "
                         f"their '/'-separated attribute paths")

    heads = _named_heads(spec.model, exits, "Equinox", names, resolve, "/")
    structure, arrays = EquinoxStructure.split(spec.model, spec.state)
    return EquinoxExitAdapter(structure, _paths(heads), spec.state is not None, spec.layout,
                              spec.batched, tuple(sorted(spec.call_kwargs.items()))), arrays


def is_exit_protocol(model: Any) -> bool:
    """Whether ``model`` has ``exit_features`` and ``classify`` (a numbered multi-exit model)."""
    return all(callable(getattr(model, attr, None)) for attr in ("exit_features", "classify"))


def named_exit_adapter(model: Any, exits: Any) -> tuple[Any, Any] | None:
    """The adapter and state of a model whose exits are named by heads, or None for another
    kind (a :class:`jaxcam.adapters.exits.MultiExitModel`).

    Raises:
      TypeError: a bare Haiku transformed pair (the message names :class:`jaxcam.HaikuModel`),
        or exits of the wrong type.
      ValueError: a head that is not part of the model, a head named twice, or no exits.
    """
    if is_keras_model(model):  # first: on Keras's torch backend a model is a torch Module too
        return _keras_exit_adapter(model, exits)
    if is_torch_module(model):
        return _torch_exit_adapter(model, exits)
    if isinstance(model, (LinenModel, nn.Module)):
        return _linen_exit_adapter(model, exits)
    if isinstance(model, HaikuModel):
        return _haiku_exit_adapter(model, exits)
    if is_haiku_transformed(model):
        raise haiku_transformed_error()
    if isinstance(model, EquinoxModel) or is_equinox(model) and not is_exit_protocol(model):
        return _equinox_exit_adapter(model, exits)
    return None

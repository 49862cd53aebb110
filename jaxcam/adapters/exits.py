"""Multi-exit models: one adapter protocol (:class:`ExitAdapter`) for every kind of model.

``explain_exits`` explains each exit k at its own classifier head: the exit's features ``f_k``
are the head's input, its logits the head's output, and exit k's map is built from
``d score_k / d f_k`` through head k alone. Every adapter therefore runs the model once with
head k fed ``f_k + delta_k`` (the deltas zeros, the variables of differentiation) while the rest
of the network sees ``f_k`` itself: ``d (sum_k score_k) / d delta_k`` is then exactly exit k's
gradient, even where ``f_k`` also feeds the later blocks (their exits do not leak into it), and
all exits come out of one backward pass.

The kinds of model:

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
* likewise a Flax Linen model (a :class:`jaxcam.LinenModel`, :class:`LinenExitAdapter`: heads
  by module path, ``"head_0"``, ``"head_0/Dense_0"``, their ``__call__`` intercepted with
  ``flax.linen.intercept_methods``), a Haiku model (a :class:`jaxcam.HaikuModel`,
  :class:`HaikuExitAdapter`: heads by module name, ``"head_0"``, ``"net/~/head_0"``,
  ``hk.intercept_methods``) and an Equinox model (an ``eqx.Module`` or
  :class:`jaxcam.EquinoxModel`, :class:`EquinoxExitAdapter`: heads by attribute path,
  ``"heads/0"``, or the module objects, swapped for a wrapper with ``eqx.tree_at`` inside the
  trace; a per-example model is vmapped). Linen and Haiku modules exist only inside ``apply``,
  so their heads are named by strings, and checked against the modules the model calls once per
  image shape, on the first call. An Equinox module that is a :class:`MultiExitModel` keeps
  its numbered exits.

torch, keras, haiku and equinox are imported only when a model of theirs is given.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import jax
from flax import nnx

from jaxcam.adapters._exit_heads import (
    EquinoxExitAdapter,
    HaikuExitAdapter,
    HeadRecorder,
    KerasExitAdapter,
    LinenExitAdapter,
    TorchExitAdapter,
    named_exit_adapter,
)
from jaxcam.adapters.nnx import NnxAdapter, is_nnx, is_presplit, split_model

__all__ = ["EquinoxExitAdapter", "ExitAdapter", "HaikuExitAdapter", "HeadRecorder",
           "KerasExitAdapter", "LinenExitAdapter", "MultiExitModel", "NnxExitAdapter",
           "ObjectExitAdapter", "TorchExitAdapter", "make_exit_adapter"]


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
        ``torch.nn.Module``, a ``keras.Model``, a :class:`jaxcam.LinenModel`, a
        :class:`jaxcam.HaikuModel`, or an ``eqx.Module`` / :class:`jaxcam.EquinoxModel`.
      exits: for a :class:`MultiExitModel`, the exits' indices (None: all); for a PyTorch,
        Keras, Flax Linen, Haiku or Equinox model, each exit's classifier head, in exit order
        (see the module docstring).

    Returns:
      ``(adapter, state, num_exits, requested)``: ``num_exits`` is the model's ``num_exits``
      attribute or the number of heads named (None when unknown until the first call);
      ``requested`` the requested exits' indices (None: all).

    Raises:
      TypeError: a model of no multi-exit kind (a bare Linen module or Haiku transformed pair:
        the message names the wrapper to pass), or exits of the wrong type (indices for a model
        whose exits are named, or names for one whose exits are numbered).
      ValueError: a head that is not part of the model (the message lists those that are), a
        head named twice, or no exits.
    """
    named = named_exit_adapter(model, exits)
    if named is not None:
        adapter, state = named
        return adapter, state, len(adapter.heads), None
    # An nnx.split pair is merged once here, for the checks.
    probe = nnx.merge(*model) if is_presplit(model) else model
    missing = [attr for attr in ("exit_features", "classify")
               if not callable(getattr(probe, attr, None))]
    if missing or not isinstance(probe, MultiExitModel):
        raise TypeError(f"explain_exits needs a multi-exit model: one with exit_features(x) and "
                        f"classify(k, features) (a MultiExitModel), or a torch.nn.Module or "
                        f"keras.Model with exits=[...] naming each exit's classifier head "
                        f"(likewise a jaxcam.LinenModel, jaxcam.HaikuModel or equinox "
                        f"Module); "
                        f"{type(probe).__name__} has no {missing[0] if missing else 'exits'}")
    requested = None if exits is None else _indices(probe, exits)
    n_exits = getattr(probe, "num_exits", None)
    n_exits = None if n_exits is None else int(n_exits)
    if is_nnx(model):
        frozen, leaves = split_model(model)
        return NnxExitAdapter(frozen, ()), leaves, n_exits, requested
    return ObjectExitAdapter(model), None, n_exits, requested

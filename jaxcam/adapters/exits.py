"""Multi-exit models: the :class:`MultiExitModel` protocol and its adapters.

``ExitExplainer`` differentiates each exit's classifier with respect to its own input, so it
needs the model's exits, not a tapped layer: ``exit_features(x)`` and ``classify(k, f_k)``.
An NNX model is split once (its weights become the state, merged in eval mode inside the trace);
any other object with those two methods is used as it is and holds no state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import jax
from flax import nnx

from jaxcam.adapters.nnx import NnxAdapter, is_nnx, is_presplit, split_model

__all__ = ["MultiExitModel", "ObjectExitAdapter", "make_exit_adapter"]


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


@dataclasses.dataclass(frozen=True)
class ObjectExitAdapter:
    """A multi-exit model that is not an NNX module: used as it is, holding no state.

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
        raise TypeError("this explainer's model is not a Flax NNX model: it holds no weights "
                        "of its own to update; build a new ExitExplainer instead")


def make_exit_adapter(model: Any) -> tuple[NnxAdapter | ObjectExitAdapter, Any, int | None]:
    """The adapter of a multi-exit model and its state.

    Args:
      model: a :class:`MultiExitModel`, or an NNX one's ``nnx.split`` pair.

    Returns:
      ``(adapter, state, num_exits)``: ``adapter.model(state)`` is the model (an NNX model: a
      copy in eval mode), ``adapter.new_state(model)`` takes new weights; ``num_exits`` is the
      model's ``num_exits`` attribute, or None when it has none.

    Raises:
      TypeError: the model lacks ``exit_features`` or ``classify``.
    """
    # An nnx.split pair is merged once here, for the checks.
    probe = nnx.merge(*model) if is_presplit(model) else model
    missing = [attr for attr in ("exit_features", "classify")
               if not callable(getattr(probe, attr, None))]
    if missing or not isinstance(probe, MultiExitModel):
        raise TypeError(f"explain_exits needs a MultiExitModel, with exit_features(x) and "
                        f"classify(k, features); {type(probe).__name__} has no {missing[0]}")
    n_exits = getattr(probe, "num_exits", None)
    n_exits = None if n_exits is None else int(n_exits)
    if is_nnx(model):
        frozen, leaves = split_model(model)
        return NnxAdapter(frozen, ()), leaves, n_exits
    return ObjectExitAdapter(model), None, n_exits

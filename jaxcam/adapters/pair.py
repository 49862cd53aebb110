"""A pair ``(features_fn, head_fn)`` of plain functions: the tap is their composition."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxcam.adapters._tap import Edit, LayerPath

__all__ = ["PairAdapter", "is_function_pair"]


def is_function_pair(model: Any) -> bool:
    """Whether ``model`` is a plain tuple of two callables, never a named tuple (Haiku's
    ``Transformed(init, apply)`` is a pair of functions, not ``(features_fn, head_fn)``)."""
    return type(model) is tuple and len(model) == 2 and all(callable(f) for f in model)


@dataclasses.dataclass(frozen=True)
class PairAdapter:
    """``head_fn(features_fn(images))`` tapped between the two; it holds no state.

    Attributes:
      features_fn: images -> the ``(B, h, w, C)`` feature map.
      head_fn: feature map -> model output.
    """

    features_fn: Callable[[jax.Array], jax.Array]
    head_fn: Callable[[jax.Array], Any]
    layers: tuple[LayerPath, ...] = (("features",),)
    kind = "pair"

    @classmethod
    def prepare(cls, pair: Any, layers: Sequence[LayerPath]) -> tuple[PairAdapter, None]:
        """The adapter of a function pair.

        Args:
          pair: ``(features_fn, head_fn)``.
          layers: at most one path (a pair has one tap point; its name is not used).

        Returns:
          The adapter and its state (None).

        Raises:
          ValueError: several layers.
        """
        if len(layers) > 1:
            raise ValueError("a (features_fn, head_fn) model has one tap point, the output of "
                             "features_fn; pass target_layer=None")
        return cls(*pair), None

    def forward(self, state: Any, images: jax.Array, edits: Sequence[Edit] | None = None
                ) -> tuple[Any, list[jax.Array]]:
        """The model's output and the features.

        Args:
          state: unused (None).
          images: the model input.
          edits: ``edits[0]`` replaces the features on their way to ``head_fn``.

        Returns:
          The model output and ``[features]`` (before the edit).
        """
        acts = self.features_fn(images)
        edit = edits[0] if edits else (lambda a: a)
        return self.head_fn(edit(acts)), [acts]

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Nothing to check per call."""

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """Always refuses: the functions close over their own weights."""
        raise TypeError("a (features_fn, head_fn) explainer holds no weights (the functions "
                        "close over theirs); build a new Explainer instead")

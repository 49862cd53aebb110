"""Flax Linen models: ``flax.linen.intercept_methods`` taps the chosen modules' ``__call__``.

A Linen model's layers can only be listed by running it on images, so they are checked once per
image shape, on the first call of that shape (:meth:`LinenAdapter.check_call`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcam.adapters._tap import Edit, LayerPath, Recorder, unknown_layer_error

__all__ = ["LinenAdapter", "check_linen_layers", "linen_layer_paths"]


def linen_layer_paths(module: Any, variables: Any, images: jax.Array) -> list[LayerPath]:
    """Every submodule path a Linen module calls on ``images`` (found by abstract evaluation).

    Cached by the module and the shapes and dtypes of the variables and images, so explaining a
    new batch of the same shape does not trace the model again.

    Args:
      module: the ``flax.linen.Module``.
      variables: its variables.
      images: the input (only its shape and dtype matter).

    Returns:
      The paths, in call order.
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
    paths: list[LayerPath] = []

    def interceptor(next_fun, args, kwargs, context):
        path = tuple(context.module.path)
        if context.method_name == "__call__" and path and path not in paths:
            paths.append(path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v, x: module.apply(v, x), variables, images)
    return paths


def check_linen_layers(module: Any, layers: Sequence[LayerPath], variables: Any,
                       images: jax.Array) -> None:
    """Raise unless every path names a submodule that ``module`` calls on ``images``."""
    available = linen_layer_paths(module, variables, images)
    for layer in layers:
        if layer not in available:
            raise unknown_layer_error(layer, available)


@dataclasses.dataclass(frozen=True)
class LinenAdapter:
    """A Linen module tapped at some layers; its state is the variables.

    Attributes:
      module: the ``flax.linen.Module``.
      layers: the tapped layers' paths.
    """

    module: Any
    layers: tuple[LayerPath, ...]
    # Image shapes and dtypes the layers were checked for; not part of the identity.
    _checked: set = dataclasses.field(default_factory=set, compare=False, hash=False,
                                      repr=False)
    kind = "linen"

    @classmethod
    def prepare(cls, module: Any, layers: Sequence[LayerPath], variables: Any
                ) -> tuple[LinenAdapter, Any]:
        """The adapter and its state.

        Args:
          module: the ``flax.linen.Module``.
          layers: the paths to tap (checked per image shape, by :meth:`check_call`).
          variables: its variables.

        Returns:
          The adapter and its state (the variables).

        Raises:
          ValueError: no variables.
        """
        if variables is None:
            raise ValueError("a Flax Linen model needs its variables: pass "
                             "variables={'params': ..., 'batch_stats': ...} (what model.init "
                             "returned, or your trained state)")
        return cls(module, tuple(layers)), variables

    def forward(self, state: Any, images: jax.Array, edits: Sequence[Edit] | None = None
                ) -> tuple[Any, list[jax.Array]]:
        """The model's output and the tapped layers' outputs.

        Args:
          state: the variables.
          images: the model input.
          edits: ``edits[i]`` replaces layer i's output on its way up (default: none).

        Returns:
          The model output and the tapped layers' outputs (before ``edits``).
        """
        recorder = Recorder(self.layers, edits or [lambda a: a] * len(self.layers))

        def interceptor(next_fun, args, kwargs, context):
            output = next_fun(*args, **kwargs)
            path = tuple(context.module.path)
            if context.method_name == "__call__" and path in recorder.index:
                return recorder.record(path, output)
            return output

        with nn.intercept_methods(interceptor):
            output = self.module.apply(state, images)
        return output, recorder.collected()

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Check the layers exist, once per image shape and dtype."""
        signature = (tuple(images.shape), images.dtype)
        if signature not in self._checked:
            check_linen_layers(self.module, self.layers, state, images)
            self._checked.add(signature)

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: ``variables``."""
        if variables is None or model is not None:
            raise TypeError("a Linen explainer's update takes variables=... only")
        self._checked.clear()
        return variables

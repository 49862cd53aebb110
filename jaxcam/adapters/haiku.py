"""Haiku models: a transformed pair with its parameters, tapped by method interception.

Haiku names every module (``"res_net18/~/block_group_2"``) and lets a caller intercept every
module method call (``hk.intercept_methods``): the tapped modules' ``__call__`` outputs are
recorded, and edited on their way up, without touching the model's function. A Haiku model's
layers can only be listed by running it on images, so they are checked once per image shape, on
the first call of that shape (:meth:`HaikuAdapter.check_call`), as for Flax Linen.

The parameters, the state (BatchNorm's statistics) and the PRNG key are the adapter's state,
passed to the jitted function as arguments: new weights for the same transformed functions do
not recompile. A new ``hk.transform`` of the same function makes new functions, which do.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam.adapters._tap import Edit, LayerPath, Recorder, call_head, unknown_layer_error

__all__ = ["HaikuAdapter", "HaikuModel", "haiku_layer_paths", "haiku_transformed_error", "is_haiku",
           "is_haiku_transformed"]


class HaikuModel:
    """A Haiku model: its ``hk.transform`` / ``hk.transform_with_state`` pair and its weights.

    Example::

        def forward(x, is_training):
            return hk.nets.ResNet18(1000)(x, is_training=is_training)

        model = hk.transform_with_state(forward)
        params, state = model.init(key, images, is_training=True)
        maps = jaxcam.explain(jaxcam.HaikuModel(model, params, state, is_training=False),
                              images, target_layer="res_net18/~/block_group_2")

    Args:
      transformed: what ``hk.transform`` or ``hk.transform_with_state`` returned (or its
        ``hk.without_apply_rng`` form, whose ``apply`` takes no rng).
      params: the parameters.
      state: the state, for ``hk.transform_with_state`` (BatchNorm's statistics).
      rng: the PRNG key passed to ``apply`` (None for a model that draws no random numbers).
      **call_kwargs: further keyword arguments of ``apply`` (e.g. ``is_training=False``).

    Raises:
      TypeError: ``transformed`` is not a Haiku transformed pair, or ``state`` is missing for
        (or given to) a model without state.
    """

    def __init__(self, transformed: Any, params: Any, state: Any = None, *, rng: Any = None,
                 **call_kwargs: Any):
        if not is_haiku_transformed(transformed):
            raise TypeError(f"HaikuModel takes what hk.transform or hk.transform_with_state "
                            f"returned, got {type(transformed).__name__}")
        with_state = _with_state(transformed)
        if with_state and state is None:
            raise TypeError("a model from hk.transform_with_state needs its state: "
                            "HaikuModel(transformed, params, state, ...)")
        if not with_state and state is not None:
            raise TypeError("a model from hk.transform has no state; pass state=None")
        if rng is not None and not _takes_rng(transformed):
            raise TypeError("this model's apply takes no rng (hk.without_apply_rng); pass "
                            "rng=None")
        self.transformed = transformed
        self.params = params
        self.state = state
        self.rng = rng
        self.call_kwargs = dict(call_kwargs)

    def __repr__(self) -> str:
        return (f"HaikuModel({type(self.transformed).__name__}, state={self.state is not None}, "
                f"rng={self.rng is not None}, **{self.call_kwargs})")


def is_haiku_transformed(model: Any) -> bool:
    """Whether ``model`` is a Haiku ``Transformed``/``TransformedWithState`` (without importing
    Haiku: such an object exists only if it was imported)."""
    hk = sys.modules.get("haiku")
    return hk is not None and isinstance(model, (hk.Transformed, hk.TransformedWithState))


def haiku_transformed_error() -> TypeError:
    """The error for a bare ``hk.transform`` pair given as the model."""
    return TypeError(
        "this is Haiku's (init, apply) pair, not a (features_fn, head_fn) pair, and it holds no "
        "weights: pass jaxcam.HaikuModel(transformed, params, state, is_training=False, ...) "
        "(the state only for hk.transform_with_state; apply's keyword arguments last)")


def is_haiku(model: Any) -> bool:
    """Whether ``model`` is a :class:`HaikuModel`."""
    return isinstance(model, HaikuModel)


def _with_state(transformed: Any) -> bool:
    import haiku as hk

    return isinstance(transformed, hk.TransformedWithState)


def _path(module_name: str) -> LayerPath:
    return tuple(p for p in module_name.split("/") if p)


def _takes_rng(transformed: Any) -> bool:
    """Whether ``apply`` takes an rng (not after ``hk.without_apply_rng``)."""
    try:
        return "rng" in inspect.signature(transformed.apply).parameters
    except (TypeError, ValueError):  # no signature to read: Haiku's default, with an rng
        return True


def _apply(transformed: Any, call_kwargs: tuple[tuple[str, Any], ...], state: Any,
           images: Any) -> Any:
    """The model output: ``apply(params, [state,] [rng,] images, **call_kwargs)``."""
    params, hk_state, rng = state
    args = ((params, hk_state) if _with_state(transformed) else (params,)) + (
        (rng,) if _takes_rng(transformed) else ())
    output = transformed.apply(*args, images, **dict(call_kwargs))
    return output[0] if _with_state(transformed) else output


def haiku_layer_paths(transformed: Any, call_kwargs: tuple[tuple[str, Any], ...], state: Any,
                      images: jax.Array) -> list[LayerPath]:
    """Every module a Haiku model calls on ``images`` (found by abstract evaluation), cached by
    the functions, the call's arguments and the shapes and dtypes of weights and images.

    Args:
      transformed: the Haiku transformed pair.
      call_kwargs: ``apply``'s keyword arguments, sorted.
      state: ``(params, state, rng)``.
      images: the input (only its shape and dtype matter).

    Returns:
      The modules' names as paths, in call order.
    """
    abstract = jax.tree.map(_abstract, state)
    leaves, treedef = jax.tree.flatten(abstract)
    image = _abstract(images)
    try:
        hash((transformed, call_kwargs))
    except TypeError:  # unhashable call arguments: trace every time
        return _haiku_layer_paths(transformed, call_kwargs, abstract, image)
    return list(_cached_paths(transformed, call_kwargs, treedef, tuple(leaves), image))


def _abstract(x: Any) -> jax.ShapeDtypeStruct:
    dtype = x.dtype if hasattr(x, "dtype") else jnp.result_type(x)
    return jax.ShapeDtypeStruct(np.shape(x), dtype)


@functools.lru_cache(maxsize=32)
def _cached_paths(transformed: Any, call_kwargs: tuple, treedef: Any, leaves: tuple,
                  image: jax.ShapeDtypeStruct) -> tuple[LayerPath, ...]:
    state = jax.tree.unflatten(treedef, list(leaves))
    return tuple(_haiku_layer_paths(transformed, call_kwargs, state, image))


def _haiku_layer_paths(transformed: Any, call_kwargs: tuple, state: Any, images: Any
                       ) -> list[LayerPath]:
    import haiku as hk

    paths: list[LayerPath] = []

    def interceptor(next_fun, args, kwargs, context):
        # __init__ is intercepted too, before the module has its name.
        if context.method_name == "__call__":
            path = _path(context.module.module_name)
            if path not in paths:
                paths.append(path)
        return next_fun(*args, **kwargs)

    with hk.intercept_methods(interceptor):
        jax.eval_shape(lambda s, x: _apply(transformed, call_kwargs, s, x), state, images)
    return paths


@dataclasses.dataclass(frozen=True)
class HaikuAdapter:
    """A Haiku model tapped at some modules; its state is ``(params, state, rng)``.

    Attributes:
      transformed: the Haiku transformed pair.
      layers: the tapped modules' names, as paths.
      call_kwargs: ``apply``'s keyword arguments, sorted.
    """

    transformed: Any
    layers: tuple[LayerPath, ...]
    call_kwargs: tuple[tuple[str, Any], ...] = ()
    # Image shapes and dtypes the layers were checked for; not part of the identity.
    _checked: set = dataclasses.field(default_factory=set, compare=False, hash=False,
                                      repr=False)
    kind = "haiku"

    @classmethod
    def prepare(cls, model: HaikuModel, layers: Sequence[LayerPath]
                ) -> tuple[HaikuAdapter, Any]:
        """The adapter and its state.

        Args:
          model: the :class:`HaikuModel`.
          layers: the modules to tap, by name (checked per image shape, by :meth:`check_call`).

        Returns:
          The adapter and its state ``(params, state, rng)``.
        """
        return (cls(model.transformed, tuple(layers), tuple(sorted(model.call_kwargs.items()))),
                (model.params, model.state, model.rng))

    def forward(self, state: Any, images: jax.Array, edits: Sequence[Edit] | None = None
                ) -> tuple[Any, list[jax.Array]]:
        """The model's output and the tapped modules' outputs.

        Args:
          state: ``(params, state, rng)``.
          images: the model input.
          edits: ``edits[i]`` replaces module i's output on its way up (default: none).

        Returns:
          The model output and the tapped modules' outputs (before ``edits``).
        """
        import haiku as hk

        recorder = Recorder(self.layers, edits or [lambda a: a] * len(self.layers))

        def interceptor(next_fun, args, kwargs, context):
            output = next_fun(*args, **kwargs)
            if context.method_name == "__call__":  # __init__ too is intercepted
                path = _path(context.module.module_name)
                if path in recorder.index:
                    return recorder.record(path, output)
            return output

        with hk.intercept_methods(interceptor):
            output = _apply(self.transformed, self.call_kwargs, state, images)
        return output, recorder.collected()

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Check the modules exist, once per image shape and dtype."""
        signature = (tuple(images.shape), images.dtype)
        if signature not in self._checked:
            available = haiku_layer_paths(self.transformed, self.call_kwargs, state, images)
            for layer in self.layers:
                if layer not in available:
                    raise unknown_layer_error(layer, available)
            self._checked.add(signature)

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: a :class:`HaikuModel` of the same transformed functions."""
        if not isinstance(model, HaikuModel) or variables is not None:
            raise TypeError("a Haiku explainer's update takes a jaxcam.HaikuModel(transformed, "
                            "params, state, ...) of the same transformed functions")
        if model.transformed != self.transformed or dict(self.call_kwargs) != model.call_kwargs:
            raise ValueError("the new HaikuModel has other transformed functions or call "
                             "arguments than the explainer was built for; build a new "
                             "explainer for it")
        self._checked.clear()
        return model.params, model.state, model.rng


def haiku_head_interceptor(heads: Sequence[tuple[LayerPath, LayerPath]], recorder: Any
                           ) -> Any:
    """The ``hk.intercept_methods`` interceptor of multi-exit heads.

    Args:
      heads: each exit's ``(entry, exit)`` module names, as paths: the entry module's input is
        the exit's features, the exit module's output its logits (the same module for a
        one-module head).
      recorder: ``recorder.enter(i, x)`` takes exit i's features and returns what the entry
        module is fed instead; ``recorder.leave(i, y)`` takes its logits
        (:class:`jaxcam.adapters.exits.HeadRecorder`).

    Returns:
      The interceptor: only the head's own ``__call__`` sees the entered value, the rest of the
      network the features as they are.
    """

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":  # __init__ too is intercepted
            return next_fun(*args, **kwargs)
        return call_head(_path(context.module.module_name), next_fun, args, kwargs, heads, recorder)

    return interceptor


def run_haiku(transformed: Any, call_kwargs: tuple[tuple[str, Any], ...], state: Any,
              images: jax.Array, interceptor: Any) -> Any:
    """The model output on ``images`` (state ``(params, state, rng)``) under ``interceptor``."""
    import haiku as hk

    with hk.intercept_methods(interceptor):
        return _apply(transformed, call_kwargs, state, images)

"""Flax Linen models: ``flax.linen.intercept_methods`` taps the chosen modules' ``__call__``.

A Linen model is applied the way its user applies it: :class:`LinenModel` carries the
arguments of ``module.apply`` that a model in the Flax-examples style needs (``train=False``,
``deterministic=True``, ``method=``, ``rngs``, ``mutable``); a bare module with ``variables=``
is ``LinenModel(module, variables)``. The variables and the rngs are the adapter's state, passed
to the jitted function as arguments, so new weights do not recompile.

A Linen model's layers can only be listed by running it on images, so they are checked once per
image shape, on the first call of that shape (:meth:`LinenAdapter.check_call`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcam.adapters._tap import Edit, LayerPath, Recorder, call_head, unknown_layer_error

__all__ = ["LinenAdapter", "LinenModel", "check_linen_layers", "linen_layer_paths"]


class LinenModel:
    """A Flax Linen module, its variables, and the arguments of ``module.apply``.

    Example (a ResNet in the Flax-examples style, ``__call__(self, x, train: bool = True)``
    with ``nn.BatchNorm(use_running_average=not train)``)::

        model = jaxcam.LinenModel(ResNet18(num_classes=1000), variables, train=False)
        maps = jaxcam.explain(model, images, target_layer="ResNetBlock_5")

    The output is ``module.apply(variables, images, method=method, rngs=rngs,
    mutable=mutable, **call_kwargs)``, its first element when ``mutable`` is not False (apply
    then returns ``(output, updated_variables)``).

    Args:
      module: the ``flax.linen.Module``.
      variables: its variables (``{"params": ..., "batch_stats": ...}``).
      method: the method to apply instead of ``__call__`` (a name or the function).
      rngs: PRNG keys by collection (e.g. ``{"dropout": key}``), for a model that draws
        random numbers.
      mutable: ``apply``'s ``mutable`` (False: no collection changes).
      **call_kwargs: further keyword arguments of the call (``train=False``,
        ``deterministic=True``, ...).
    """

    def __init__(self, module: Any, variables: Any, *, method: Any = None, rngs: Any = None,
                 mutable: Any = False, **call_kwargs: Any):
        if not isinstance(module, nn.Module):
            raise TypeError(f"LinenModel takes a flax.linen.Module, got {type(module).__name__}")
        if variables is None:
            raise ValueError("a Flax Linen model needs its variables (what model.init "
                             "returned, or your trained state)")
        self.module = module
        self.variables = variables
        self.method = method
        self.rngs = rngs
        self.mutable = tuple(mutable) if isinstance(mutable, list) else mutable
        self.call_kwargs = dict(call_kwargs)

    def __repr__(self) -> str:
        return (f"LinenModel({type(self.module).__name__}, method={self.method!r}, "
                f"rngs={self.rngs is not None}, mutable={self.mutable!r}, **{self.call_kwargs})")


@dataclasses.dataclass(frozen=True)
class LinenCall:
    """How a Linen module is applied, less the arrays (hashable: part of the compiled key).

    Attributes:
      module: the ``flax.linen.Module``.
      method: ``apply``'s ``method`` (None: ``__call__``).
      mutable: ``apply``'s ``mutable``.
      call_kwargs: the call's keyword arguments, sorted.
    """

    module: Any
    method: Any = None
    mutable: Any = False
    call_kwargs: tuple[tuple[str, Any], ...] = ()
    _hash: int = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = (self.module, self.method, self.mutable, self.call_kwargs)
        try:
            value = hash(parts)
        except TypeError:
            # A module with a list field (the Flax examples' ResNet: stage_sizes=[2, 2, 2, 2])
            # cannot be hashed; its repr lists its fields, so equal modules still hash alike and
            # share one compilation (equality is still checked field by field).
            value = hash((type(self.module), repr(self.module), repr(parts[1:])))
        object.__setattr__(self, "_hash", value)

    def __hash__(self) -> int:
        return self._hash

    def apply(self, state: Any, images: Any) -> Any:
        """The model output, from the state ``(variables, rngs)``."""
        variables, rngs = state
        output = self.module.apply(variables, images, method=self.method, rngs=rngs,
                                   mutable=self.mutable, **dict(self.call_kwargs))
        return output if self.mutable is False else output[0]


def linen_layer_paths(call: LinenCall | Any, state: Any, images: jax.Array
                      ) -> list[LayerPath]:
    """Every submodule path a Linen module calls on ``images`` (found by abstract evaluation).

    Cached by the call and the shapes and dtypes of the state and images, so explaining a new
    batch of the same shape does not trace the model again.

    Args:
      call: the :class:`LinenCall` (or a bare module, applied plainly).
      state: ``(variables, rngs)`` (or, with a bare module, its variables).
      images: the input (only its shape and dtype matter).

    Returns:
      The paths, in call order.

    Raises:
      ValueError: the model runs in training mode (Flax's ``ModifyScopeVariableError``, or
        BatchNorm averaging over an unbound batch axis); the message names the fix.
    """
    if not isinstance(call, LinenCall):
        call, state = LinenCall(call), (state, None)
    abstract = jax.tree.map(_abstract, state)
    leaves, treedef = jax.tree.flatten(abstract)
    image = _abstract(images)
    try:
        return list(_cached_linen_layer_paths(call, treedef, tuple(leaves), image))
    except (flax.errors.ModifyScopeVariableError, NameError) as error:
        # Training mode: BatchNorm updating its statistics, or averaging them over a named
        # batch axis (the Flax examples' axis_name="batch", unbound outside pmap).
        if isinstance(error, NameError) and "axis name" not in str(error):
            raise
        raise ValueError(
            f"the Linen model runs in training mode ({type(error).__name__}: "
            f"{str(error).splitlines()[0]}). A model with a training flag "
            "(BatchNorm(use_running_average=not train), Dropout) is explained in evaluation "
            "mode: pass jaxcam.LinenModel(module, variables, train=False) (or "
            "deterministic=True, whichever its __call__ takes) as the model") from error


def _abstract(x: Any) -> jax.ShapeDtypeStruct:
    dtype = x.dtype if hasattr(x, "dtype") else jnp.result_type(x)
    return jax.ShapeDtypeStruct(np.shape(x), dtype)


@functools.lru_cache(maxsize=32)
def _cached_linen_layer_paths(call: LinenCall, treedef: Any, leaves: tuple,
                              image: jax.ShapeDtypeStruct) -> tuple[LayerPath, ...]:
    return tuple(_linen_layer_paths(call, jax.tree.unflatten(treedef, list(leaves)), image))


def _linen_layer_paths(call: LinenCall, state: Any, images: Any) -> list[LayerPath]:
    paths: list[LayerPath] = []

    def interceptor(next_fun, args, kwargs, context):
        path = tuple(context.module.path)
        if context.method_name == "__call__" and path and path not in paths:
            paths.append(path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(call.apply, state, images)
    return paths


def check_linen_layers(call: LinenCall | Any, layers: Sequence[LayerPath], state: Any,
                       images: jax.Array) -> None:
    """Raise unless every path names a submodule that the model calls on ``images``.

    Args:
      call: the :class:`LinenCall` (or a bare module).
      layers: the paths.
      state: ``(variables, rngs)`` (or a bare module's variables).
      images: the input.

    Raises:
      ValueError: a path that is not called (the message lists those that are).
    """
    available = linen_layer_paths(call, state, images)
    for layer in layers:
        if layer not in available:
            raise unknown_layer_error(layer, available)


@dataclasses.dataclass(frozen=True)
class LinenAdapter:
    """A Linen module tapped at some layers; its state is ``(variables, rngs)``.

    Attributes:
      call: how the module is applied.
      layers: the tapped layers' paths.
    """

    call: LinenCall
    layers: tuple[LayerPath, ...]
    # Image shapes and dtypes the layers were checked for, and the rngs new variables keep:
    # not part of the identity.
    _checked: set = dataclasses.field(default_factory=set, compare=False, hash=False,
                                      repr=False)
    _rngs: list = dataclasses.field(default_factory=list, compare=False, hash=False,
                                    repr=False)
    kind = "linen"

    @classmethod
    def prepare(cls, model: Any, layers: Sequence[LayerPath], variables: Any = None
                ) -> tuple[LinenAdapter, Any]:
        """The adapter and its state.

        Args:
          model: a :class:`LinenModel`, or a ``flax.linen.Module`` with ``variables``.
          layers: the paths to tap (checked per image shape, by :meth:`check_call`).
          variables: a bare module's variables.

        Returns:
          The adapter and its state ``(variables, rngs)``.

        Raises:
          ValueError: no variables, or variables given twice.
        """
        if isinstance(model, LinenModel):
            if variables is not None:
                raise ValueError("the LinenModel holds the variables; do not pass variables= "
                                 "as well")
        elif variables is None:
            raise ValueError("a Flax Linen model needs its variables: pass "
                             "variables={'params': ..., 'batch_stats': ...} (what model.init "
                             "returned, or your trained state), or "
                             "jaxcam.LinenModel(module, variables, train=False, ...)")
        else:
            model = LinenModel(model, variables)
        call = LinenCall(model.module, model.method, model.mutable,
                         tuple(sorted(model.call_kwargs.items())))
        adapter = cls(call, tuple(layers))
        adapter._rngs.append(model.rngs)
        return adapter, (model.variables, model.rngs)

    @property
    def module(self) -> Any:
        """The ``flax.linen.Module``."""
        return self.call.module

    def forward(self, state: Any, images: jax.Array, edits: Sequence[Edit] | None = None
                ) -> tuple[Any, list[jax.Array]]:
        """The model's output and the tapped layers' outputs.

        Args:
          state: ``(variables, rngs)``.
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
            output = self.call.apply(state, images)
        return output, recorder.collected()

    def check_call(self, state: Any, images: jax.Array) -> None:
        """Check the layers exist, once per image shape and dtype."""
        signature = (tuple(images.shape), images.dtype)
        if signature not in self._checked:
            check_linen_layers(self.call, self.layers, state, images)
            self._checked.add(signature)

    def new_state(self, model: Any = None, variables: Any = None) -> Any:
        """New weights: ``variables`` (the rngs stay), or a :class:`LinenModel` applied the
        same way (its variables and rngs)."""
        if isinstance(model, LinenModel) and variables is None:
            same = LinenCall(model.module, model.method, model.mutable,
                             tuple(sorted(model.call_kwargs.items())))
            if same != self.call:
                raise ValueError("the new LinenModel is another module or is applied with "
                                 "other arguments than the explainer was built for; build a "
                                 "new explainer for it")
            variables, rngs = model.variables, model.rngs
        elif variables is None or model is not None:
            raise TypeError("a Linen explainer's update takes variables=... only (or a "
                            "jaxcam.LinenModel of the same module and arguments)")
        else:
            rngs = self._rngs[-1] if self._rngs else None
        self._checked.clear()
        self._rngs.append(rngs)
        del self._rngs[:-1]
        return variables, rngs


def linen_head_interceptor(heads: Sequence[tuple[LayerPath, LayerPath]], recorder: Any
                           ) -> Any:
    """The ``flax.linen.intercept_methods`` interceptor of multi-exit heads.

    Args:
      heads: each exit's ``(entry, exit)`` module paths: the entry module's input is the exit's
        features, the exit module's output its logits (the same module for a one-module head).
      recorder: ``recorder.enter(i, x)`` takes exit i's features and returns what the entry
        module is fed instead; ``recorder.leave(i, y)`` takes its logits
        (:class:`jaxcam.adapters.exits.HeadRecorder`).

    Returns:
      The interceptor: only the head's own ``__call__`` sees the entered value, the rest of the
      network (a next stage fed the same features) the features as they are.
    """
    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        return call_head(tuple(context.module.path), next_fun, args, kwargs, heads, recorder)

    return interceptor


def run_linen(call: LinenCall, state: Any, images: jax.Array, interceptor: Any) -> Any:
    """The model output of ``call`` on ``images`` under ``interceptor``."""
    with nn.intercept_methods(interceptor):
        return call.apply(state, images)

"""What ``explain``/``explain_exits`` do once per model rather than once per call.

Splitting an NNX model into its graph definition and state, and hashing the graph definition
for ``jax.jit``'s cache, take tens of milliseconds for a network the size of MSD-Net (about
100 ms for cifar10_anytime, a tenth of a batch-64 Grad-CAM on CPU). :class:`Frozen` holds the
structure with its hash computed once; the weights are a flat list of arrays, a snapshot taken at
split time, so an explainer object reuses both on every call and refreshes the weights only when
asked (``update``), never behind the user's back.

The per-call input checks live here too: they run on the host whenever the inputs are host
values, so that a call with NumPy images and classes never waits for the device.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxcam.targets import check_target_range

__all__ = ["Frozen", "split_model", "new_weights", "is_presplit", "check_finite_on_host",
           "check_after_dispatch", "NONFINITE_MESSAGE"]

NONFINITE_MESSAGE = ("images contain NaN or infinite values; explanations of them would be NaN. "
                     "Clean the input (e.g. jnp.nan_to_num) first")


@dataclasses.dataclass(frozen=True, eq=False)
class Frozen:
    """An NNX model's structure: graph definition and state tree, hashed once.

    A static argument of ``jax.jit`` is hashed on every call; an NNX ``GraphDef`` recomputes its
    hash each time (15 ms for cifar10_anytime), this holder does not. Two holders of the same
    structure are equal, so explainers of twin models share one compilation.

    Attributes:
      graphdef: the ``nnx.GraphDef`` from ``nnx.split``.
      treedef: the tree structure of the state's leaves (the weights, as a flat list).
    """

    graphdef: Any
    treedef: Any
    _hash: int = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.graphdef, self.treedef)))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Frozen) and self._hash == other._hash
                                 and self.graphdef == other.graphdef
                                 and self.treedef == other.treedef)

    def merge(self, leaves: list[Any]) -> Any:
        """A fresh model in eval mode (BatchNorm's running statistics, as pytorch-grad-cam)."""
        model = nnx.merge(self.graphdef, jax.tree.unflatten(self.treedef, leaves))
        model.eval()
        return model


def is_presplit(model: Any) -> bool:
    """Whether ``model`` is a ``(graphdef, state)`` pair as ``nnx.split`` returns it."""
    return (isinstance(model, tuple) and len(model) == 2
            and isinstance(model[0], nnx.GraphDef) and isinstance(model[1], nnx.State))


def split_model(model: Any) -> tuple[Frozen, list[jax.Array]]:
    """An NNX module (or an ``nnx.split`` pair) as its structure and a snapshot of its weights.

    Args:
      model: an ``nnx.Module`` or a ``(graphdef, state)`` pair.

    Returns:
      The :class:`Frozen` structure and the state's leaves (the arrays themselves: later in-place
      updates of the model's variables do not reach them).
    """
    graphdef, state = model if is_presplit(model) else nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    return Frozen(graphdef, treedef), leaves


def new_weights(frozen: Frozen, source: Any) -> list[jax.Array]:
    """The leaves of ``source`` (a model, an ``nnx.split`` pair or an ``nnx.State``) after
    checking that it has the structure ``frozen`` was made for.

    Raises:
      ValueError: the structure differs (the message says to build a new explainer).
      TypeError: ``source`` is none of the accepted kinds.
    """
    if isinstance(source, nnx.State):
        leaves, treedef = jax.tree.flatten(source)
        same = treedef == frozen.treedef
    elif isinstance(source, nnx.Module) or is_presplit(source):
        other, leaves = split_model(source)
        same = other == frozen
    else:
        raise TypeError(f"update takes an nnx.Module, an nnx.split pair or an nnx.State, got "
                        f"{type(source).__name__}")
    if not same:
        raise ValueError("the new weights do not fit this explainer: the model's structure "
                         "(modules, variable names or shapes' tree) differs from the one it was "
                         "built for; build a new explainer for the new model")
    return leaves


def check_finite_on_host(images: Any, check_finite: bool) -> bool:
    """Check NumPy ``images`` for NaN/inf on the host, before the call.

    Args:
      images: the images as the caller passed them.
      check_finite: whether the caller wants the check at all.

    Returns:
      True when the check is done (or not wanted); False when it must run on the device
      (``images`` is a ``jax.Array`` or a DLPack tensor), inside the jitted call.

    Raises:
      ValueError: NumPy images hold NaN or inf.
    """
    if not check_finite:
        return True
    if isinstance(images, (np.ndarray, np.generic)):
        if not np.isfinite(images).all():
            raise ValueError(NONFINITE_MESSAGE)
        return True
    return False


def read_device_flag(flag: jax.Array) -> bool:
    """The one place a call waits for the device: reading a flag the jitted call computed."""
    return bool(flag)


def check_after_dispatch(classes: Any, num_classes: int, finite: jax.Array,
                         finite_checked: bool) -> None:
    """The checks that need the dispatched call: the class range (against the output's width,
    known without waiting) and, for device images, the finiteness flag.

    Under an outer ``jax.jit``/``jax.vmap`` the classes and the flag are traced and cannot be
    checked on the host; the checks are skipped there.

    Args:
      classes: the (B,) or (K, B) classes (NumPy, ``jax.Array``, tracer) or None.
      num_classes: the width of the model output the classes index.
      finite: the jitted call's ``all(isfinite(images))``.
      finite_checked: what :func:`check_finite_on_host` returned.

    Raises:
      ValueError: a class out of range, or non-finite images.
    """
    if classes is not None and not isinstance(classes, jax.core.Tracer):
        check_target_range(classes, num_classes)
    # Device images: reading the flag waits for this call's result, which is what the caller
    # does next anyway; what it costs is the overlap of the caller's next host work with this
    # call's device work. Raising from inside the computation instead (jax.debug.callback,
    # io_callback) makes XLA:CPU run the whole call synchronously (measured: the call returned
    # only when done) and buries the message in a runtime error; checkify's error must be read
    # on the host all the same. NumPy images were checked on the host and never wait here, and
    # check_finite=False skips the check for callers who keep everything on the device.
    if not finite_checked and not isinstance(finite, jax.core.Tracer):
        if not read_device_flag(finite):
            raise ValueError(NONFINITE_MESSAGE)

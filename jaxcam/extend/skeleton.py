"""The structure of an NNX module without drawing its weights: for state-dict converters.

A converter needs the module's graph and the shapes of its state, then fills the state with the
checkpoint's arrays. ``nnx.eval_shape(lambda: Net(rngs=nnx.Rngs(0)))`` gives both, but traces
the constructor with NNX's random-stream counter as a traced value: every ``rngs.params()``
updates that counter, and each update asks the tracer for its sharding, whose error message
walks the whole trace so far. The cost grows with the square of the number of parameters drawn:
0.5-0.7 s for EfficientNet-Lite0 (149 variables), most of a warm ``jaxcam explain``'s model
loading. The weights are discarded anyway, so :func:`abstract_split` traces the constructor
with one fixed, concrete key for every draw (no counter), which gives the same graph and the
same shapes in a quarter of the time; it falls back to ``nnx.Rngs`` if a module asks its
``rngs`` for more than ``params()`` or ``default()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

__all__ = ["abstract_split", "FixedKeys"]


class FixedKeys:
    """Stands in for ``nnx.Rngs`` where only the shapes of the draws matter.

    Every stream gives the same concrete key, and nothing is counted, so constructing a module
    with it under a trace records no random-stream updates. Use it only inside
    ``nnx.eval_shape``/``jax.eval_shape``: the weights it produces are not random.
    """

    def __init__(self, seed: int = 0) -> None:
        self._key = jax.random.key(seed)

    def params(self) -> jax.Array:
        """The key of the ``params`` stream (always the same)."""
        return self._key

    def default(self) -> jax.Array:
        """The key of the default stream (always the same)."""
        return self._key

    def __call__(self) -> jax.Array:
        return self._key


def abstract_split(build: Callable[[Any], nnx.Module]) -> tuple[nnx.GraphDef, nnx.State]:
    """``nnx.split`` of an abstract module: its graph and a state of ``jax.ShapeDtypeStruct``.

    Args:
      build: ``rngs -> module``, e.g. ``lambda rngs: Net(config, rngs=rngs)``; called under
        ``nnx.eval_shape`` with a :class:`FixedKeys` (and, if the module needs more of its
        ``rngs`` than a key per parameter, again with ``nnx.Rngs(0)``).

    Returns:
      The graph definition and the abstract state (fill it with ``nnx.replace_by_pure_dict``;
      every call returns a new state).
    """
    try:
        abstract = nnx.eval_shape(lambda: build(FixedKeys()))
    except (AttributeError, TypeError):  # the module wants a real nnx.Rngs (streams, splits)
        abstract = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
    return nnx.split(abstract)

"""Split an NNX model once per model object; re-read its weights on every call.

``nnx.split`` walks the whole module graph and builds a new ``GraphDef`` (about 60 ms for
MSD-Net's cifar10_anytime on a quiet core, 200 ms on a busy one), and hashing that ``GraphDef``
for ``jax.jit``'s cache costs another 15-25 ms. The one-shot :func:`jaxcam.explain` and
:func:`jaxcam.explain_exits` used to pay both on every call. This cache keeps, per model object
(weakly: it dies with the model), the hashed structure (:class:`~jaxcam.adapters.nnx.Frozen`),
the model's own ``Variable`` objects in the state's leaf order, and every object the model's
attributes held when it was split. A later call

1. walks the attributes again and checks that each is the very object it was (``is``): a
   replaced submodule, ``Variable`` or setting (``model.eval()`` sets BatchNorm's
   ``use_running_average``), or an item added to an ``nnx.List``, makes it split anew;
2. checks that no ``Variable``'s metadata changed (it is part of the state's tree structure);
3. reads every ``Variable``'s current value: weights changed in place (an optimiser's update,
   ``var[...] = w``, ``nnx.update``) are always seen, never a stale snapshot.

The walk is a plain Python loop over ``vars()`` with no ``GraphDef`` built, about 30 times
cheaper than the split. What it cannot see is a non-array attribute mutated in place without
being replaced (a setting inside a mutable, non-container object); such a model is still split
correctly by calling :func:`clear` first.
"""

from __future__ import annotations

import dataclasses
import operator
import threading
import weakref
from typing import Any

import jax
import numpy as np
from flax import nnx

__all__ = ["cached_split", "clear"]


@dataclasses.dataclass
class _Entry:
    frozen: Any  # jaxcam.adapters.nnx.Frozen
    objects: list[Any]  # every object the walk met, in walk order (kept alive: ids stay unique)
    variables: list[nnx.Variable]  # the model's own Variables, in the state's leaf order
    metadata: list[dict[str, Any]]  # each Variable's metadata when split


_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[Any, _Entry] = weakref.WeakKeyDictionary()


def clear() -> None:
    """Forget every cached split (the next call of each model splits it anew)."""
    with _lock:
        _cache.clear()


_LEAF, _NODE, _SEQUENCE, _MAPPING = 0, 1, 2, 3
_kinds: dict[type, int] = {}


def _kind(t: type) -> int:
    """How the walk treats an attribute of type ``t`` (decided once per type: NNX's
    ``isinstance`` checks go through metaclasses and cost a microsecond each)."""
    kind = _kinds.get(t)
    if kind is None:
        if issubclass(t, nnx.Variable):
            kind = _LEAF
        elif issubclass(t, nnx.Pytree):
            kind = _NODE
        elif issubclass(t, (list, tuple)):
            kind = _SEQUENCE
        elif issubclass(t, dict):
            kind = _MAPPING
        else:
            kind = _LEAF
        _kinds[t] = kind
    return kind


def _walk(model: Any) -> list[Any]:
    """Every object held by the attributes of the model's graph nodes, with the attribute names.

    Graph nodes (modules, ``nnx.List``/``nnx.Dict``, other ``nnx.Pytree`` objects) and Python
    containers are entered; ``Variable`` objects and everything else are recorded, not entered.
    The model itself is not in the list (unless a submodule refers back to it).
    """
    out: list[Any] = []
    seen: set[int] = set()
    stack = [model]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        kind = _kind(type(node))
        if kind == _NODE:
            d = vars(node)
            out.extend(d)  # the attribute names: an added or removed one changes the list
            children = list(d.values())
        elif kind == _SEQUENCE:
            out.append(len(node))
            children = list(node)
        else:
            out.extend(node)
            children = list(node.values())
        out.extend(children)
        kinds = _kinds
        stack.extend([c for c in children
                      if (k := kinds.get(type(c))) or (k is None and _kind(type(c)))])
    return out


def _resolve(model: Any, path: tuple[Any, ...]) -> Any:
    """The object at a state path (``('blocks', 3, 'conv', 'kernel')``) of the live model."""
    node = model
    for key in path:
        key = getattr(key, "key", key)
        if isinstance(node, nnx.Pytree):
            node = vars(node)[str(key)]
        else:
            node = node[key]
    return node


def _variables_in_leaf_order(model: Any, state: Any, leaves: list[Any]
                             ) -> list[nnx.Variable] | None:
    """The model's own Variables whose raw values are ``leaves``, or None if they cannot be
    matched one to one (the model is then split on every call, as without the cache)."""
    try:
        with_paths, _ = jax.tree_util.tree_flatten_with_path(
            state, is_leaf=lambda x: isinstance(x, nnx.Variable))
        variables = [_resolve(model, path) for path, _ in with_paths]
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if len(variables) != len(leaves) or not all(
            isinstance(v, nnx.Variable) and v.get_raw_value() is leaf
            for v, leaf in zip(variables, leaves, strict=True)):
        return None
    return variables


def _is_leaf_array(value: Any) -> bool:
    return isinstance(value, (jax.Array, np.ndarray, np.generic))


def _metadata(variable: nnx.Variable) -> dict[str, Any]:
    """The Variable's metadata dict itself where readable without a copy (``get_metadata``
    copies it, which costs more than the rest of a cache hit)."""
    live = getattr(variable, "_var_metadata", None)
    return live if isinstance(live, dict) else variable.get_metadata()


def _unchanged(model: Any, entry: _Entry) -> bool:
    """Whether the model holds the same objects and Variable metadata as when split."""
    objects = _walk(model)
    return (len(objects) == len(entry.objects)
            and all(map(operator.is_, objects, entry.objects))
            and all(map(operator.eq, map(_metadata, entry.variables), entry.metadata)))


def cached_split(model: Any, make_frozen: Any) -> tuple[Any, list[Any]]:
    """``(Frozen structure, current weights' leaves)`` of an NNX module, split once per object.

    Args:
      model: an ``nnx.Module``.
      make_frozen: ``(graphdef, treedef) -> Frozen``.

    Returns:
      The structure (the same object while the model's structure is unchanged, so its hash is
      computed once) and the arrays the model's Variables hold now.
    """
    with _lock:
        entry = _cache.get(model)
    if entry is not None and _unchanged(model, entry):
        leaves = [v.get_raw_value() for v in entry.variables]
        if all(map(_is_leaf_array, leaves)):
            return entry.frozen, leaves
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    frozen = make_frozen(graphdef, treedef)
    variables = _variables_in_leaf_order(model, state, leaves)
    objects = _walk(model)
    # A submodule referring back to the model would keep it alive through its own cache
    # entry (the keys are weak, the values strong): such a model is not cached.
    if (variables is not None and all(_is_leaf_array(x) for x in leaves)
            and not any(o is model for o in objects)):
        new = _Entry(frozen, objects, variables, [dict(_metadata(v)) for v in variables])
        with _lock:
            _cache[model] = new
    else:
        with _lock:
            _cache.pop(model, None)
    return frozen, leaves

"""A small jaxpr interpreter: re-evaluate a function with some of its equations rewritten.

``rewriting(fn, rule)`` traces ``fn`` to a jaxpr and evaluates it equation by equation; for each
equation, ``rule(eqn, invals)`` either returns the outputs of a replacement (a ``custom_vjp``
function, the inlined body of a call, a rebind with rewritten parameters) or None, and then the
equation is bound unchanged. The evaluation happens under whatever transformation calls it
(``jit``, ``grad``), so a replacement's custom rules are what that transformation sees.

Used by :mod:`jaxcam.extend.conv_grad` (strided convolutions with a faster input gradient) and
:mod:`jaxcam.methods.input._guided_backprop` (ReLUs with the guided backward rule).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend.core as jex

__all__ = ["Rule", "CALL_PRIMITIVES", "body", "eqn_context", "bind", "eval_jaxpr", "rewriting"]

Rule = Callable[[jex.JaxprEqn, list[Any]], "list[Any] | None"]
"""``rule(eqn, invals)``: the outputs of ``eqn``'s replacement, or None to bind it unchanged."""

# Plain calls: evaluating their body inline is the same computation.
CALL_PRIMITIVES = frozenset({"jit", "pjit", "closed_call", "core_call"})
_BODY_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def body(eqn: jex.JaxprEqn) -> tuple[jex.Jaxpr, Sequence[Any]] | None:
    """The (jaxpr, consts) a call-like equation evaluates (its ``jaxpr``, ``call_jaxpr`` or
    ``fun_jaxpr`` parameter), or None."""
    for name in _BODY_PARAMS:
        value = eqn.params.get(name)
        if isinstance(value, jex.ClosedJaxpr):
            return value.jaxpr, value.consts
        if isinstance(value, jex.Jaxpr):
            return value, ()
    return None


def eqn_context(eqn: jex.JaxprEqn) -> contextlib.AbstractContextManager[Any]:
    """The context the equation was traced under (e.g. a name stack), to re-bind it in."""
    return getattr(getattr(eqn, "ctx", None), "manager", None) or contextlib.nullcontext()


def bind(eqn: jex.JaxprEqn, invals: Sequence[Any], params: dict[str, Any] | None = None
         ) -> list[Any]:
    """``eqn``'s primitive applied to ``invals`` (with ``params`` instead of its own if given).

    Returns:
      The outputs, as a list even for a single-result primitive.
    """
    params = eqn.params if params is None else params
    with eqn_context(eqn):
        outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))
    return list(outs) if eqn.primitive.multiple_results else [outs]


def eval_jaxpr(jaxpr: jex.Jaxpr, consts: Sequence[Any], args: Sequence[Any], rule: Rule
               ) -> list[Any]:
    """Evaluate ``jaxpr`` on ``args``, each equation through ``rule`` (see :data:`Rule`).

    Args:
      jaxpr: the jaxpr to evaluate.
      consts: values of its constvars.
      args: values of its invars (flat).
      rule: the rewrite rule.

    Returns:
      The values of its outvars.
    """
    env: dict[Any, Any] = {}

    def read(atom: Any) -> Any:
        return atom.val if isinstance(atom, jex.Literal) else env[atom]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        invals = [read(atom) for atom in eqn.invars]
        outs = rule(eqn, invals)
        env.update(zip(eqn.outvars, bind(eqn, invals) if outs is None else outs, strict=True))
    return [read(atom) for atom in jaxpr.outvars]


def rewriting(fn: Callable[..., Any], rule: Rule) -> Callable[..., Any]:
    """``fn`` re-evaluated through ``rule``: traced with ``jax.make_jaxpr`` on every call (so it
    must be traceable; it may close over arrays, including an enclosing ``jit``'s tracers).

    Args:
      fn: a function of positional array (pytree) arguments returning a pytree of arrays.
      rule: the rewrite rule.

    Returns:
      A function with the same signature and output structure as ``fn``.
    """

    def rewritten(*args: Any) -> Any:
        closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = eval_jaxpr(closed.jaxpr, closed.consts, jax.tree.leaves(args), rule)
        return jax.tree.unflatten(jax.tree.structure(out_shapes), outs)

    return rewritten

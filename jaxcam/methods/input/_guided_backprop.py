"""Guided backpropagation (Springenberg et al. 2015) for any JAX function, by rewriting its jaxpr.

PyTorch tools swap the backward rule of ``nn.ReLU`` modules with hooks. A JAX function has no
modules to hook, so ``guided_relu_transform`` traces the function to a jaxpr and re-evaluates it
with an interpreter that replaces every ReLU with ``_guided_relu``, a ``jax.custom_vjp`` whose
backward pass is the guided rule (the interpreter is :mod:`jaxcam.extend.interpreter`'s). The user's
model is never edited.

What counts as a ReLU in a jaxpr:

* ``jax.nn.relu`` (and ``flax.nnx.relu``, the same function): a ``custom_jvp_call`` whose body is
  ``max(x, 0.0)``, possibly wrapped in a ``jit``.
* ``jnp.maximum(x, 0)`` written out by hand: a ``max`` with a literal zero operand (optional, on by
  default; note a preprocessing ``jnp.clip(x, 0, ...)`` has the same form and would be rewritten).

Relus inside nested calls are found by recursion: ``jit`` / ``pjit`` / ``closed_call`` /
``checkpoint`` bodies are inlined, ``scan`` / ``while`` / ``cond`` bodies are rewritten in place,
and a ``custom_jvp_call`` / ``custom_vjp_call`` that wraps a ReLU somewhere inside is inlined (its
own custom rule is dropped, since it is defined in terms of the plain ReLU). Inside such custom
rules a bare ``max(x, 0)`` is left alone, because there it is an implementation detail (as in
``logaddexp``), not a layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from jaxcam.extend import interpreter as interp
from jaxcam.registry import InputProbe, Method, register
from jaxcam.targets import ScoreFn

# Primitives whose body is evaluated inline when it holds a ReLU: plain calls and checkpoints,
# no custom rule.
_CALL_PRIMITIVES = interp.CALL_PRIMITIVES | {"remat", "remat2"}
# Primitives carrying a custom derivative of their body.
_CUSTOM_RULE_PRIMITIVES = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})


@jax.custom_vjp
def _guided_relu(x: jax.Array) -> jax.Array:
    return jnp.maximum(x, jnp.zeros((), x.dtype))


def _guided_relu_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return _guided_relu(x), x


def _guided_relu_bwd(x: jax.Array, cotangent: jax.Array) -> tuple[jax.Array]:
    # Springenberg et al.: the gradient passes where the forward input and the incoming gradient
    # are both positive (ReLU's own rule only asks the former).
    passes = (x > 0) & (cotangent > 0)
    return (jnp.where(passes, cotangent, jnp.zeros_like(cotangent)),)


_guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


def _is_zero_literal(atom: Any) -> bool:
    if not isinstance(atom, jex.Literal):
        return False
    value = np.asarray(atom.val)
    return value.shape == () and bool(value == 0)


def _is_floating(atom: Any) -> bool:
    return jnp.issubdtype(atom.aval.dtype, jnp.inexact)


def _max_zero_operand(eqn: jex.JaxprEqn) -> int | None:
    """Index of ``x`` if ``eqn`` is ``max(x, 0)`` or ``max(0, x)`` on floats, else None."""
    if eqn.primitive.name != "max" or len(eqn.invars) != 2:
        return None
    left, right = eqn.invars
    if _is_zero_literal(right) and not _is_zero_literal(left) and _is_floating(left):
        return 0
    if _is_zero_literal(left) and not _is_zero_literal(right) and _is_floating(right):
        return 1
    return None


def _is_relu_body(jaxpr: jex.Jaxpr) -> bool:
    """Whether ``jaxpr`` computes exactly ``max(x, 0)`` of its one input (through ``jit``s)."""
    if len(jaxpr.invars) != 1 or len(jaxpr.outvars) != 1 or len(jaxpr.eqns) != 1:
        return False
    (eqn,) = jaxpr.eqns
    if eqn.outvars[0] is not jaxpr.outvars[0]:
        return False
    operand = _max_zero_operand(eqn)
    if operand is not None:
        return eqn.invars[operand] is jaxpr.invars[0]
    body = interp.body(eqn) if eqn.primitive.name in _CALL_PRIMITIVES else None
    return body is not None and list(eqn.invars) == list(jaxpr.invars) and _is_relu_body(body[0])


def _is_relu_call(eqn: jex.JaxprEqn) -> bool:
    body = interp.body(eqn) if eqn.primitive.name == "custom_jvp_call" else None
    return body is not None and _is_relu_body(body[0]) and _is_floating(eqn.invars[0])


def _contains_relu(jaxpr: jex.Jaxpr, rewrite_maximum: bool) -> bool:
    for eqn in jaxpr.eqns:
        if _is_relu_call(eqn) or (rewrite_maximum and _max_zero_operand(eqn) is not None):
            return True
        if eqn.primitive.name in _CUSTOM_RULE_PRIMITIVES:
            body = interp.body(eqn)
            if body is not None and _contains_relu(body[0], rewrite_maximum=False):
                return True
            continue
        if any(_contains_relu(sub, rewrite_maximum) for sub in jex.jaxprs_in_params(eqn.params)):
            return True
    return False


def _guided_closed_jaxpr(closed: jex.ClosedJaxpr, rewrite_maximum: bool) -> jex.ClosedJaxpr:
    """Re-traces ``closed`` through the interpreter: same signature, guided ReLUs."""
    avals = [
        jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)
        for aval in closed.in_avals
    ]

    def guided(*args: Any) -> list[Any]:
        return interp.eval_jaxpr(closed.jaxpr, closed.consts, args, _rule(rewrite_maximum))

    return jax.make_jaxpr(guided)(*avals)


def _rewrite_params(params: dict[str, Any], rewrite_maximum: bool) -> dict[str, Any]:
    """Rewrites the sub-jaxprs of control-flow parameters (scan body, cond branches, ...)."""

    def rewrite(value: Any) -> Any:
        if isinstance(value, jex.ClosedJaxpr) and _contains_relu(value.jaxpr, rewrite_maximum):
            return _guided_closed_jaxpr(value, rewrite_maximum)
        if isinstance(value, tuple) and any(isinstance(v, jex.ClosedJaxpr) for v in value):
            return tuple(rewrite(v) for v in value)
        return value

    return {name: rewrite(value) for name, value in params.items()}


def _rule(rewrite_maximum: bool) -> interp.Rule:
    """ReLUs through :func:`_guided_relu`; calls holding one inlined; control flow rewritten."""

    def rule(eqn: jex.JaxprEqn, invals: list[Any]) -> list[Any] | None:
        name = eqn.primitive.name
        operand = _max_zero_operand(eqn) if rewrite_maximum else None
        if operand is not None:
            return [_guided_relu(invals[operand])]
        if _is_relu_call(eqn):
            return [_guided_relu(invals[0])]
        body = interp.body(eqn) if name in _CALL_PRIMITIVES | _CUSTOM_RULE_PRIMITIVES else None
        if body is None:
            return interp.bind(eqn, invals, _rewrite_params(eqn.params, rewrite_maximum))
        # Inside a custom rule, a bare max(x, 0) is arithmetic, not a layer: leave it.
        inner_rewrite_maximum = rewrite_maximum and name in _CALL_PRIMITIVES
        if _contains_relu(body[0], inner_rewrite_maximum):
            return interp.eval_jaxpr(body[0], body[1], invals, _rule(inner_rewrite_maximum))
        return None

    return rule


def guided_relu_transform(
    fn: Callable[..., Any], *, rewrite_maximum: bool = True
) -> Callable[..., Any]:
    """Returns ``fn`` with every ReLU's backward rule replaced by the guided rule.

    The forward values are unchanged; only gradients differ. ``fn`` is traced to a jaxpr on each
    call (with the arguments' shapes) and re-evaluated with guided ReLUs, so it must be traceable
    by ``jax.make_jaxpr``; it may close over arrays, including tracers of an enclosing ``jit``.

    Args:
        fn: a function of positional array (pytree) arguments.
        rewrite_maximum: also treat ``jnp.maximum(x, 0)`` (a ``max`` with a literal zero) as a
            ReLU, besides ``jax.nn.relu``.

    Returns:
        A function with the same signature and outputs as ``fn``.
    """

    return interp.rewriting(fn, _rule(rewrite_maximum))


def guided_backprop(
    score_fn: ScoreFn, images: jax.Array, *, rewrite_maximum: bool = True
) -> jax.Array:
    """Guided backpropagation: the input gradient with ReLU's backward rule made "guided".

    At every ReLU the gradient passes only where the forward input is positive and the gradient
    arriving from above is positive; elsewhere it is zero. Works on any JAX ``score_fn`` (a Flax
    module call, nested ``jit``s, ``scan``s) via ``guided_relu_transform``. Matches captum's
    ``GuidedBackprop`` and pytorch-grad-cam's ``GuidedBackpropReLUModel`` on the same network.

    References:
        Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity: The All
        Convolutional Net", ICLR workshop 2015.

    Args:
        score_fn: images ``(B, H, W, C)`` -> scores ``(B,)``.
        images: the images ``(B, H, W, C)``.
        rewrite_maximum: also treat ``jnp.maximum(x, 0)`` as a ReLU (see the module docstring).

    Returns:
        The guided gradients ``(B, H, W, C)`` (signed, not reduced over channels).
    """
    guided_score_fn = guided_relu_transform(score_fn, rewrite_maximum=rewrite_maximum)
    return jax.grad(lambda x: jnp.sum(guided_score_fn(x)))(images)


def _guided_backprop_probe(probe: InputProbe) -> jax.Array:
    """The registry's entry point: guided gradients of the probed scores."""
    return guided_backprop(probe.score_images, probe.images)


METHOD = register(Method(
    name="guidedbackprop", kind="input", fn=_guided_backprop_probe,
    summary="input gradient with every ReLU's backward pass guided (positive only)",
    paper="Springenberg et al., ICLR Workshops 2015", needs_layer=False))

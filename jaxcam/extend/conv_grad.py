"""Fast input gradients of strided convolutions on XLA:CPU, by rewriting a function's jaxpr.

JAX differentiates ``conv_general_dilated(x, w, window_strides=s)`` with respect to ``x`` by a
convolution of the cotangent ``ct`` with ``lhs_dilation=s``. XLA:CPU has a fast kernel for that
conv, but XLA's ``ConvOperandSwapper`` swaps the operands of any conv whose kernel window has
more elements than its input's spatial extent, here when ``prod(ct spatial) < prod(kernel)``
(e.g. a 3x3 kernel and a 2x2 cotangent), and the swapped conv (batch and feature roles exchanged)
runs on a slow generic path: for x (64, 4, 4, 128), w (3, 3, 128, 128), stride 2, the forward
takes ~1 ms and the input VJP ~30 ms. MSD-Net's classifier heads end in such a conv.

The identity used instead: a strided conv is the stride-1 conv (same padding, ``rhs_dilation``,
groups) subsampled along the output's spatial dims,

    conv_s(x) = conv_1(x)[..., ::s0, ::s1]       (the spatial dims of ``dimension_numbers``)

so ``vjp(conv_s)(ct) = vjp(conv_1)(zero_insert(ct))``, where ``zero_insert`` places ``ct`` at
positions ``0, s, 2s, ...`` of a zero array of ``conv_1``'s output shape (``lax.pad`` with interior
padding ``s - 1``). When ``n + lo + hi - k`` is not a multiple of ``s``, ``conv_1`` has trailing
outputs the strided conv never reads; their cotangent is zero. The VJP of the stride-1 conv is a
stride-1 conv whose input (the zero-inserted cotangent) is as large as ``x``, so it is not
swapped. It does ``prod(s)`` times the forward's multiply-adds, so where XLA does not swap JAX's
own transposed conv (larger maps) it is slower (x (64, 8, 8, 284) -> 128: ~25 ms vs ~8 ms): the
default ``mode="auto"`` rewrites only the convs whose JAX gradient would be swapped and whose
stride-1 gradient would not; ``mode="always"`` rewrites every eligible one.

``fast_strided_conv_grads(fn)`` traces ``fn`` to a jaxpr and re-evaluates it with the small
interpreter of :mod:`jaxcam.extend.interpreter`, binding those strided convs
(``window_strides > 1``,
``lhs_dilation == 1``, ``batch_group_count == 1``, float input; "auto" also needs
``feature_group_count == 1``, as XLA never swaps grouped convs) through a ``jax.custom_vjp``
using this rule. The weight cotangent is JAX's own (the transpose of the original conv w.r.t.
``w``; under ``jit`` it is dead code when unused). Bodies of ``jit`` / ``pjit`` /
``closed_call`` / ``core_call`` holding such a conv are inlined; every other equation, including
``custom_jvp_call``, ``custom_vjp_call``, ``checkpoint`` and ``scan`` / ``cond`` / ``while``, is
bound unchanged, so a conv inside those keeps JAX's rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.extend.core as jex
import jax.numpy as jnp
from jax import lax

from jaxcam.extend import interpreter as interp

Mode = Literal["auto", "always"]


def is_strided_conv(eqn: jex.JaxprEqn, mode: Mode) -> bool:
    """Whether the rule rewrites ``eqn`` (a strided ``conv_general_dilated``) in ``mode``."""
    if eqn.primitive is not lax.conv_general_dilated_p:
        return False
    p = eqn.params
    if not (any(s > 1 for s in p["window_strides"]) and all(d == 1 for d in p["lhs_dilation"])
            and p["batch_group_count"] == 1 and math.prod(eqn.outvars[0].aval.shape) > 0
            and jnp.issubdtype(eqn.invars[0].aval.dtype, jnp.inexact)):
        return False
    if mode == "always":
        return True
    # "auto": only where XLA's operand swap (kernel window larger than the conv input) would hit
    # JAX's transposed conv, whose input is the cotangent, but not the stride-1 conv's transpose.
    lhs, rhs, out = p["dimension_numbers"]
    x_shape, w_shape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    kernel = math.prod(w_shape[d] for d in rhs[2:])
    spans = zip(lhs[2:], rhs[2:], p["padding"], p["rhs_dilation"], strict=True)
    unit_out = math.prod(x_shape[i] + lo + hi - (w_shape[k] - 1) * r
                         for i, k, (lo, hi), r in spans)
    strided_out = math.prod(eqn.outvars[0].aval.shape[d] for d in out[2:])
    return p["feature_group_count"] == 1 and strided_out < kernel <= unit_out


def _call_body(eqn: jex.JaxprEqn) -> tuple[jex.Jaxpr, Sequence[Any]] | None:
    """The (jaxpr, consts) a plain call equation (``jit``, ``closed_call``, ...) evaluates."""
    return interp.body(eqn) if eqn.primitive.name in interp.CALL_PRIMITIVES else None


def _has_strided_conv(jaxpr: jex.Jaxpr, mode: Mode) -> bool:
    for eqn in jaxpr.eqns:
        body = _call_body(eqn)
        if is_strided_conv(eqn, mode) or (body is not None and _has_strided_conv(body[0], mode)):
            return True
    return False


def _zero_insert(ct: jax.Array, full_shape: Sequence[int], strides: Sequence[int],
                 spatial_dims: Sequence[int]) -> jax.Array:
    """``ct`` scattered to positions ``::s`` of zeros of ``full_shape`` along ``spatial_dims``."""
    config = [(0, 0, 0)] * ct.ndim
    for dim, s in zip(spatial_dims, strides, strict=True):
        config[dim] = (0, full_shape[dim] - ((ct.shape[dim] - 1) * s + 1), s - 1)
    return lax.pad(ct, jnp.zeros((), ct.dtype), config)


def _strided_conv(params: dict[str, Any]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``conv_general_dilated`` with ``params``, whose input VJP is the zero-insertion rule."""
    strides = tuple(params["window_strides"])
    unit_params = {**params, "window_strides": (1,) * len(strides)}
    spatial_dims = tuple(params["dimension_numbers"].out_spec[2:])

    def conv(x: jax.Array, w: jax.Array) -> jax.Array:
        return lax.conv_general_dilated_p.bind(x, w, **params)

    def conv_unit(x: jax.Array, w: jax.Array) -> jax.Array:
        return lax.conv_general_dilated_p.bind(x, w, **unit_params)

    @jax.custom_vjp
    def fast(x: jax.Array, w: jax.Array) -> jax.Array:
        return conv(x, w)

    def fwd(x: Any, w: Any) -> tuple[jax.Array, tuple[Any, Any]]:
        # With symbolic_zeros, x and w say whether they are differentiated; keep only what the
        # wanted cotangents need, so an explanation (input cotangent only) never even traces
        # the weight gradient.
        w_for_x = w.value if x.perturbed else None
        x_for_w = x.value if w.perturbed else None
        shapes = (jax.ShapeDtypeStruct(x.value.shape, x.value.dtype),
                  jax.ShapeDtypeStruct(w.value.shape, w.value.dtype))
        avals.append(shapes)
        return conv(x.value, w.value), (w_for_x, x_for_w)

    def bwd(res: tuple[Any, Any], ct: jax.Array) -> tuple[Any, Any]:
        w, x = res
        x_aval, w_aval = avals[-1]
        ct_x = ct_w = None
        if w is not None:
            full = _zero_insert(ct, jax.eval_shape(conv_unit, x_aval, w_aval).shape, strides,
                                spatial_dims)
            # linear_transpose == vjp for these linear maps, without re-running the forward.
            (ct_x,) = jax.linear_transpose(lambda x_: conv_unit(x_, w), x_aval)(full)
        if x is not None:
            (ct_w,) = jax.linear_transpose(lambda w_: conv(x, w_), w_aval)(ct)
        return ct_x, ct_w

    avals: list[tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]] = []
    fast.defvjp(fwd, bwd, symbolic_zeros=True)
    return fast


def rule(mode: Mode) -> interp.Rule:
    """Strided convs through :func:`_strided_conv`; calls holding one inlined; else unchanged."""

    def rule(eqn: jex.JaxprEqn, invals: list[Any]) -> list[Any] | None:
        if is_strided_conv(eqn, mode):
            with interp.eqn_context(eqn):
                return [_strided_conv(eqn.params)(*invals)]
        body = _call_body(eqn)
        if body is not None and _has_strided_conv(body[0], mode):
            return interp.eval_jaxpr(body[0], body[1], invals, rule)
        return None

    return rule


def fast_strided_conv_grads(
    fn: Callable[..., Any], *, mode: Mode = "auto"
) -> Callable[..., Any]:
    """Returns ``fn`` with fast input gradients through its strided convolutions.

    The outputs are bitwise those of ``fn``; gradients equal JAX's up to float rounding, but the
    input VJP of a rewritten strided ``conv_general_dilated`` is a stride-1 conv of the
    zero-inserted cotangent instead of an input-dilated conv (see the module docstring).
    ``fn`` is traced with ``jax.make_jaxpr`` on every call, so it must be traceable; it may close
    over arrays, including tracers of an enclosing ``jit`` / ``grad`` (e.g. the parameters of a
    Flax NNX module merged inside a jitted function; use it in eval mode, since state updates
    made while tracing would leak). Convs inside ``scan`` / ``cond`` / ``while`` / custom-rule
    calls / ``checkpoint`` keep JAX's own gradient.

    Args:
        fn: a function of positional array (pytree) arguments returning a pytree of arrays.
        mode: ``"auto"`` rewrites a strided conv only where XLA would swap the operands of JAX's
            transposed conv (``prod(output spatial) < prod(kernel spatial)``, no groups) and not
            those of the stride-1 one: the slow XLA:CPU case. ``"always"`` rewrites every
            strided conv with ``lhs_dilation == 1`` and ``batch_group_count == 1``.

    Returns:
        A function with the same signature and outputs as ``fn``.
    """

    return interp.rewriting(fn, rule(mode))

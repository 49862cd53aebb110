"""Depthwise convolutions as shifted multiply-adds on XLA:CPU, by rewriting a function's jaxpr.

XLA:CPU runs a depthwise convolution (``feature_group_count`` equal to the input channels, one
filter per channel) on a slow generic path: timed alone at batch 8, a 3x3 one at 112x112x96
takes 295 ms (PyTorch 69 ms), 3x3 at 56x56x144 95 ms (4.6 ms), 5x5 at 14x14x672 43 ms (1.4 ms),
while dense 1x1 convolutions cost the same in both. MobileNet-style networks (EfficientNet-Lite0
among them) are made of such convolutions, so on a CPU they set what an explanation costs.

The same convolution is a sum over the kernel's ``kh * kw`` taps of a strided slice of the
padded input times that tap's per-channel weight::

    y[n, i, j, c] = sum_{a, b} x_pad[n, i*sh + a*dh, j*sw + b*dw, c] * w[a, b, c]

which XLA fuses into one loop (33, 4.7 and 2.9 ms for the three convolutions above); its
gradients, derived by JAX from the slices and products, are 3-9x cheaper than the
convolution's. :func:`fast_cpu_convs` re-evaluates a function with every depthwise convolution
(channel multiplier 1, two spatial dimensions, no input dilation, any padding, strides, kernel
dilation and dimension numbers) bound that way, when JAX's default backend is the CPU; elsewhere
(cuDNN, TPU) the convolution is left as it is. Other equations, and strided dense convolutions,
go through :func:`jaxcam.extend.conv_grad`'s rule. The sums run in a different order than the
convolution's, so results equal it up to float rounding (tested to 1e-5 relative).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
from jax import lax

from jaxcam.extend import conv_grad
from jaxcam.extend import interpreter as interp

__all__ = ["depthwise_conv", "fast_cpu_convs", "is_depthwise_conv"]


def is_depthwise_conv(eqn: jex.JaxprEqn) -> bool:
    """Whether ``eqn`` is a 2-D depthwise ``conv_general_dilated`` this module rewrites."""
    if eqn.primitive is not lax.conv_general_dilated_p:
        return False
    p = eqn.params
    lhs, rhs, _ = p["dimension_numbers"]
    x_shape, w_shape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    if len(x_shape) != 4:
        return False
    channels = x_shape[lhs[1]]
    return (channels > 1 and p["feature_group_count"] == channels
            and p["batch_group_count"] == 1 and w_shape[rhs[0]] == channels
            and w_shape[rhs[1]] == 1 and all(d == 1 for d in p["lhs_dilation"])
            and jnp.issubdtype(eqn.invars[0].aval.dtype, jnp.inexact))


def depthwise_conv(x: jax.Array, w: jax.Array, params: dict[str, Any]) -> jax.Array:
    """``conv_general_dilated(x, w, **params)`` for a depthwise convolution, as a sum of taps.

    Args:
      x: the input, laid out as ``params["dimension_numbers"].lhs_spec`` says.
      w: the ``(C, 1, kh, kw)``-role kernel, laid out as ``rhs_spec`` says.
      params: the equation's parameters (:func:`is_depthwise_conv` holds).

    Returns:
      The convolution's output, laid out as ``out_spec`` says, in its dtype.
    """
    lhs, rhs, out = params["dimension_numbers"]
    xc = jnp.transpose(x, (lhs[0], lhs[2], lhs[3], lhs[1]))  # (N, H, W, C)
    wc = jnp.transpose(w, (rhs[2], rhs[3], rhs[1], rhs[0]))[:, :, 0, :]  # (kh, kw, C)
    (lo_h, hi_h), (lo_w, hi_w) = params["padding"]
    xc = lax.pad(xc, jnp.zeros((), xc.dtype), ((0, 0, 0), (lo_h, hi_h, 0), (lo_w, hi_w, 0),
                                               (0, 0, 0)))
    n, hp, wp, c = xc.shape
    kh, kw = wc.shape[:2]
    sh, sw = params["window_strides"]
    dh, dw = params["rhs_dilation"]
    ho = (hp - (kh - 1) * dh - 1) // sh + 1
    wo = (wp - (kw - 1) * dw - 1) // sw + 1
    acc = None
    for a in range(kh):
        for b in range(kw):
            tap = lax.slice(xc, (0, a * dh, b * dw, 0),
                            (n, a * dh + (ho - 1) * sh + 1, b * dw + (wo - 1) * sw + 1, c),
                            (1, sh, sw, 1))
            term = tap * wc[a, b]
            acc = term if acc is None else acc + term
    dtype = params.get("preferred_element_type") or jnp.result_type(x.dtype, w.dtype)
    perm = [0] * 4
    for axis, role in zip((0, 1, 2, 3), (out[0], out[2], out[3], out[1]), strict=True):
        perm[role] = axis
    return jnp.transpose(acc, perm).astype(dtype)


def _has_rewrite(jaxpr: jex.Jaxpr, strided: Callable[[jex.JaxprEqn], bool]) -> bool:
    for eqn in jaxpr.eqns:
        body = interp.body(eqn) if eqn.primitive.name in interp.CALL_PRIMITIVES else None
        if is_depthwise_conv(eqn) or strided(eqn) or (
                body is not None and _has_rewrite(body[0], strided)):
            return True
    return False


def fast_cpu_convs(fn: Callable[..., Any], *, mode: conv_grad.Mode = "auto",
                   strided_grads: bool = True) -> Callable[..., Any]:
    """``fn`` with depthwise convolutions as shifted multiply-adds (on the CPU backend) and
    fast input gradients through its strided convolutions
    (:func:`jaxcam.extend.fast_strided_conv_grads`).

    Args:
      fn: a function of positional array (pytree) arguments returning a pytree of arrays; it is
        traced with ``jax.make_jaxpr`` on every call (see :mod:`jaxcam.extend.interpreter`).
      mode: the strided-convolution rule's mode (see
        :func:`jaxcam.extend.fast_strided_conv_grads`).
      strided_grads: apply the strided-convolution rule too. Its ``custom_vjp`` cannot be
        differentiated in forward mode: pass False for a function differentiated twice
        (a Hessian-vector product); the depthwise rewrite is plain JAX and can be.

    Returns:
      A function with the same signature and outputs as ``fn`` (up to float rounding in the
      rewritten depthwise convolutions).
    """
    strided_rule = conv_grad.rule(mode) if strided_grads else (lambda eqn, invals: None)

    def strided(eqn: jex.JaxprEqn) -> bool:
        return strided_grads and conv_grad.is_strided_conv(eqn, mode)

    def rule(eqn: jex.JaxprEqn, invals: list[Any]) -> list[Any] | None:
        if is_depthwise_conv(eqn):
            with interp.eqn_context(eqn):
                return [depthwise_conv(*invals, eqn.params)]
        body = interp.body(eqn) if eqn.primitive.name in interp.CALL_PRIMITIVES else None
        if body is not None and _has_rewrite(body[0], strided):
            return interp.eval_jaxpr(body[0], body[1], invals, rule)
        return strided_rule(eqn, invals)

    rewritten = interp.rewriting(fn, rule)

    def dispatch(*args: Any) -> Any:
        # Decided at trace time: cuDNN and TPU convolutions are fast as they are.
        if jax.default_backend() != "cpu":
            return interp.rewriting(fn, strided_rule)(*args)
        return rewritten(*args)

    return dispatch

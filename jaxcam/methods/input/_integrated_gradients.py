"""Integrated gradients (Sundararajan et al. 2017), with captum's quadrature rules."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._arrays import sum_in_chunks
from jaxcam.methods.input._common import Reduction, input_gradient, reduce_channels
from jaxcam.registry import InputProbe, Method, register
from jaxcam.targets import ScoreFn

IntegrationMethod = Literal[
    "gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"
]


def integration_points(steps: int, method: IntegrationMethod) -> tuple[np.ndarray, np.ndarray]:
    """Path positions ``alphas`` in [0, 1] and their weights, exactly as captum builds them.

    Note captum's ``riemann_trapezoid`` weights are ``1/steps`` with halved ends on
    ``linspace(0, 1, steps)``: they sum to ``(steps - 1) / steps``, not 1, so its attributions
    come out scaled by that factor. Kept for parity; ``gausslegendre`` (captum's default) has
    weights summing to 1.

    Args:
        steps: number of points on the path.
        method: ``"gausslegendre"`` or ``"riemann_{trapezoid,left,right,middle}"``.

    Returns:
        ``(alphas, weights)``, two float64 arrays of length ``steps``.
    """
    if method == "gausslegendre":
        if steps < 1:
            raise ValueError(f"gausslegendre needs steps >= 1, got {steps}")
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (1.0 + nodes), 0.5 * weights
    if steps < 2:
        raise ValueError(f"Riemann methods need steps >= 2, got {steps}")
    weights = np.full(steps, 1.0 / steps)
    if method == "riemann_trapezoid":
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    if method == "riemann_left":
        return np.linspace(0.0, 1.0 - 1.0 / steps, steps), weights
    if method == "riemann_right":
        return np.linspace(1.0 / steps, 1.0, steps), weights
    if method == "riemann_middle":
        return np.linspace(0.5 / steps, 1.0 - 0.5 / steps, steps), weights
    raise ValueError(f"unknown integration method {method!r}")


def integrated_gradients(
    score_fn: ScoreFn,
    images: jax.Array,
    *,
    baseline: jax.Array | float | None = None,
    steps: int = 50,
    method: IntegrationMethod = "gausslegendre",
    batch_size: int | None = None,
    reduce: Reduction = "none",
) -> jax.Array:
    """Integrated gradients: ``(x - x0) * integral_0^1 grad score(x0 + a (x - x0)) da``.

    The integral is the weighted sum over ``integration_points(steps, method)``, the same rule
    and the same points as captum's ``IntegratedGradients(...).attribute(x, baselines,
    n_steps=steps, method=method)`` (``multiply_by_inputs=True``, its default), so the two agree
    to float rounding. With ``reduce="sum"`` the map keeps completeness: its pixel sum
    approximates ``score(x) - score(x0)``.

    References:
        Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.

    Args:
        score_fn: images ``(B, H, W, C)`` -> scores ``(B,)``.
        images: the images ``(B, H, W, C)``.
        baseline: the reference ``x0``, broadcastable to ``images``; ``None`` is all zeros.
        steps: number of points on the path.
        method: quadrature rule, see ``integration_points``; captum's default is
            ``"gausslegendre"``.
        batch_size: path points differentiated together (each a full batch of ``B`` images);
            ``None`` vmaps all of them. Only memory and speed depend on it.
        reduce: channel reduction, see ``reduce_channels``: ``"none"`` (default) keeps
            ``(B, H, W, C)``; ``"sum"`` keeps completeness; ``"max_abs"`` / ``"sum_abs"`` give
            saliency-style maps.

    Returns:
        ``(B, H, W, C)`` attributions, or ``(B, H, W)`` after a reduction.
    """
    alphas_np, weights_np = integration_points(steps, method)
    alphas = jnp.asarray(alphas_np, images.dtype)
    weights = jnp.asarray(weights_np, images.dtype)
    if baseline is None:
        baseline = jnp.zeros_like(images)
    baseline = jnp.broadcast_to(jnp.asarray(baseline, images.dtype), images.shape)
    delta = images - baseline

    def weighted_gradient(alpha_and_weight: jax.Array) -> jax.Array:
        alpha, weight = alpha_and_weight[0], alpha_and_weight[1]
        return weight * input_gradient(score_fn, baseline + alpha * delta)

    # One (steps, 2) array so each path point travels with its weight through the chunked map.
    points = jnp.stack([alphas, weights], axis=1)
    path_integral = sum_in_chunks(weighted_gradient, points, batch_size)
    return reduce_channels(delta * path_integral, reduce)


def _integrated_gradients_probe(probe: InputProbe, *,
                                baseline: jax.Array | float | None = None, steps: int = 50,
                                batch_size: int | None = None) -> jax.Array:
    """The registry's entry point: integrated gradients of the probed scores."""
    return integrated_gradients(probe.score_images, probe.images, baseline=baseline,
                                steps=steps, batch_size=batch_size)


METHOD = register(Method(
    name="integratedgradients", kind="input", fn=_integrated_gradients_probe,
    summary="input gradients integrated along the path from a baseline to the image",
    paper="Sundararajan, Taly & Yan, ICML 2017", needs_layer=False,
    options=("baseline", "steps", "batch_size")))

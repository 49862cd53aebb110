"""Deep Feature Factorization: non-negative matrix factorisation of a layer's activations."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam.adapters import make_adapter, normalize_layer_path
from jaxcam.methods.layer._common import as_float_array
from jaxcam.postprocess import minmax_normalize, resize_bilinear

# scikit-learn NMF's defaults, which pytorch-grad-cam's ``dff`` uses.
NMF_TOL = 1e-4
NMF_MAX_ITER = 200
NMF_SEED = 0


def _nmf_random_init(n_samples: int, n_features: int, n_components: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The standard normal draws of scikit-learn's ``init="random"`` with ``random_state=0``:
    ``H`` first, then ``W`` (both are then scaled by ``sqrt(mean(X) / k)`` and made absolute).
    They depend on the shapes only, so they are constants of the traced computation."""
    rng = np.random.RandomState(NMF_SEED)
    h = rng.standard_normal(size=(n_components, n_features))
    w = rng.standard_normal(size=(n_samples, n_components))
    return w, h


def _cd_sweep(x: jax.Array, w: jax.Array, ht: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One pass of scikit-learn's ``_update_coordinate_descent`` over W's columns (the
    ``_update_cdnmf_fast`` loop, vectorised over rows: each row's update for component ``t``
    depends only on that row): returns the new W and the summed projected-gradient violation."""
    hi = jax.lax.Precision.HIGHEST
    hht = jnp.matmul(ht.T, ht, precision=hi)
    xht = jnp.matmul(x, ht, precision=hi)
    violation = jnp.zeros((), x.dtype)
    for t in range(w.shape[1]):
        grad = jnp.matmul(w, hht[t], precision=hi) - xht[:, t]
        column = w[:, t]
        projected = jnp.where(column == 0, jnp.minimum(grad, 0.0), grad)
        violation = violation + jnp.sum(jnp.abs(projected))
        hess = hht[t, t]
        updated = jnp.maximum(column - grad / jnp.where(hess != 0, hess, 1.0), 0.0)
        w = w.at[:, t].set(jnp.where(hess != 0, updated, column))
    return w, violation


def nmf(x: jax.Array, n_components: int, *, tol: float = NMF_TOL,
        max_iter: int = NMF_MAX_ITER) -> tuple[jax.Array, jax.Array]:
    """``X ~ W H`` with ``W, H >= 0``: scikit-learn's ``NMF(n_components, init="random",
    random_state=0)`` (coordinate descent, Frobenius loss, no regularisation), in JAX.

    The same start (scikit-learn's seeded draws), the same coordinate order and the same
    stopping rule (the projected-gradient violation of a sweep over W and H, relative to the
    first sweep's, at most ``tol``; at most ``max_iter`` sweeps). Summation order differs, so
    where the stopping test is within rounding of ``tol`` the two may stop one sweep apart.

    Args:
      x: ``(n, m)`` non-negative matrix.
      n_components: ``k``.
      tol: the stopping tolerance.
      max_iter: the most sweeps.

    Returns:
      ``W`` ``(n, k)`` and ``H`` ``(k, m)``.
    """
    n, m = x.shape
    w0, h0 = _nmf_random_init(n, m, n_components)
    avg = jnp.sqrt(jnp.mean(x) / n_components)
    w = jnp.abs(avg * jnp.asarray(w0, x.dtype))
    ht = jnp.abs(avg * jnp.asarray(h0, x.dtype)).T

    def sweep(w: jax.Array, ht: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        w, violation_w = _cd_sweep(x, w, ht)
        ht, violation_h = _cd_sweep(x.T, ht, w)
        return w, ht, violation_w + violation_h

    w, ht, violation_init = sweep(w, ht)

    def running(state: tuple) -> jax.Array:
        n_iter, _, _, violation = state
        converged = (violation_init == 0) | (violation / violation_init <= tol)
        return (n_iter < max_iter) & ~converged

    def step(state: tuple) -> tuple:
        n_iter, w, ht, _ = state
        w, ht, violation = sweep(w, ht)
        return n_iter + 1, w, ht, violation

    _, w, ht, _ = jax.lax.while_loop(running, step, (1, w, ht, violation_init))
    return w, ht.T


@functools.partial(jax.jit, static_argnames=("n_components", "tol", "max_iter", "layout"))
def dff(activations: Any, n_components: int = 5, *, tol: float = NMF_TOL,
        max_iter: int = NMF_MAX_ITER, layout: str | None = None) -> tuple[jax.Array, jax.Array]:
    """Deep Feature Factorization of a batch of activations (pytorch-grad-cam's ``dff``).

    The ``(B, h, w, C)`` activations become a ``(C, B*h*w)`` matrix (NaN set to 0), each
    channel shifted by its minimum to make it non-negative, and factorised by :func:`nmf`:
    ``W`` ``(C, k)`` are the concepts (the shift added back, as pytorch-grad-cam does) and ``H``
    ``(k, B*h*w)`` their spatial heatmaps -- shared concepts across the whole batch.

    Args:
      activations: ``(B, h, w, C)`` activations.
      n_components: the number of concepts ``k``.
      tol: NMF's stopping tolerance.
      max_iter: NMF's most sweeps.
      layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
        PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as NHWC, an
        ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
      ``concepts`` ``(C, k)`` and raw ``explanations`` ``(B, k, h, w)``.

    References:
      Collins, Achanta & Susstrunk, "Deep Feature Factorization For Concept Discovery", ECCV
      2018. https://arxiv.org/abs/1806.10206
    """
    activations = as_float_array(activations, "activations", layout)
    batch, h, w, channels = activations.shape
    matrix = jnp.moveaxis(jnp.where(jnp.isnan(activations), 0.0, activations), -1, 0)
    matrix = matrix.reshape(channels, -1)
    offset = jnp.min(matrix, axis=-1)
    weights, heatmaps = nmf(matrix - offset[:, None], n_components, tol=tol, max_iter=max_iter)
    concepts = weights + offset[:, None]
    explanations = jnp.moveaxis(heatmaps.reshape(n_components, batch, h, w), 0, 1)
    return concepts, explanations


@functools.partial(jax.jit, static_argnums=0)
def _layer_activations(adapter: Any, state: Any, images: jax.Array) -> jax.Array:
    return adapter.forward(state, images)[1][0]


class DeepFeatureFactorization:
    """pytorch-grad-cam's ``DeepFeatureFactorization``: concepts and their maps for a layer.

    Args:
      model: a model :func:`jaxcam.explain` accepts.
      target_layer: the layer whose activations are factorised.
      computation_on_concepts: optional ``(k, C) -> (k, K)`` function of the concept vectors
        (e.g. the model's classifier head), whose result is returned too.
      variables: a Linen model's variables.
    """

    def __init__(self, model: Any, target_layer: Any,
                 computation_on_concepts: Callable[[jax.Array], jax.Array] | None = None,
                 variables: Any = None) -> None:
        self.adapter, self.state = make_adapter(model, [normalize_layer_path(target_layer)],
                                                variables)
        self.computation_on_concepts = computation_on_concepts

    def __call__(self, images: Any, n_components: int = 16
                 ) -> tuple[jax.Array, jax.Array] | tuple[jax.Array, jax.Array, jax.Array]:
        """Factorise the layer's activations on ``images``.

        Args:
          images: ``(B, H, W, C_in)`` images.
          n_components: the number of concepts ``k``.

        Returns:
          ``concepts`` ``(C, k)``; ``explanations`` ``(B, k, H, W)``, each concept's map
          min-max scaled per image and resized to the image (pytorch-grad-cam's
          ``scale_cam_image``); and, with ``computation_on_concepts``, its ``(k, K)`` result.
        """
        images = jnp.asarray(images)
        activations = _layer_activations(self.adapter, self.state, images)
        # The adapter's layer output as it comes, read channels-last.
        concepts, explanations = dff(activations, n_components, layout="NHWC")
        explanations = resize_bilinear(minmax_normalize(explanations), images.shape[1:3])
        if self.computation_on_concepts is None:
            return concepts, explanations
        return concepts, explanations, self.computation_on_concepts(concepts.T)

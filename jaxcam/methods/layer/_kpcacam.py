"""KPCA-CAM: Eigen-CAM with kernel PCA."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcam.methods.layer._common import as_float_array
from jaxcam.registry import Method, register

KERNELS = ("linear", "poly", "rbf", "sigmoid", "cosine")


def _kernel_matrix(x: jax.Array, kernel: str, gamma: float, degree: int,
                   coef0: float) -> jax.Array:
    """scikit-learn's ``pairwise_kernels(x, x, metric=kernel)`` with its default parameters."""
    hi = jax.lax.Precision.HIGHEST
    gram = jnp.matmul(x, x.T, precision=hi)
    if kernel == "linear":
        return gram
    if kernel == "poly":
        return (gamma * gram + coef0) ** degree
    if kernel == "sigmoid":
        return jnp.tanh(gamma * gram + coef0)
    if kernel == "rbf":
        squared = jnp.sum(x * x, axis=-1)
        distances = jnp.maximum(squared[:, None] + squared[None, :] - 2 * gram, 0.0)
        return jnp.exp(-gamma * distances)
    # cosine: rows scaled to unit norm (zero rows stay zero, as sklearn's normalize).
    norms = jnp.sqrt(jnp.sum(x * x, axis=-1))
    unit = x / jnp.where(norms == 0, 1.0, norms)[:, None]
    return jnp.matmul(unit, unit.T, precision=hi)


def kernel_pca_projection(activations: Any, kernel: str = "sigmoid", gamma: float | None = None,
                          *, degree: int = 3, coef0: float = 1.0) -> jax.Array:
    """Each image's pixels projected on the first kernel principal component.

    pytorch-grad-cam's ``get_2d_projection_kernel``, which calls scikit-learn's
    ``KernelPCA(n_components=1, kernel, gamma).fit_transform`` on the ``(h*w, C)`` pixel matrix
    with each channel's mean removed: the kernel matrix ``K`` (``gamma`` defaults to ``1/C``;
    ``degree=3`` and ``coef0=1`` are scikit-learn's defaults) is double-centred, its top
    eigenvector ``v`` (eigenvalue ``lam``, clipped at 0) is given the sign that makes its
    largest-magnitude entry positive (scikit-learn's ``svd_flip``) and the projection is
    ``v sqrt(lam)``. The eigenvector is computed exactly (``eigh``); scikit-learn uses ARPACK
    for more than 200 pixels, which converges to the same vector.

    Args:
      activations: ``(B, h, w, C)`` activations.
      kernel: one of ``"linear"``, ``"poly"``, ``"rbf"``, ``"sigmoid"``, ``"cosine"``.
      gamma: the kernel coefficient; None for ``1 / C``.
      degree: the polynomial kernel's degree.
      coef0: the polynomial and sigmoid kernels' constant.

    Returns:
      The ``(B, h, w)`` projections.

    Raises:
      ValueError: an unknown kernel.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    activations = as_float_array(activations, "activations", "NHWC")
    activations = jnp.where(jnp.isnan(activations), 0.0, activations)
    batch, *spatial, channels = activations.shape
    gamma = 1.0 / channels if gamma is None else gamma

    def project(pixels: jax.Array) -> jax.Array:
        centred = pixels - jnp.mean(pixels, axis=0, keepdims=True)
        k = _kernel_matrix(centred, kernel, gamma, degree, coef0)
        k = (k - jnp.mean(k, axis=0, keepdims=True) - jnp.mean(k, axis=1, keepdims=True)
             + jnp.mean(k))
        values, vectors = jnp.linalg.eigh(k)
        value, vector = jnp.maximum(values[-1], 0.0), vectors[:, -1]
        vector = vector * jnp.sign(vector[jnp.argmax(jnp.abs(vector))])
        return vector * jnp.sqrt(value)

    projections = jax.vmap(project)(activations.reshape(batch, -1, channels))
    return projections.reshape(batch, *spatial)


def kpcacam(activations: Any, gradients: Any | None = None, *, eigen_smooth: bool = False,
            kernel: str = "sigmoid", gamma: float | None = None, layout: str | None = None
            ) -> jax.Array:
    """KPCA-CAM: the activations projected on their first kernel principal component.

    See :func:`kernel_pca_projection`. Needs no gradients. Unlike Eigen-CAM the sign is fixed
    (scikit-learn's convention: the largest-magnitude entry of the eigenvector is positive).

    Args:
      activations: ``(B, h, w, C)`` activations of the target layer.
      gradients: ignored.
      eigen_smooth: ignored; the method is already a projection.
      kernel: the kernel (default ``"sigmoid"``, as pytorch-grad-cam).
      gamma: the kernel coefficient; None for ``1 / C``.
      layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
        PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as NHWC, an
        ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
      The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
      Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision Models using
      Kernel PCA", IEEE MMSP 2024. https://arxiv.org/abs/2410.00267
    """
    del gradients, eigen_smooth
    return kernel_pca_projection(as_float_array(activations, "activations", layout), kernel,
                                 gamma)


METHOD = register(Method(
    name="kpcacam", kind="activation_gradient", fn=kpcacam,
    summary="first kernel principal component of the activations (no gradients)",
    paper="Karmani et al., MMSP 2024", uses_gradients=False, multi_exit=True,
    class_name="KPCA_CAM", options=("kernel", "gamma")))

"""Finer-CAM: Grad-CAM of a target that contrasts the class with its nearest rivals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcam.methods.layer._gradcam import gradcam
from jaxcam.registry import Method, register
from jaxcam.targets import TargetSpec, finer_weighted_scores

DEFAULT_COMPARISON_CATEGORIES = (1, 2, 3)


def finer_scores(spec: TargetSpec, output: Any, classes: jax.Array | None, *,
                 alpha: float = 1.0,
                 comparison_categories: Sequence[int] = DEFAULT_COMPARISON_CATEGORIES
                 ) -> jax.Array:
    """Finer-CAM's per-image target scores, as pytorch-grad-cam's ``FinerCAM.forward`` builds
    its ``FinerWeightedTarget`` list when it is given no targets.

    The main class is each image's top class (targets None) or the given class (an int or
    array: pytorch-grad-cam's ``target_idx``). The other classes are sorted by ``|logit -
    main logit|`` (on the output without gradient), and those at the positions
    ``comparison_categories`` of that order (1 = the most similar other class) are compared:
    see :func:`jaxcam.targets.finer_weighted_scores`. A callable target is used as it is (as
    pytorch-grad-cam uses explicitly given targets).

    Args:
      spec: the user's target spec.
      output: ``(B, K)`` logits.
      classes: ``(B,)`` main classes for an 'index' spec.
      alpha: the comparison strength.
      comparison_categories: positions in the similarity order of the compared classes
        (positions ``>= K`` are dropped, as pytorch-grad-cam does).

    Returns:
      ``(B,)`` scores.
    """
    if spec.kind == "callable":
        return spec.fn(output)
    detached = jax.lax.stop_gradient(output)
    main_logit = (jnp.max(detached, axis=-1) if spec.kind == "argmax"
                  else jnp.take_along_axis(detached, classes[:, None].astype(jnp.int32), -1)[:, 0])
    order = jnp.argsort(jnp.abs(detached - main_logit[:, None]), axis=-1)
    positions = [int(c) for c in comparison_categories if int(c) < output.shape[-1]]
    if not positions:
        raise ValueError("Finer-CAM needs at least one comparison class: the model has "
                         f"{output.shape[-1]} classes and comparison_categories is "
                         f"{tuple(comparison_categories)}")
    return finer_weighted_scores(output, order[:, 0], order[:, jnp.asarray(positions)], alpha)


def finercam(activations: Any, gradients: Any, *, eigen_smooth: bool = False,
             alpha: float = 1.0,
             comparison_categories: Sequence[int] = DEFAULT_COMPARISON_CATEGORIES,
             layout: str | None = None) -> jax.Array:
    """Finer-CAM's maths: Grad-CAM (pytorch-grad-cam's default ``base_method``) of the gradients
    of :func:`finer_scores`, which the pipeline computes in place of the targets' scores.

    Args:
      activations: ``(B, h, w, C)`` activations of the target layer.
      gradients: ``(B, h, w, C)`` gradients of the Finer-CAM score w.r.t. them.
      eigen_smooth: as Grad-CAM's.
      alpha: used by :func:`finer_scores`.
      comparison_categories: used by :func:`finer_scores`.
      layout: ``"NHWC"``, ``"NCHW"`` (channels-first ``(B, C, h, w)``, e.g. hooked from
        PyTorch) or None (default): a ``torch.Tensor`` read as NCHW, another array as NHWC, an
        ambiguous shape refused (:data:`jaxcam.methods.layer.LAYOUT_RULE`).

    Returns:
      The ``(B, h, w)`` raw map, before ReLU, normalisation and resize.

    References:
      Zhang et al., "Finer-CAM: Spotting the Difference Reveals Finer Details for Visual
      Explanation", CVPR 2025. https://arxiv.org/abs/2501.11309
    """
    del alpha, comparison_categories
    return gradcam(activations, gradients, eigen_smooth=eigen_smooth, layout=layout)


METHOD = register(Method(
    name="finercam", kind="activation_gradient", fn=finercam,
    summary="Grad-CAM of the class's logit minus its most similar classes' (weighted)",
    paper="Zhang et al., CVPR 2025", scores=finer_scores, multi_exit=True,
    class_name="FinerCAM",
    options=("alpha", "comparison_categories")))

"""The jitted multi-exit computation: every exit from one forward and one backward pass.

Each exit k's score depends only on its own classifier input ``f_k``, so the gradient of the sum
of all exits' scores with respect to ``(f_1, ..., f_K)`` holds each exit's own gradient; and since
the ``f_k`` are the variables of differentiation, the backward pass runs through the classifier
heads only, never the backbone.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcam._layout import image_size
from jaxcam._pipeline import Options
from jaxcam.extend import fast_strided_conv_grads
from jaxcam.postprocess import postprocess
from jaxcam.targets import TargetSpec, target_scores

__all__ = ["explain_exits_core", "explain_exits_jit"]


def explain_exits_core(adapter: Any, exits: tuple[int, ...], opts: Options, spec: TargetSpec,
                       state: Any, images: jax.Array, classes: jax.Array | None
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The whole computation of one explain_exits call (jitted by the caller).

    Args:
      adapter: the multi-exit model's adapter (static; ``adapter.model(state)`` is the model;
        a :class:`jaxcam._layout.MapAdapter` also gives the images' layout and each exit
        feature's map, ``to_map``).
      exits: the explained exits (static).
      opts: the options (static; an activation-gradient method).
      spec: the target spec (static).
      state: the adapter's state (the weights).
      images: ``(B, H, W, C)`` images, or ``(B, C, H, W)`` under ``layout="NCHW"`` (the model
        takes them as they are).
      classes: ``(K, B)`` classes for an 'index' spec, else None.

    Returns:
      (K, B, H, W) maps, (K, B, classes) logits and ``all(isfinite(images))``.
    """
    model = adapter.model(state)
    finite = jnp.all(jnp.isfinite(images))
    features = model.exit_features(images)
    selected = [features[k] for k in exits]
    method, options = opts.method, dict(opts.method_options)

    def total_score(selected: list[jax.Array]) -> tuple[jax.Array, list[jax.Array]]:
        logits = [model.classify(k, f) for k, f in zip(exits, selected, strict=True)]
        scores = [target_scores(spec, out, None if classes is None else classes[i])
                  for i, out in enumerate(logits)]
        return sum(jnp.sum(s) for s in scores), logits

    if not method.uses_gradients:
        grads = [None] * len(selected)
        logits = [model.classify(k, f) for k, f in zip(exits, selected, strict=True)]
    else:
        # The heads' strided convolutions get a faster input gradient on XLA:CPU (see
        # jaxcam.extend.conv_grad); the result is the same.
        grads, logits = jax.grad(fast_strided_conv_grads(total_score), has_aux=True)(selected)
    size = image_size(images.shape, getattr(adapter, "layout", "NHWC"))
    to_map = getattr(adapter, "to_map", None)
    if to_map is not None:  # the exit features as (B, h, w, C) maps, gradients through them
        batch = images.shape[0]
        names = [f"exit {k}" for k in exits]
        grads = [None if g is None else adapter.map_gradient(a, g, n, batch)
                 for a, g, n in zip(selected, grads, names, strict=True)]
        selected = [to_map(a, n, batch) for a, n in zip(selected, names, strict=True)]
    maps = [postprocess([method.fn(a, g, eigen_smooth=opts.eigen_smooth, **options)],
                        size, relu=opts.relu, normalize=opts.normalize, resize=opts.resize)
            for a, g in zip(selected, grads, strict=True)]
    return jnp.stack(maps), jnp.stack(logits), finite


# Shared by every explain_exits call: a model of the same structure compiles once.
explain_exits_jit = jax.jit(explain_exits_core, static_argnums=(0, 1, 2, 3))

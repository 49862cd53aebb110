"""The jitted multi-exit computation: every exit from one forward and one backward pass.

The adapter (:class:`jaxcam.adapters.exits.ExitAdapter`) runs the model once with each explained
exit's classifier head fed ``f_k + delta_k`` and the rest of the network ``f_k``; score_k
depends on ``delta_k`` through head k alone, so the gradient of the sum of all exits' scores
with respect to ``(delta_1, ..., delta_K)`` holds each exit's own gradient ``d score_k / d f_k``,
and the backward pass runs through the heads only, never the backbone.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcam._layout import image_size
from jaxcam._pipeline import Options
from jaxcam.extend.depthwise import fast_cpu_convs
from jaxcam.methods.layer._common import maps_layout
from jaxcam.postprocess import postprocess
from jaxcam.targets import TargetSpec, target_scores

__all__ = ["explain_exits_core", "explain_exits_jit"]


def explain_exits_core(adapter: Any, exits: tuple[int, ...], opts: Options, spec: TargetSpec,
                       state: Any, images: jax.Array, classes: jax.Array | None
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The whole computation of one explain_exits call (jitted by the caller).

    Args:
      adapter: the multi-exit model's adapter (static; a
        :class:`jaxcam.adapters.exits.ExitAdapter`, whose ``exit_forward`` runs the model;
        seen through a :class:`jaxcam._layout.MapAdapter`, which gives the images' layout and
        each exit feature's map, ``to_map``).
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
    finite = jnp.all(jnp.isfinite(images))
    method, options = opts.method, dict(opts.method_options)

    def exit_scores(logits: list[jax.Array]) -> jax.Array:
        # Each exit's own scores: the targets', or the method's (Finer-CAM compares each
        # exit's target with that exit's most similar classes).
        def scores(out: jax.Array, exit_classes: jax.Array | None) -> jax.Array:
            if method.scores is None:
                return target_scores(spec, out, exit_classes)
            return method.scores(spec, out, exit_classes, **options)

        return sum(jnp.sum(scores(out, None if classes is None else classes[i]))
                   for i, out in enumerate(logits))

    extras: list[dict[str, Any]] = []
    batch = images.shape[0]
    to_map = getattr(adapter, "to_map", None)
    names = [adapter.exit_label(k) for k in exits] if to_map is not None else []
    if not method.uses_gradients:
        selected, logits = fast_cpu_convs(lambda: adapter.exit_forward(state, images, exits))()
        grads: list[Any] = [None] * len(selected)
    else:
        shapes = jax.eval_shape(lambda: adapter.exit_forward(state, images, exits)[0])
        deltas = [jnp.zeros(s.shape, s.dtype) for s in shapes]

        def total_score(deltas: list[jax.Array]) -> tuple[jax.Array, tuple[list, list]]:
            selected, logits = adapter.exit_forward(state, images, exits, deltas)
            return exit_scores(logits), (selected, logits)

        # On XLA:CPU, depthwise convolutions as multiply-adds and the heads' strided
        # convolutions with a faster input gradient (jaxcam.extend.depthwise, .conv_grad): the
        # same result up to rounding, a fraction of the time.
        grads, (selected, logits) = jax.grad(fast_cpu_convs(total_score),
                                             has_aux=True)(deltas)
        if method.uses_hvp:
            # Score k depends on delta_k alone (through head k), so the Hessian is block
            # diagonal over the exits: one forward-over-reverse pass along (f_1, ..., f_K)
            # gives every exit's own H_k f_k. Without the strided-conv rule, a custom_vjp
            # that forward mode cannot differentiate.
            grad_fn = jax.grad(lambda d: fast_cpu_convs(total_score, strided_grads=False)(d)[0])
            hvps = jax.jvp(grad_fn, (deltas,), (_hvp_tangents(selected, to_map, names, batch),))[1]
            extras = [{"hvp": h} for h in hvps]
    size = image_size(images.shape, getattr(adapter, "layout", "NHWC"))
    if to_map is not None:  # the exit features as (B, h, w, C) maps, gradients through them
        if getattr(adapter, "heads", None) is not None and adapter.transform is None:
            for a, name in zip(selected, names, strict=True):
                _check_head_input(a, name, batch, adapter.layout)
        grads = [None if g is None else adapter.map_gradient(a, g, n, batch)
                 for a, g, n in zip(selected, grads, names, strict=True)]
        # A Hessian-vector product is the derivative of a gradient, and goes through the map
        # the same way.
        if extras:
            extras = [{k: adapter.map_gradient(a, v, n, batch) for k, v in e.items()}
                      for a, e, n in zip(selected, extras, names, strict=True)]
        selected = [to_map(a, n, batch) for a, n in zip(selected, names, strict=True)]
    extras = extras or [{} for _ in selected]
    # The maps are (B, h, w, C) by construction: the methods read them as such.
    with maps_layout("NHWC"):
        maps = [postprocess([method.fn(a, g, eigen_smooth=opts.eigen_smooth, **e, **options)],
                            size, relu=opts.relu, normalize=opts.normalize, resize=opts.resize)
                for a, g, e in zip(selected, grads, extras, strict=True)]
    sizes = sorted({tuple(m.shape[1:]) for m in maps})
    if len(sizes) > 1:  # only without resize
        raise ValueError(f"with resize=False the exits' maps keep their own sizes, here "
                         f"{', '.join('x'.join(map(str, s)) for s in sizes)}, which cannot be "
                         f"stacked; explain the exits of one size together (exits=[...]) or "
                         f"keep resize=True")
    return jnp.stack(maps), jnp.stack(logits), finite


def _hvp_tangents(features: list[jax.Array], to_map: Any, names: list[str], batch: int
                  ) -> list[jax.Array]:
    """The directions of ShapleyCAM's Hessian-vector products, in the features' space.

    The Hessian is taken with respect to each exit's map ``m = T(f)`` along ``m`` itself, as
    :func:`jaxcam.explain` does (its edits reach the features as ``f + J^T delta``): for the
    features that is the direction ``J^T m``. For an identity view that is ``f``; for a
    transform that drops tokens (a ViT's class token) the dropped ones get no direction, so
    the map's Hessian term does not mix in the class token's.
    """
    if to_map is None:
        return list(features)
    tangents = []
    for f, name in zip(features, names, strict=True):
        as_map, pull_back = jax.vjp(lambda t, name=name: to_map(t, name, batch), f)
        tangents.append(pull_back(as_map)[0])
    return tangents


def _check_head_input(features: jax.Array, name: str, batch: int, layout: str) -> None:
    """Refuse a named head whose input is no feature map (and no reshape_transform given),
    naming the fix; tokens are left to :meth:`jaxcam._layout.MapAdapter.to_map`, whose message
    names the transform to pass."""
    shape = tuple(features.shape)
    if (len(shape) == 4 and shape[0] == batch) or len(shape) == 3:
        return
    order = "(B, h, w, C)" if layout == "NHWC" else "(B, C, h, w)"
    raise ValueError(
        f"{name} takes {shape}, not a {order} feature map of the batch of {batch}: name as the "
        f"exit's head the module / layer whose input is the feature map (e.g. the head block "
        f"that starts with the pooling, not its final linear layer), or a (first, last) pair "
        f"of them, or pass a reshape_transform giving the map")


# Shared by every explain_exits call: a model of the same structure compiles once.
explain_exits_jit = jax.jit(explain_exits_core, static_argnums=(0, 1, 2, 3))

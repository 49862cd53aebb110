"""``jaxcam.explain_exits``: every exit of a multi-exit network from one forward and one backward.

Each exit k's score depends only on its own classifier input ``f_k``, so the gradient of the sum
of all exits' scores with respect to ``(f_1, ..., f_K)`` holds each exit's own gradient; and since
the ``f_k`` are the variables of differentiation, the backward pass runs through the classifier
heads only, never the backbone.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._explain import Options, check_images, check_method, finish_maps
from jaxcam._fast_conv_grad import fast_strided_conv_grads
from jaxcam.methods import ACTIVATION_GRADIENT_METHODS, ACTIVATION_ONLY
from jaxcam.targets import TargetSpec, check_target_range, prepare_targets, target_scores

__all__ = ["explain_exits", "EXIT_METHODS"]

EXIT_METHODS = tuple(ACTIVATION_GRADIENT_METHODS)


def _split(model: Any) -> tuple[Any, Any]:
    """(static, state) so weights are arguments of the jitted function, not constants."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        nnx = None
    if nnx is not None and isinstance(model, nnx.Module):
        return nnx.split(model)
    return model, None


def _merge(static: Any, state: Any) -> Any:
    if state is None:
        return static
    from flax import nnx

    model = nnx.merge(static, state)
    model.eval()
    return model


def _prepare_exit_targets(targets: Any, n_exits: int, batch: int
                          ) -> tuple[TargetSpec, jax.Array | None]:
    """Targets for every exit: None/int/(B,)/callable as for ``explain``, or (K, B) classes."""
    if (isinstance(targets, (list, tuple)) and targets
            and all(isinstance(t, (list, tuple, np.ndarray, jax.Array)) for t in targets)):
        targets = np.asarray(targets)  # nested lists: (K, B) classes
    if hasattr(targets, "ndim") and targets.ndim == 2:
        if tuple(targets.shape) != (n_exits, batch):
            raise ValueError(f"per-exit targets have shape {tuple(targets.shape)}; expected "
                             f"({n_exits}, {batch}) for {n_exits} exits and {batch} images")
        rows = targets if isinstance(targets, jax.core.Tracer) else np.asarray(targets)
        specs = [prepare_targets(t, batch) for t in rows]
        return specs[0][0], jnp.stack([c for _, c in specs])
    spec, classes = prepare_targets(targets, batch)
    if classes is not None:
        classes = jnp.broadcast_to(classes, (n_exits, batch))
    return spec, classes


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _explain_exits_jit(static: Any, exits: tuple[int, ...], opts: Options, spec: TargetSpec,
                       state: Any, images: jax.Array, classes: jax.Array | None):
    model = _merge(static, state)
    finite = jnp.all(jnp.isfinite(images))
    features = model.exit_features(images)
    selected = [features[k] for k in exits]
    method = ACTIVATION_GRADIENT_METHODS[opts.method]

    def total_score(selected: list[jax.Array]):
        logits = [model.classify(k, f) for k, f in zip(exits, selected, strict=True)]
        scores = [target_scores(spec, out, None if classes is None else classes[i])
                  for i, out in enumerate(logits)]
        return sum(jnp.sum(s) for s in scores), logits

    if opts.method in ACTIVATION_ONLY:
        grads = [None] * len(selected)
        logits = [model.classify(k, f) for k, f in zip(exits, selected, strict=True)]
    else:
        # The heads' strided convolutions get a faster input gradient on XLA:CPU (see
        # jaxcam._fast_conv_grad); the result is the same.
        grads, logits = jax.grad(fast_strided_conv_grads(total_score), has_aux=True)(selected)
    maps = [finish_maps([method(a, g, eigen_smooth=opts.eigen_smooth)], images.shape[1:3], opts)
            for a, g in zip(selected, grads, strict=True)]
    return jnp.stack(maps), jnp.stack(logits), finite


def explain_exits(model: Any, images: Any, *, targets: Any = None, method: str = "gradcam",
                  exits: Sequence[int] | None = None, relu: bool = True, normalize: bool = True,
                  resize: bool = True, eigen_smooth: bool = False, check_finite: bool = True,
                  return_logits: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Class activation maps of every requested exit of a multi-exit model, in one pass.

    Works for any model exposing ``exit_features(x) -> [f_1, ..., f_K]`` (each exit's classifier
    input, NHWC) and ``classify(k, f_k) -> logits`` (e.g. ``msdnet_flax.MSDNet``); an NNX model is
    evaluated in eval mode on a copy. Exit k's map explains ``classify(k, .)`` at ``f_k``.

    Args:
      model: the multi-exit model.
      images: (B, H, W, C) float images.
      targets: None (each exit's own top class), an int or (B,) classes for every exit, (K, B)
        classes per exit, or a callable mapping one exit's logits to (B,) scores.
      method: a gradient-based CAM method (:data:`EXIT_METHODS`).
      exits: which exits (default all), as indices.
      relu, normalize, resize, eigen_smooth: as in :func:`jaxcam.explain`.
      check_finite: raise if the images hold NaN or inf.
      return_logits: also return the (K, B, num_classes) logits of the requested exits.

    Returns:
      (K, B, H, W) float32 maps (and the logits if asked).
    """
    images = check_images(images)
    name = check_method(method)
    if name not in EXIT_METHODS:
        raise ValueError(f"explain_exits supports the activation-gradient methods "
                         f"{', '.join(EXIT_METHODS)}; got {name!r} (use jaxcam.explain for it)")
    for attr in ("exit_features", "classify"):
        if not callable(getattr(model, attr, None)):
            raise TypeError(f"explain_exits needs a model with exit_features(x) and "
                            f"classify(k, features); {type(model).__name__} has no {attr}")
    static, state = _split(model)
    n_exits = getattr(model, "num_exits", None)
    if n_exits is None:  # trace once, abstractly, to count the exits
        n_exits = len(jax.eval_shape(lambda x: _merge(static, state).exit_features(x), images))
    if exits is None:
        exits = tuple(range(n_exits))
    exits = tuple(int(k) for k in exits)
    if any(not 0 <= k < n_exits for k in exits):
        raise ValueError(f"exits {list(exits)} out of range: the model has exits 0..{n_exits - 1}")
    if not exits:
        raise ValueError("exits is empty; pass None for all exits or a list of exit indices")
    spec, classes = _prepare_exit_targets(targets, len(exits), images.shape[0])
    opts = Options(method=name, relu=relu, normalize=normalize, resize=resize,
                   eigen_smooth=eigen_smooth)
    maps, logits, finite = _explain_exits_jit(static, exits, opts, spec, state, images, classes)
    # Under an outer jax.jit or jax.vmap, traced values cannot be checked on the host.
    if not isinstance(classes, jax.core.Tracer):
        check_target_range(classes, logits.shape[-1])
    if check_finite and not isinstance(finite, jax.core.Tracer) and not bool(finite):
        raise ValueError("images contain NaN or infinite values; explanations of them would "
                         "be NaN. Clean the input (e.g. jnp.nan_to_num) first")
    return (maps, logits) if return_logits else maps

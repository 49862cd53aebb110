"""``jaxcam.explain_exits``: every exit of a multi-exit network from one forward and one backward.

Each exit k's score depends only on its own classifier input ``f_k``, so the gradient of the sum
of all exits' scores with respect to ``(f_1, ..., f_K)`` holds each exit's own gradient; and since
the ``f_k`` are the variables of differentiation, the backward pass runs through the classifier
heads only, never the backbone.

:class:`ExitExplainer` does the per-model work (split, checks, exit count) once, for callers that
explain many batches with the same weights; ``explain_exits`` is one such object used once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcam._explain import Options, check_images, check_method, finish_maps
from jaxcam._prepared import (
    Frozen,
    check_after_dispatch,
    check_finite_on_host,
    is_presplit,
    new_weights,
    split_model,
)
from jaxcam.extend import fast_strided_conv_grads
from jaxcam.methods import ACTIVATION_GRADIENT_METHODS, ACTIVATION_ONLY
from jaxcam.targets import TargetSpec, prepare_targets, target_scores

__all__ = ["explain_exits", "ExitExplainer", "EXIT_METHODS"]

EXIT_METHODS = tuple(ACTIVATION_GRADIENT_METHODS)


def _split(model: Any) -> tuple[Any, Any]:
    """(static, weights): an NNX model's :class:`Frozen` structure and its weights' leaves, so
    weights are arguments of the jitted function, not constants; any other model is static."""
    if isinstance(model, nnx.Module) or is_presplit(model):
        return split_model(model)
    return model, None


def _merge(static: Any, leaves: Any) -> Any:
    return static.merge(leaves) if isinstance(static, Frozen) else static


def _prepare_exit_targets(targets: Any, n_exits: int, batch: int
                          ) -> tuple[TargetSpec, np.ndarray | jax.Array | None]:
    """Targets for every exit: None/int/(B,)/callable as for ``explain``, or (K, B) classes.

    The (K, B) classes stay NumPy when they came from the host (see ``prepare_targets``).
    """
    if (isinstance(targets, (list, tuple)) and targets
            and all(isinstance(t, (list, tuple, np.ndarray, jax.Array)) for t in targets)):
        targets = np.asarray(targets)  # nested lists: (K, B) classes
    if hasattr(targets, "ndim") and targets.ndim == 2:
        if tuple(targets.shape) != (n_exits, batch):
            raise ValueError(f"per-exit targets have shape {tuple(targets.shape)}; expected "
                             f"({n_exits}, {batch}) for {n_exits} exits and {batch} images")
        rows = targets if isinstance(targets, jax.core.Tracer) else np.asarray(targets)
        specs = [prepare_targets(t, batch) for t in rows]
        stack = np.stack if isinstance(rows, np.ndarray) else jnp.stack
        return specs[0][0], stack([c for _, c in specs])
    spec, classes = prepare_targets(targets, batch)
    if classes is not None:
        broadcast = np.broadcast_to if isinstance(classes, np.ndarray) else jnp.broadcast_to
        classes = broadcast(classes, (n_exits, batch))
    return spec, classes


def _explain_exits_core(static: Any, exits: tuple[int, ...], opts: Options, spec: TargetSpec,
                       leaves: Any, images: jax.Array, classes: jax.Array | None
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(K, B, H, W) maps, (K, B, classes) logits and ``all(isfinite(images))``."""
    model = _merge(static, leaves)
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
        # jaxcam.extend.conv_grad); the result is the same.
        grads, logits = jax.grad(fast_strided_conv_grads(total_score), has_aux=True)(selected)
    maps = [finish_maps([method(a, g, eigen_smooth=opts.eigen_smooth)], images.shape[1:3], opts)
            for a, g in zip(selected, grads, strict=True)]
    return jnp.stack(maps), jnp.stack(logits), finite


# Shared by every explain_exits call: a model of the same structure compiles once.
_explain_exits_jit = jax.jit(_explain_exits_core, static_argnums=(0, 1, 2, 3))


class ExitExplainer:
    """Every exit's class activation maps for one multi-exit model, prepared once, called often.

    The model is split into its structure and a snapshot of its weights here, once; each call
    then only checks its inputs and runs the jitted computation, which ``jax.jit`` compiles once
    per image shape (and shares with :func:`explain_exits` and other explainers of a model of
    the same structure). Later changes to the model's weights (training in place) are not seen
    until :meth:`update` is called with the model or its new state.

    Example::

        explainer = jaxcam.ExitExplainer(msdnet)          # split and check once
        for images, labels in batches:
            maps = explainer(images, targets=labels)     # (K, B, H, W)
        explainer.update(msdnet)                         # after training it further

    Args:
      model: the multi-exit model (``exit_features(x) -> [f_1, ..., f_K]`` and
        ``classify(k, f_k) -> logits``, e.g. ``msdnet_flax.MSDNet``), or an NNX model's
        ``nnx.split(model)`` pair. An NNX model is evaluated in eval mode on a copy.
      method: a gradient-based CAM method (:data:`EXIT_METHODS`).
      exits: which exits (default all), as indices.
      relu, normalize, resize, eigen_smooth: as in :func:`jaxcam.explain`.
      check_finite: raise if the images hold NaN or inf. NumPy images are checked on the host
        before the call; a ``jax.Array``'s check is computed with the maps and read when the call
        returns (one scalar: the call then waits for its result). Pass False to keep a call
        with device images fully asynchronous.

    Raises:
      ValueError, TypeError: an unsupported method or model, or exits out of range.
    """

    def __init__(self, model: Any, *, method: str = "gradcam",
                 exits: Sequence[int] | None = None, relu: bool = True, normalize: bool = True,
                 resize: bool = True, eigen_smooth: bool = False, check_finite: bool = True):
        name = check_method(method)
        if name not in EXIT_METHODS:
            raise ValueError(f"explain_exits supports the activation-gradient methods "
                             f"{', '.join(EXIT_METHODS)}; got {name!r} (use jaxcam.explain "
                             "for it)")
        # An nnx.split pair is merged once here, for the checks and the exit count.
        probe = nnx.merge(*model) if is_presplit(model) else model
        for attr in ("exit_features", "classify"):
            if not callable(getattr(probe, attr, None)):
                raise TypeError(f"explain_exits needs a model with exit_features(x) and "
                                f"classify(k, features); {type(probe).__name__} has no {attr}")
        self._static, self._leaves = _split(model)
        n_exits = getattr(probe, "num_exits", None)
        self._n_exits: int | None = None
        self._requested = None if exits is None else tuple(int(k) for k in exits)
        if self._requested is not None and not self._requested:
            raise ValueError("exits is empty; pass None for all exits or a list of exit indices")
        if n_exits is not None:
            self._set_exit_count(int(n_exits))
        self._opts = Options(method=name, relu=relu, normalize=normalize, resize=resize,
                             eigen_smooth=eigen_smooth)
        self.check_finite = check_finite
        # Its own jitted function, over a function object of its own (jax.jit's C++ cache is
        # keyed by the wrapped function, so a second jit of _explain_core would share the
        # module's): a call's static arguments are compared with the cached call's, and a model
        # structure equal to but not the same object as a cached one costs a full graph
        # comparison (25 ms for cifar10_anytime) on every call. Binding the structure here
        # leaves only cheap static arguments (options, target spec) to compare.
        self._jitted = jax.jit(functools.partial(_explain_exits_core, self._static),
                               static_argnums=(0, 1, 2))

    def _set_exit_count(self, n_exits: int) -> None:
        requested = self._requested
        if requested is not None and any(not 0 <= k < n_exits for k in requested):
            raise ValueError(f"exits {list(requested)} out of range: the model has exits "
                             f"0..{n_exits - 1}")
        self._n_exits = n_exits

    @property
    def exits(self) -> tuple[int, ...] | None:
        """The explained exits' indices (None until known, for a model without ``num_exits``
        that has not been called yet)."""
        if self._n_exits is None:
            return None
        return self._requested if self._requested is not None else tuple(range(self._n_exits))

    def update(self, model: Any) -> None:
        """Take new weights: the model again (trained further), its ``nnx.split`` pair or its
        ``nnx.State``, of the structure this explainer was built for.

        Raises:
          ValueError: a model of another structure (build a new explainer for it).
          TypeError: the explainer's model is not an NNX model (it holds no weights).
        """
        if not isinstance(self._static, Frozen):
            raise TypeError("this explainer's model is not a Flax NNX model: it holds no weights "
                            "of its own to update; build a new ExitExplainer instead")
        self._leaves = new_weights(self._static, model)

    def __call__(self, images: Any, targets: Any = None, *, return_logits: bool = False
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Maps of the requested exits.

        Args:
          images: (B, H, W, C) float images (NumPy, JAX or a DLPack tensor).
          targets: None (each exit's own top class), an int or (B,) classes for every exit,
            (K, B) classes per exit, or a callable mapping one exit's logits to (B,) scores.
          return_logits: also return the (K, B, num_classes) logits of the requested exits.

        Returns:
          (K, B, H, W) float32 maps (and the logits if asked).
        """
        return self._run(self._jitted, images, targets, return_logits)

    def _run(self, jitted: Callable[..., Any], images: Any, targets: Any, return_logits: bool
             ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """One call through ``jitted`` (this explainer's own, or ``explain_exits``' shared one),
        which takes the arguments of :func:`_explain_exits_core` after the model structure."""
        raw = images
        images = check_images(images)  # first: its errors say more than a NaN check's would
        finite_checked = check_finite_on_host(raw, self.check_finite)
        if self._n_exits is None:  # trace once, abstractly, to count the exits
            static, leaves = self._static, self._leaves
            self._set_exit_count(len(jax.eval_shape(
                lambda x: _merge(static, leaves).exit_features(x), images)))
        exits = self.exits
        spec, classes = _prepare_exit_targets(targets, len(exits), images.shape[0])
        maps, logits, finite = jitted(exits, self._opts, spec, self._leaves, images, classes)
        check_after_dispatch(classes, logits.shape[-1], finite, finite_checked)
        return (maps, logits) if return_logits else maps


def explain_exits(model: Any, images: Any, *, targets: Any = None, method: str = "gradcam",
                  exits: Sequence[int] | None = None, relu: bool = True, normalize: bool = True,
                  resize: bool = True, eigen_smooth: bool = False, check_finite: bool = True,
                  return_logits: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Class activation maps of every requested exit of a multi-exit model, in one pass.

    Works for any model exposing ``exit_features(x) -> [f_1, ..., f_K]`` (each exit's classifier
    input, NHWC) and ``classify(k, f_k) -> logits`` (e.g. ``msdnet_flax.MSDNet``); an NNX model is
    evaluated in eval mode on a copy. Exit k's map explains ``classify(k, .)`` at ``f_k``.

    Each call splits the model anew (about 100 ms for MSD-Net's cifar10_anytime); to explain
    many batches with the same weights, build a :class:`ExitExplainer` once and call it.

    Args:
      model: the multi-exit model, or an NNX model's ``nnx.split`` pair.
      images: (B, H, W, C) float images.
      targets: None (each exit's own top class), an int or (B,) classes for every exit, (K, B)
        classes per exit, or a callable mapping one exit's logits to (B,) scores.
      method: a gradient-based CAM method (:data:`EXIT_METHODS`).
      exits: which exits (default all), as indices.
      relu, normalize, resize, eigen_smooth: as in :func:`jaxcam.explain`.
      check_finite: raise if the images hold NaN or inf (see :class:`ExitExplainer`).
      return_logits: also return the (K, B, num_classes) logits of the requested exits.

    Returns:
      (K, B, H, W) float32 maps (and the logits if asked).
    """
    explainer = ExitExplainer(model, method=method, exits=exits, relu=relu, normalize=normalize,
                              resize=resize, eigen_smooth=eigen_smooth,
                              check_finite=check_finite)
    shared = functools.partial(_explain_exits_jit, explainer._static)
    return explainer._run(shared, images, targets, return_logits)

"""``jaxcam.explain`` and ``jaxcam.explain_exits``: one jitted function from images to maps.

:class:`Explainer` and :class:`ExitExplainer` do the per-model work (preparing the model's
adapter: splitting, layer checks) once, for callers that explain many batches with the same
weights; ``explain`` and ``explain_exits`` are one such object used once. Both share one
prepared-explainer base (:class:`jaxcam._prepared.PreparedExplainer`); the computation itself is
in :mod:`jaxcam._pipeline` (dispatched on the registered method's kind) and
:mod:`jaxcam._exit_pipeline`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxcam import registry
from jaxcam._checks import check_keywords, keyword_names, prepare_exit_targets, strict_keywords
from jaxcam._exit_pipeline import explain_exits_core, explain_exits_jit
from jaxcam._layout import check_image_layout, check_output_shape, image_size, to_nhwc, with_view
from jaxcam._pipeline import Options, explain_core, explain_jit, make_options
from jaxcam._prepared import PreparedExplainer
from jaxcam.adapters import (
    LayerPath,
    haiku_transformed_error,
    is_function_pair,
    is_haiku_transformed,
    is_presplit,
    make_adapter,
    make_exit_adapter,
    normalize_layer_path,
)
from jaxcam.adapters._objects import resolve_layers
from jaxcam.targets import prepare_targets

__all__ = ["ExitExplainer", "Explainer", "Options", "explain", "explain_exits"]


def _target_layers(model: Any, target_layer: Any, method: registry.Method) -> list[LayerPath]:
    """The tapped layers' paths for ``method``, or a clear error."""
    # Layer objects (model.layer3, a Keras layer, an NNX submodule) by their names.
    target_layer = resolve_layers(model, target_layer)
    if is_haiku_transformed(model):  # before the layer checks: the model is the mistake
        raise haiku_transformed_error()
    pair = is_function_pair(model) and not is_presplit(model)
    if pair and target_layer is not None:
        raise ValueError("a (features_fn, head_fn) pair has one tap point, the output of "
                         "features_fn, so target_layer is not used; pass target_layer=None "
                         f"(got {target_layer!r})")
    if target_layer is None:
        layers: list[LayerPath] = []
        if method.needs_layer and not pair:
            raise ValueError(f"method {method.name!r} needs target_layer: the module path of "
                             "the feature map to explain (e.g. target_layer='blocks/3')")
    elif isinstance(target_layer, list):
        if not target_layer:
            raise ValueError("target_layer is an empty list; name at least one layer")
        # A layer listed twice is explained once (pytorch-grad-cam's mean of two equal maps).
        layers = list(dict.fromkeys(normalize_layer_path(layer) for layer in target_layer))
    else:
        layers = [normalize_layer_path(target_layer)]
    return layers if method.needs_layer or pair else []


def _own_jit(core: Callable[..., Any], adapter: Any, n_static: int) -> Callable[..., Any]:
    """A jitted ``core`` with ``adapter`` bound, over a function object of its own.

    jax.jit's C++ cache is keyed by the wrapped function, so a second jit of ``core`` would share
    the module's: a call's static arguments are compared with the cached call's, and a model
    structure equal to but not the same object as a cached one costs a full graph comparison
    (25 ms for cifar10_anytime) on every call. Binding the structure here leaves only cheap
    static arguments (options, target spec) to compare.
    """
    return jax.jit(functools.partial(core, adapter), static_argnums=tuple(range(n_static)))


class Explainer(PreparedExplainer):
    """Class activation maps of one model at one layer, prepared once, called often.

    The model is split into its structure and a snapshot of its weights, and the layers are
    checked, here, once; each call then only checks its inputs and runs the jitted computation,
    which ``jax.jit`` compiles once per image shape (and shares with :func:`explain` and other
    explainers of a model of the same structure). Later changes to the model's weights
    (training in place) are not seen until :meth:`update` is called.

    Example::

        explainer = jaxcam.Explainer(model, target_layer="blocks/3")
        for images, labels in batches:
            maps = explainer(images, targets=labels)     # (B, H, W)

    Args:
      model, target_layer, method, variables, relu, normalize, resize, eigen_smooth, aug_smooth,
        output_index, layout, reshape_transform, **method_options: as for :func:`explain`;
        ``model`` may also be an NNX model's ``nnx.split`` pair.
      check_finite: raise if the images hold NaN or inf. NumPy images are checked on the host
        before the call; a ``jax.Array``'s check is computed with the maps and read when the call
        returns (one scalar: the call then waits for its result). Pass False to keep a call
        with device images fully asynchronous.

    Raises:
      ValueError, TypeError: an unknown method, option, keyword or layer, or a model of an
        unsupported kind.
    """

    def __init__(self, model: Any, *, target_layer: Any = None, method: str = "gradcam",
                 variables: Any = None, relu: bool = True, normalize: bool = True,
                 resize: bool = True, eigen_smooth: bool = False, aug_smooth: bool = False,
                 check_finite: bool = True, output_index: int | None = None,
                 layout: str | None = None, reshape_transform: Callable[..., Any] | None = None,
                 **method_options: Any):
        record = registry.get(method)
        if {"targets", "target", "images", "key"} & set(method_options):
            raise TypeError("Explainer() takes the model and its options; the images, targets "
                            "and key go to each call: explainer(images, targets, key=...)")
        check_keywords("Explainer()", method_options, _EXPLAINER_KEYWORDS, record.options,
                       f"options of method {record.name!r}")
        self._opts = make_options(record, method_options, relu=relu, normalize=normalize,
                                  resize=resize, eigen_smooth=eigen_smooth,
                                  aug_smooth=aug_smooth, output_index=output_index)
        layers = _target_layers(model, target_layer, record)
        adapter, state = make_adapter(model, layers, variables)
        adapter, self._explicit_layout = with_view(adapter, layout, reshape_transform)
        super().__init__(adapter, state, check_finite)
        self._resized = record.kind == "input" or resize
        self._jitted = _own_jit(explain_core, self._adapter, 2)

    @property
    def layout(self) -> str:
        """The images' layout, ``"NHWC"`` or ``"NCHW"``."""
        return self._adapter.layout

    @strict_keywords
    def __call__(self, images: Any, targets: Any = None, *, key: jax.Array | None = None
                 ) -> jax.Array:
        """Maps of a batch of images.

        Args:
          images: (B, H, W, C) float images (NumPy, JAX or a DLPack tensor); (B, C, H, W) for
            ``layout="NCHW"``.
          targets: None (each image's top class), an int, an int array (B,), or a callable
            mapping the model output to (B,) scores.
          key: PRNG key for SmoothGrad's noise (default ``jax.random.key(0)``).

        Returns:
          (B, H, W) float32 maps, each in [0, 1] when ``normalize``.
        """
        return self._run(self._jitted, images, targets, key)

    def _run(self, jitted: Callable[..., Any], images: Any, targets: Any,
             key: jax.Array | None) -> jax.Array:
        """One call through ``jitted`` (this explainer's own, or ``explain``'s shared one),
        which takes the arguments of :func:`jaxcam._pipeline.explain_core` after the adapter."""
        images, finite_checked = self._checked_images(images)
        layout = self._adapter.layout
        check_image_layout(images.shape, layout, self._explicit_layout)
        batch, (height, width) = images.shape[0], image_size(images.shape, layout)
        # The pipeline is NHWC; a channels-first model gets its layout back inside the trace.
        images = to_nhwc(images, layout)
        spec, classes = prepare_targets(targets, batch)
        if key is None:
            key = jax.random.key(0)
        maps, finite, logits = jitted(self._opts, spec, self._state, images, classes, key)
        self._after_dispatch(classes, logits, finite, finite_checked)
        check_output_shape(maps, (batch, height, width) if self._resized else (batch, -1, -1),
                           "explain")
        return maps


def explain(model: Any, images: Any, *, target_layer: Any = None, targets: Any = None,
            method: str = "gradcam", variables: Any = None, relu: bool = True,
            normalize: bool = True, resize: bool = True, eigen_smooth: bool = False,
            aug_smooth: bool = False, key: jax.Array | None = None,
            check_finite: bool = True, output_index: int | None = None,
            layout: str | None = None, reshape_transform: Callable[..., Any] | None = None,
            **method_options: Any) -> jax.Array:
    """Class activation maps of a batch of images, computed in one jitted call.

    An NNX model's structure is split once per model object and re-checked cheaply on each call
    (its current weights are always read, so in-place training is seen; see
    :mod:`jaxcam.adapters._split_cache`); an :class:`Explainer` built once saves the remaining
    per-call checks.

    Args:
      model: a ``flax.nnx.Module`` (or its ``nnx.split`` pair); a ``flax.linen.Module`` (with
        ``variables``, applied as ``model.apply(variables, images)``); or a pair
        ``(features_fn, head_fn)`` of functions with ``head_fn(features_fn(images))`` the model
        output.
      images: (B, H, W, C) NHWC floating-point images (any float dtype; maps are float32);
        (B, C, H, W) with ``layout="NCHW"``.
      target_layer: the module path, '/'-separated (``"blocks/3"``) or a tuple of parts; a list
        of them aggregates several layers as pytorch-grad-cam does. Its output is the feature
        map: (B, h, w, C), or (B, C, h, w) with ``layout="NCHW"``; any other output (a ViT's
        tokens) needs a ``reshape_transform``. Not needed for the input-space methods; an error
        for a function pair (its one tap point is the output of ``features_fn``).
      targets: None (each image's top class), an int, an int array (B,), or a callable mapping
        the model output to (B,) scores.
      method: a registered method's name (:data:`jaxcam.METHODS`: pytorch-grad-cam's class
        names in lower case, plus the input-space methods, plus any registered later).
      variables: a Linen model's variables.
      relu, normalize, resize: pytorch-grad-cam's post-processing steps; turn off for raw maps.
      eigen_smooth: project the weighted activations on their first principal component.
      aug_smooth: average the maps over horizontal flips and brightness 0.9/1/1.1.
      key: PRNG key for SmoothGrad's noise (default ``jax.random.key(0)``).
      check_finite: raise if the images hold NaN or inf: checked on the host for NumPy images,
        with one scalar device read for a ``jax.Array`` (see :class:`Explainer`). Class
        targets are range-checked on the host (a ``jax.Array`` of classes is copied there).
        Under an outer ``jax.jit`` or ``jax.vmap`` (``explain`` works under both) the traced
        images and classes cannot be checked on the host, so these checks are skipped there.
      output_index: for a model returning a list or tuple (e.g. one logits array per exit),
        which element the targets refer to.
      layout: ``"NHWC"`` (images (B, H, W, C) and rank-4 layers (B, h, w, C)) or ``"NCHW"``
        (images (B, C, H, W) and layers (B, C, h, w), PyTorch's order); None (default) for the
        model's own (``"NCHW"`` for a PyTorch model, else ``"NHWC"``). Images plainly in the
        other layout (a (B, 3, 224, 224) batch under NHWC) are refused unless ``layout`` is
        given.
      reshape_transform: a function from the layer's output to its map, as pytorch-grad-cam's
        (e.g. :func:`jaxcam.reshape.vit` for a ViT block's tokens, :func:`jaxcam.reshape.swin`,
        :func:`jaxcam.reshape.channels_first`). It is applied inside the traced computation to
        the tapped output and differentiated through, so the map's gradient is the layer's
        gradient through the transform. Its result is read in ``layout``'s order ((B, h, w, C)
        for NHWC; (B, C, h, w) for NCHW, as pytorch-grad-cam's transforms are written);
        :mod:`jaxcam.reshape`'s are channels-last whatever the layout. Define it once: a new
        ``lambda`` per call is a new static argument and recompiles.
      **method_options: the method's own options (its registry entry's ``options``: e.g.
        ``batch_size`` for ScoreCAM/AblationCAM, ``steps`` for Integrated Gradients,
        ``n_samples`` for SmoothGrad); any other keyword is a ``TypeError`` naming the valid
        ones (``target=3`` suggests ``targets``).

    Returns:
      (B, H, W) float32 maps, each in [0, 1] when ``normalize`` (an all-zero map stays zero).

    Raises:
      ValueError: an unknown layer or layout, a layer whose output is not a map (the message
        names the ``reshape_transform`` to pass), or bad images or targets.
      TypeError: an unknown keyword, or a model of an unsupported kind.
    """
    if method_options:
        check_keywords("explain()", method_options, _EXPLAIN_KEYWORDS,
                       registry.get(method).options, f"options of method {method!r}")
    explainer = Explainer(model, target_layer=target_layer, method=method, variables=variables,
                          relu=relu, normalize=normalize, resize=resize,
                          eigen_smooth=eigen_smooth, aug_smooth=aug_smooth,
                          check_finite=check_finite, output_index=output_index,
                          layout=layout, reshape_transform=reshape_transform,
                          **method_options)
    shared = functools.partial(explain_jit, explainer._adapter)
    return explainer._run(shared, images, targets, key)


class ExitExplainer(PreparedExplainer):
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
      model: the multi-exit model: a :class:`jaxcam.adapters.MultiExitModel`
        (``exit_features(x) -> [f_1, ..., f_K]`` and ``classify(k, f_k) -> logits``, e.g.
        ``msdnet_flax.MSDNet``) or an NNX one's ``nnx.split(model)`` pair, evaluated in eval
        mode on a copy; or a ``torch.nn.Module`` (run as JAX through torchax, NCHW images), a
        Keras 3 model on JAX, a :class:`jaxcam.LinenModel`, a :class:`jaxcam.HaikuModel` or an
        Equinox module, whose exits are named by their classifier heads (``exits``).
      method: a multi-exit method (:data:`jaxcam.EXIT_METHODS`).
      exits: a MultiExitModel's exits to explain (default all), as indices. For a PyTorch, Keras,
        Flax Linen, Haiku or Equinox model, each exit's classifier head, in exit order (required):
        module / layer names (``["classifiers.0", "classifiers.1"]``), the modules / layers
        themselves, or a ``(first, last)`` pair for a head of several layers. Exit k's features are
        its head's input, its logits the head's output, and its map is ``d score_k / d features``
        through that head alone (later exits fed the same features do not leak into it); whatever
        the model's forward returns is not used.
      relu, normalize, resize, eigen_smooth: as in :func:`jaxcam.explain`.
      check_finite: raise if the images hold NaN or inf. NumPy images are checked on the host
        before the call; a ``jax.Array``'s check is computed with the maps and read when the call
        returns (one scalar: the call then waits for its result). Pass False to keep a call
        with device images fully asynchronous.
      layout: the images' and exit features' layout, as in :func:`jaxcam.explain` (the model
        is called with the images as given).
      reshape_transform: applied to every exit's classifier input ``f_k`` (e.g.
        :func:`jaxcam.reshape.vit` for exits on a ViT's tokens), as in :func:`jaxcam.explain`.
      **method_options: the method's own options, as in :func:`jaxcam.explain` (Finer-CAM's
        ``alpha`` and ``comparison_categories``, FEM's ``k``, ...); any other keyword is a
        ``TypeError`` naming the valid ones.

    Raises:
      ValueError, TypeError: an unsupported method, keyword or model, or exits out of range.
    """

    def __init__(self, model: Any, *, method: str = "gradcam",
                 exits: Sequence[int] | None = None, relu: bool = True, normalize: bool = True,
                 resize: bool = True, eigen_smooth: bool = False, check_finite: bool = True,
                 layout: str | None = None, reshape_transform: Callable[..., Any] | None = None,
                 **method_options: Any):
        record = registry.get(method)
        if not record.multi_exit:
            raise ValueError(f"explain_exits supports the activation-gradient methods "
                             f"{', '.join(registry.names(multi_exit=True))}; got "
                             f"{record.name!r} (use jaxcam.explain for it)")
        if {"targets", "target", "images"} & set(method_options):
            raise TypeError("ExitExplainer() takes the model and its options; the images and "
                            "targets go to each call: explainer(images, targets)")
        check_keywords("ExitExplainer()", method_options, _EXIT_EXPLAINER_KEYWORDS,
                       record.options, f"options of method {record.name!r}")
        adapter, state, n_exits, exits = make_exit_adapter(model, exits)
        adapter, self._explicit_layout = with_view(adapter, layout, reshape_transform, exits=True)
        self._resized = resize
        super().__init__(adapter, state, check_finite)
        self._n_exits: int | None = None
        self._requested = None if exits is None else tuple(int(k) for k in exits)
        if self._requested is not None and not self._requested:
            raise ValueError("exits is empty; pass None for all exits or a list of exit indices")
        if n_exits is not None:
            self._set_exit_count(n_exits)
        self._opts = make_options(record, method_options, relu=relu, normalize=normalize,
                                  resize=resize, eigen_smooth=eigen_smooth)
        self._jitted = _own_jit(explain_exits_core, self._adapter, 3)

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

    @strict_keywords
    def __call__(self, images: Any, targets: Any = None, *, return_logits: bool = False
                 ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Maps of the requested exits.

        Args:
          images: (B, H, W, C) float images (NumPy, JAX or a DLPack tensor); (B, C, H, W)
            for a PyTorch model or ``layout="NCHW"``.
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
        which takes the arguments of :func:`jaxcam._exit_pipeline.explain_exits_core` after
        the adapter."""
        images, finite_checked = self._checked_images(images)
        check_image_layout(images.shape, self._adapter.layout, self._explicit_layout)
        if self._n_exits is None:  # trace once, abstractly, to count the exits
            adapter, state = self._adapter, self._state
            self._set_exit_count(adapter.count_exits(state, images))
        exits = self.exits
        spec, classes = prepare_exit_targets(targets, len(exits), images.shape[0])
        maps, logits, finite = jitted(exits, self._opts, spec, self._state, images, classes)
        self._after_dispatch(classes, logits, finite, finite_checked)
        size = image_size(images.shape, self._adapter.layout) if self._resized else (-1, -1)
        check_output_shape(maps, (len(exits), images.shape[0], *size), "explain_exits")
        return (maps, logits) if return_logits else maps


def explain_exits(model: Any, images: Any, *, targets: Any = None, method: str = "gradcam",
                  exits: Sequence[int] | None = None, relu: bool = True, normalize: bool = True,
                  resize: bool = True, eigen_smooth: bool = False, check_finite: bool = True,
                  return_logits: bool = False, layout: str | None = None,
                  reshape_transform: Callable[..., Any] | None = None,
                  **method_options: Any) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Class activation maps of every requested exit of a multi-exit model, in one pass.

    Works for any model exposing ``exit_features(x) -> [f_1, ..., f_K]`` (each exit's classifier
    input, NHWC) and ``classify(k, f_k) -> logits`` (e.g. ``msdnet_flax.MSDNet``); an NNX model is
    evaluated in eval mode on a copy. Exit k's map explains ``classify(k, .)`` at ``f_k``. A
    PyTorch or Keras model's exits are named by their classifier heads instead
    (``exits=["classifiers.0", "classifiers.1", ...]``): exit k's map explains head k at its
    input.

    An NNX model's structure is split once per model object and re-checked cheaply on each call
    (its current weights are always read, so in-place training is seen; see
    :mod:`jaxcam.adapters._split_cache`): at batch 64 on MSD-Net this one-shot call costs within
    10% of a prepared :class:`ExitExplainer` (benchmarks/RESULTS.md).

    Args:
      model: the multi-exit model (see :class:`ExitExplainer`): a MultiExitModel or an NNX
        one's ``nnx.split`` pair, or a PyTorch or Keras model with ``exits`` naming its heads.
      images: (B, H, W, C) float images.
      targets: None (each exit's own top class), an int or (B,) classes for every exit, (K, B)
        classes per exit, or a callable mapping one exit's logits to (B,) scores.
      method: a multi-exit method (:data:`jaxcam.EXIT_METHODS`).
      exits: which exits (default all), as indices; for a PyTorch or Keras model, each exit's
        classifier head (see :class:`ExitExplainer`).
      relu, normalize, resize, eigen_smooth: as in :func:`jaxcam.explain`.
      check_finite: raise if the images hold NaN or inf (see :class:`ExitExplainer`).
      return_logits: also return the (K, B, num_classes) logits of the requested exits.
      layout, reshape_transform: as for :class:`ExitExplainer`.
      **method_options: the method's own options (see :class:`ExitExplainer`).

    Returns:
      (K, B, H, W) float32 maps (and the logits if asked).
    """
    if method_options:
        check_keywords("explain_exits()", method_options, _EXPLAIN_EXITS_KEYWORDS,
                       registry.get(method).options, f"options of method {method!r}")
    explainer = ExitExplainer(model, method=method, exits=exits, relu=relu, normalize=normalize,
                              resize=resize, eigen_smooth=eigen_smooth,
                              check_finite=check_finite, layout=layout,
                              reshape_transform=reshape_transform, **method_options)
    shared = functools.partial(explain_exits_jit, explainer._adapter)
    return explainer._run(shared, images, targets, return_logits)


# Keyword arguments of the entry points with **method_options, for their error messages.
_EXPLAINER_KEYWORDS = keyword_names(Explainer.__init__, skip=2)
_EXPLAIN_KEYWORDS = keyword_names(explain, skip=2)
_EXIT_EXPLAINER_KEYWORDS = keyword_names(ExitExplainer.__init__, skip=2)
_EXPLAIN_EXITS_KEYWORDS = keyword_names(explain_exits, skip=2)

"""``jaxcam.explain``: one jitted function from images to class activation maps.

The pipeline -- forward with the layer tapped, ``jax.vjp`` of the target scores with respect to
the tapped activations (never the parameters), the method's weighting, ReLU, normalisation and
resize -- is traced once per (model structure, layer, method, options, input shape) and cached by
``jax.jit`` itself; a second call with new data of the same shape does not retrace.

:class:`Explainer` does the per-model work (split, layer checks) once, for callers that explain
many batches with the same weights; ``explain`` is one such object used once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcam import input_space
from jaxcam._adapters import (
    Adapter,
    LayerPath,
    check_linen_layers,
    make_adapter,
    normalize_layer_path,
)
from jaxcam._arrays import as_jax
from jaxcam._prepared import (
    Frozen,
    check_after_dispatch,
    check_finite_on_host,
    is_presplit,
    new_weights,
)
from jaxcam.extend import fast_strided_conv_grads
from jaxcam.methods import ACTIVATION_GRADIENT_METHODS, ACTIVATION_ONLY
from jaxcam.postprocess import minmax_normalize, resize_bilinear
from jaxcam.targets import TargetSpec, prepare_targets, target_scores

__all__ = ["explain", "Explainer", "METHODS", "Options", "check_images", "finish_maps"]

SCORE_METHODS = ("scorecam", "ablationcam")
INPUT_METHODS = ("saliency", "guidedbackprop", "guidedgradcam", "smoothgrad",
                 "integratedgradients")
METHODS: tuple[str, ...] = (*ACTIVATION_GRADIENT_METHODS, *SCORE_METHODS, *INPUT_METHODS)
_NEEDS_LAYER = (*ACTIVATION_GRADIENT_METHODS, *SCORE_METHODS, "guidedgradcam")


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything static about one explanation (hashable: a ``jax.jit`` static argument)."""

    method: str
    relu: bool = True
    normalize: bool = True
    resize: bool = True
    eigen_smooth: bool = False
    aug_smooth: bool = False
    method_options: tuple[tuple[str, Any], ...] = ()
    output_index: int | None = None

    def select(self, output: Any) -> Any:
        """The part of the model output that targets refer to."""
        return output if self.output_index is None else output[self.output_index]


def check_images(images: Any) -> jax.Array:
    """(B, H, W, C) float images as a jax.Array, or a clear error."""
    images = as_jax(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W, C) NHWC, rank 4; got shape {images.shape}"
                         + (" (add a batch axis: images[None])" if images.ndim == 3 else ""))
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0); pass at least one image")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"images must be floating point (normalised as the model expects), "
                        f"got {images.dtype}")
    return images


def check_method(method: str) -> str:
    name = method.lower().replace("-", "").replace("_", "")
    if name not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    return name


def finish_maps(raw_per_layer: Sequence[jax.Array], out_size: tuple[int, int],
                opts: Options) -> jax.Array:
    """pytorch-grad-cam's post-processing of (B, h, w) raw maps, one per tapped layer.

    Per layer: ReLU, min-max to [0, 1] (epsilon 1e-7), bilinear resize to the input size; then
    across layers: ReLU, mean, min-max again (pytorch-grad-cam's ``aggregate_multi_layers``).
    """
    maps = []
    for raw in raw_per_layer:
        cam = raw.astype(jnp.float32)
        if opts.relu:
            cam = jax.nn.relu(cam)
        if opts.normalize:
            cam = minmax_normalize(cam)
        if opts.resize:
            cam = resize_bilinear(cam, out_size)
        maps.append(cam)
    if len({m.shape for m in maps}) > 1:
        raise ValueError("target layers give maps of different sizes "
                         f"{[m.shape[1:] for m in maps]}; use resize=True to combine them")
    if opts.relu:
        maps = [jax.nn.relu(m) for m in maps]
    cam = jnp.mean(jnp.stack(maps), axis=0)
    return minmax_normalize(cam) if opts.normalize else cam


def _reduce_channels(attr: jax.Array, opts: Options) -> jax.Array:
    """(B, H, W, C) input-space attributions -> (B, H, W) maps: max |a| over channels."""
    cam = jnp.max(jnp.abs(attr), axis=-1).astype(jnp.float32)
    return minmax_normalize(cam) if opts.normalize else cam


def _layer_maps(adapter: Adapter, opts: Options, spec: TargetSpec, state: Any, x: jax.Array,
                classes: jax.Array | None, key: jax.Array) -> tuple[jax.Array, Any]:
    """(B, H, W) maps for one batch of (possibly augmented) images, and the model output."""
    out_size = x.shape[1:3]
    method, options = opts.method, dict(opts.method_options)

    def scores(output: Any, cls: jax.Array | None) -> jax.Array:
        return target_scores(spec, opts.select(output), cls)

    if method in ACTIVATION_GRADIENT_METHODS and method not in ACTIVATION_ONLY:
        shapes = jax.eval_shape(lambda: adapter.forward(state, x)[1])
        deltas = [jnp.zeros(s.shape, s.dtype) for s in shapes]

        def total_score(deltas: list[jax.Array]):
            edits = [lambda a, d=d: a + d for d in deltas]
            output, acts = adapter.forward(state, x, edits)
            return jnp.sum(scores(output, classes)), (acts, output)

        grads, (acts, output) = jax.grad(fast_strided_conv_grads(total_score), has_aux=True)(deltas)
        raw = [ACTIVATION_GRADIENT_METHODS[method](a, g, eigen_smooth=opts.eigen_smooth)
               for a, g in zip(acts, grads, strict=True)]
        return finish_maps(raw, out_size, opts), output

    output, acts = adapter.forward(state, x)
    # Score-based methods score perturbed inputs for the class chosen on the original image.
    fixed = spec if spec.kind == "callable" else TargetSpec("index")
    fixed_classes = classes if spec.kind != "argmax" else jnp.argmax(opts.select(output), -1)

    def score_images(images: jax.Array) -> jax.Array:
        return target_scores(fixed, opts.select(adapter.forward(state, images)[0]), fixed_classes)

    if method in ACTIVATION_ONLY:
        raw = [ACTIVATION_GRADIENT_METHODS[method](a, None, eigen_smooth=opts.eigen_smooth)
               for a in acts]
        return finish_maps(raw, out_size, opts), output
    if method == "scorecam":
        raw = [input_space.scorecam(x, a, score_images, **options) for a in acts]
        return finish_maps(raw, out_size, opts), output
    if method == "ablationcam":
        raw = []
        for i, a in enumerate(acts):
            def head_score(new: jax.Array, i: int = i) -> jax.Array:
                edits = [lambda old: old] * len(acts)
                edits[i] = lambda old: new
                output = opts.select(adapter.forward(state, x, edits)[0])
                return target_scores(fixed, output, fixed_classes)

            raw.append(input_space.ablationcam(a, head_score, **options))
        return finish_maps(raw, out_size, opts), output
    if method == "saliency":
        attr = jax.grad(lambda im: jnp.sum(score_images(im)))(x)
        return _reduce_channels(attr, opts), output
    if method == "smoothgrad":
        attr = input_space.smoothgrad(score_images, x, key=key, **options)
        return _reduce_channels(attr, opts), output
    if method == "integratedgradients":
        attr = input_space.integrated_gradients(score_images, x, **options)
        return _reduce_channels(attr, opts), output
    # guidedbackprop / guidedgradcam
    guided = input_space.guided_backprop(score_images, x)
    if method == "guidedbackprop":
        return _reduce_channels(guided, opts), output
    cam_opts = dataclasses.replace(opts, method="gradcam")
    cam, _ = _layer_maps(adapter, cam_opts, spec, state, x, classes, key)
    return _reduce_channels(input_space.guided_gradcam(guided, cam), opts), output


# pytorch-grad-cam's aug_smooth: ttach's HorizontalFlip x Multiply([0.9, 1, 1.1]).
_AUG_FLIPS = (False, False, False, True, True, True)
_AUG_FACTORS = (0.9, 1.0, 1.1, 0.9, 1.0, 1.1)


def _explain_core(adapter: Adapter, opts: Options, spec: TargetSpec, state: Any,
                  images: jax.Array, classes: jax.Array | None, key: jax.Array
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(B, H, W) maps, ``all(isfinite(images))`` and the targeted output (for its width)."""
    finite = jnp.all(jnp.isfinite(images))
    if not opts.aug_smooth:
        maps, output = _layer_maps(adapter, opts, spec, state, images, classes, key)
    else:
        plain = dataclasses.replace(opts, aug_smooth=False)
        augmented = []
        for flip, factor in zip(_AUG_FLIPS, _AUG_FACTORS, strict=True):
            x = images * factor
            x = x[:, :, ::-1] if flip else x
            m, output = _layer_maps(adapter, plain, spec, state, x, classes, key)
            augmented.append(m[:, :, ::-1] if flip else m)
        maps = jnp.mean(jnp.stack(augmented), axis=0)
    # The logits themselves (small), not their width: a width returned from a jitted function
    # becomes a traced value under an outer jax.vmap/jit, while an output's shape stays static.
    return maps, finite, jax.tree.leaves(opts.select(output))[0]


# Shared by every explain call: a model of the same structure compiles once.
_explain_jit = jax.jit(_explain_core, static_argnums=(0, 1, 2))


def _target_layers(model: Any, target_layer: Any, method: str) -> list[LayerPath]:
    """The tapped layers' paths for ``method``, or a clear error."""
    pair = isinstance(model, tuple) and not is_presplit(model)
    if target_layer is None:
        layers: list[LayerPath] = []
        if method in _NEEDS_LAYER and not pair:
            raise ValueError(f"method {method!r} needs target_layer: the module path of the "
                             "feature map to explain (e.g. target_layer='blocks/3')")
    elif isinstance(target_layer, list):
        if not target_layer:
            raise ValueError("target_layer is an empty list; name at least one layer")
        # A layer listed twice is explained once (pytorch-grad-cam's mean of two equal maps).
        layers = list(dict.fromkeys(normalize_layer_path(layer) for layer in target_layer))
    else:
        layers = [normalize_layer_path(target_layer)]
    if method in ("guidedbackprop", "saliency", "smoothgrad", "integratedgradients"):
        layers = layers if pair else []
    return layers


class Explainer:
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
        output_index, **method_options: as for :func:`explain`; ``model`` may also be an NNX
        model's ``nnx.split`` pair.
      check_finite: raise if the images hold NaN or inf. NumPy images are checked on the host
        before the call; a ``jax.Array``'s check is computed with the maps and read when the call
        returns (one scalar: the call then waits for its result). Pass False to keep a call
        with device images fully asynchronous.

    Raises:
      ValueError, TypeError: an unknown method or layer, or a model of an unsupported kind.
    """

    def __init__(self, model: Any, *, target_layer: Any = None, method: str = "gradcam",
                 variables: Any = None, relu: bool = True, normalize: bool = True,
                 resize: bool = True, eigen_smooth: bool = False, aug_smooth: bool = False,
                 check_finite: bool = True, output_index: int | None = None,
                 **method_options: Any):
        name = check_method(method)
        layers = _target_layers(model, target_layer, name)
        self._adapter, self._state = make_adapter(model, layers, variables)
        self._opts = Options(method=name, relu=relu, normalize=normalize, resize=resize,
                             eigen_smooth=eigen_smooth, aug_smooth=aug_smooth,
                             method_options=tuple(sorted(method_options.items())),
                             output_index=output_index)
        self.check_finite = check_finite
        # Image shapes and dtypes a Linen model's layers were checked for (it lists its layers
        # only when run on images).
        self._linen_checked: set[tuple[tuple[int, ...], Any]] = set()
        # Its own jitted function, over a function object of its own (jax.jit's C++ cache is
        # keyed by the wrapped function, so a second jit of _explain_core would share the
        # module's): a call's static arguments are compared with the cached call's, and a model
        # structure equal to but not the same object as a cached one costs a full graph
        # comparison (25 ms for cifar10_anytime) on every call. Binding the structure here
        # leaves only cheap static arguments (options, target spec) to compare.
        self._jitted = jax.jit(functools.partial(_explain_core, self._adapter),
                               static_argnums=(0, 1))

    def update(self, model: Any = None, *, variables: Any = None) -> None:
        """Take new weights of the same model.

        Args:
          model: for an NNX explainer: the model again (trained further), its ``nnx.split``
            pair or its ``nnx.State``, of the structure the explainer was built for.
          variables: for a Linen explainer: the new variables.

        Raises:
          ValueError: an NNX model of another structure (build a new explainer for it).
          TypeError: the wrong argument for this explainer's kind of model.
        """
        kind = self._adapter.kind
        if kind == "nnx" and model is not None and variables is None:
            assert isinstance(self._adapter.static, Frozen)
            self._state = new_weights(self._adapter.static, model)
        elif kind == "linen" and variables is not None and model is None:
            self._state = variables
            self._linen_checked.clear()
        elif kind == "functions":
            raise TypeError("a (features_fn, head_fn) explainer holds no weights (the functions "
                            "close over theirs); build a new Explainer instead")
        else:
            raise TypeError(f"a {'Linen' if kind == 'linen' else 'NNX'} explainer's update "
                            f"takes {'variables=...' if kind == 'linen' else 'the model'} only")

    def __call__(self, images: Any, targets: Any = None, *, key: jax.Array | None = None
                 ) -> jax.Array:
        """Maps of a batch of images.

        Args:
          images: (B, H, W, C) float images (NumPy, JAX or a DLPack tensor).
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
        which takes the arguments of :func:`_explain_core` after the adapter."""
        raw = images
        images = check_images(images)  # first: its errors say more than a NaN check's would
        finite_checked = check_finite_on_host(raw, self.check_finite)
        adapter = self._adapter
        if adapter.kind == "linen":
            signature = (tuple(images.shape), images.dtype)
            if signature not in self._linen_checked:
                check_linen_layers(adapter.static, adapter.layers, self._state, images)
                self._linen_checked.add(signature)
        spec, classes = prepare_targets(targets, images.shape[0])
        if key is None:
            key = jax.random.key(0)
        maps, finite, logits = jitted(self._opts, spec, self._state, images, classes, key)
        check_after_dispatch(classes, logits.shape[-1], finite, finite_checked)
        return maps


def explain(model: Any, images: Any, *, target_layer: Any = None, targets: Any = None,
            method: str = "gradcam", variables: Any = None, relu: bool = True,
            normalize: bool = True, resize: bool = True, eigen_smooth: bool = False,
            aug_smooth: bool = False, key: jax.Array | None = None,
            check_finite: bool = True, output_index: int | None = None,
            **method_options: Any) -> jax.Array:
    """Class activation maps of a batch of images, computed in one jitted call.

    Each call splits an NNX model anew (about 100 ms for MSD-Net's cifar10_anytime); to explain
    many batches with the same weights, build an :class:`Explainer` once and call it.

    Args:
      model: a ``flax.nnx.Module`` (or its ``nnx.split`` pair); a ``flax.linen.Module`` (with
        ``variables``, applied as ``model.apply(variables, images)``); or a pair
        ``(features_fn, head_fn)`` of functions with ``head_fn(features_fn(images))`` the model
        output.
      images: (B, H, W, C) NHWC floating-point images (any float dtype; maps are float32).
      target_layer: the module path, '/'-separated (``"blocks/3"``) or a tuple of parts; a list
        of them aggregates several layers as pytorch-grad-cam does. Its output is the feature
        map. Not needed for a function pair or the input-space methods.
      targets: None (each image's top class), an int, an int array (B,), or a callable mapping
        the model output to (B,) scores.
      method: one of :data:`METHODS` (pytorch-grad-cam's class names in lower case, plus the
        input-space methods).
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
      **method_options: passed to the method (e.g. ``batch_size`` for ScoreCAM/AblationCAM,
        ``steps`` for Integrated Gradients, ``n_samples`` for SmoothGrad).

    Returns:
      (B, H, W) float32 maps, each in [0, 1] when ``normalize`` (an all-zero map stays zero).
    """
    explainer = Explainer(model, target_layer=target_layer, method=method, variables=variables,
                          relu=relu, normalize=normalize, resize=resize,
                          eigen_smooth=eigen_smooth, aug_smooth=aug_smooth,
                          check_finite=check_finite, output_index=output_index,
                          **method_options)
    shared = functools.partial(_explain_jit, explainer._adapter)
    return explainer._run(shared, images, targets, key)

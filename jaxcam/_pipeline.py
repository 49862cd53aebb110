"""The jitted explain computation: images to maps, dispatched on the method's kind.

The pipeline -- forward with the layer tapped, ``jax.vjp`` of the target scores with respect to
the tapped activations (never the parameters), the method's maths, then post-processing -- is
traced once per (model structure, layer, method, options, input shape) and cached by
``jax.jit`` itself; a second call with new data of the same shape does not retrace.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcam import registry
from jaxcam.adapters import ModelAdapter
from jaxcam.extend.depthwise import fast_cpu_convs
from jaxcam.methods.layer._common import maps_layout
from jaxcam.postprocess import attribution_maps, minmax_normalize, postprocess
from jaxcam.registry import InputProbe, LayerProbe, Method
from jaxcam.targets import TargetSpec, target_scores

__all__ = ["Options", "explain_core", "explain_jit", "make_options"]


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything static about one explanation (hashable: a ``jax.jit`` static argument).

    Attributes:
      method: the registered method.
      relu, normalize, resize: the post-processing steps.
      eigen_smooth: project weighted activations on their first principal component.
      aug_smooth: average over flips and brightness changes.
      method_options: the method's own keyword options, sorted.
      output_index: which element of a list/tuple output the targets refer to.
    """

    method: Method
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


def make_options(method: str | Method, method_options: dict[str, Any], **common: Any) -> Options:
    """Options for ``method``, its keyword options checked against the registry's record.

    Args:
      method: a registered method's name (or its record).
      method_options: the method's own options.
      **common: the other :class:`Options` fields.

    Returns:
      The options.

    Raises:
      ValueError: an unknown method.
      TypeError: an option the method does not take (the message lists those it does).
    """
    record = method if isinstance(method, Method) else registry.get(method)
    unknown = sorted(set(method_options) - set(record.options))
    if unknown:
        valid = ", ".join(record.options) or "none"
        raise TypeError(f"method {record.name!r} got unknown option(s) {', '.join(unknown)}; "
                        f"its options are: {valid}")
    # Lists become tuples: the options are a static (hashed) argument of jax.jit, and a list
    # option (Finer-CAM's comparison_categories) is natural to write.
    items = sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in method_options.items())
    return Options(method=record, method_options=tuple(items), **common)


def _activation_gradient_maps(adapter: ModelAdapter, opts: Options, spec: TargetSpec,
                              state: Any, x: jax.Array, classes: jax.Array | None,
                              key: jax.Array) -> tuple[jax.Array, Any]:
    method, options = opts.method, dict(opts.method_options)
    if method.scores is None:
        def scores(output: Any) -> jax.Array:
            return target_scores(spec, output, classes)
    else:
        def scores(output: Any) -> jax.Array:
            return method.scores(spec, output, classes, **options)
    extras: list[dict[str, Any]] = []
    if method.uses_gradients:
        shapes = jax.eval_shape(lambda: adapter.forward(state, x)[1])
        deltas = [jnp.zeros(s.shape, s.dtype) for s in shapes]

        def total_score(deltas: list[jax.Array]) -> tuple[jax.Array, Any]:
            edits = [lambda a, d=d: a + d for d in deltas]
            output, acts = adapter.forward(state, x, edits)
            return jnp.sum(scores(opts.select(output))), (acts, output)

        grads, (acts, output) = jax.grad(fast_cpu_convs(total_score), has_aux=True)(deltas)
        if method.uses_hvp:
            # Forward-over-reverse without the strided-conv rule (a custom_vjp, which forward
            # mode cannot differentiate): layer i's Hessian-vector product with
            # its own activations, the other layers' deltas held at zero, as torch.autograd.grad
            # (outputs=grads_i, inputs=acts_i, grad_outputs=acts_i) computes it.
            grad_fn = jax.grad(lambda d: fast_cpu_convs(total_score, strided_grads=False)(d)[0])
            for i, a in enumerate(acts):
                tangent = [a if j == i else jnp.zeros_like(d) for j, d in enumerate(deltas)]
                extras.append({"hvp": jax.jvp(grad_fn, (deltas,), (tangent,))[1][i]})
    else:
        output, acts = fast_cpu_convs(lambda: adapter.forward(state, x))()
        grads = [None] * len(acts)
    extras = extras or [{} for _ in acts]
    if method.uses_key:
        extras = [dict(e, key=jax.random.fold_in(key, i)) for i, e in enumerate(extras)]
    raw = [method.fn(a, g, eigen_smooth=opts.eigen_smooth, **e, **options)
           for a, g, e in zip(acts, grads, extras, strict=True)]
    return _combine(raw, x, opts), output


def _combine(raw: list[jax.Array], x: jax.Array, opts: Options) -> jax.Array:
    """The per-layer raw maps post-processed and combined as the method's ``layer_combine``
    says: pytorch-grad-cam's mean, or RefineCAM's product of each layer's finished map."""
    def finish(layers: list[jax.Array]) -> jax.Array:
        return postprocess(layers, x.shape[1:3], relu=opts.relu, normalize=opts.normalize,
                           resize=opts.resize)

    if opts.method.layer_combine == "mean" or len(raw) == 1:
        return finish(raw)
    product = functools.reduce(jnp.multiply, [finish([r]) for r in raw])
    return minmax_normalize(product) if opts.normalize else product


def _fixed_class_scorer(opts: Options, spec: TargetSpec, output: Any,
                        classes: jax.Array | None) -> Callable[[Any], jax.Array]:
    """``output -> (B,)`` scores for the classes chosen on the original images: perturbed inputs
    are scored for those, not for their own top class."""
    fixed = spec if spec.kind == "callable" else TargetSpec("index")
    fixed_classes = classes if spec.kind != "argmax" else jnp.argmax(opts.select(output), -1)
    return lambda out: target_scores(fixed, opts.select(out), fixed_classes)


def _layer_score_maps(adapter: ModelAdapter, opts: Options, spec: TargetSpec, state: Any,
                      x: jax.Array, classes: jax.Array | None, key: jax.Array
                      ) -> tuple[jax.Array, Any]:
    output, acts = fast_cpu_convs(lambda: adapter.forward(state, x))()
    score = _fixed_class_scorer(opts, spec, output, classes)

    @fast_cpu_convs
    def score_images(images: jax.Array) -> jax.Array:
        return score(adapter.forward(state, images)[0])

    raw = []
    for i, a in enumerate(acts):
        @fast_cpu_convs
        def score_activations(new: jax.Array, i: int = i) -> jax.Array:
            edits = [lambda old: old] * len(acts)
            edits[i] = lambda old: new
            return score(adapter.forward(state, x, edits)[0])

        probe = LayerProbe(x, a, score_images, score_activations)
        raw.append(opts.method.fn(probe, **dict(opts.method_options)))
    return _combine(raw, x, opts), output


def _input_maps(adapter: ModelAdapter, opts: Options, spec: TargetSpec, state: Any,
                x: jax.Array, classes: jax.Array | None, key: jax.Array
                ) -> tuple[jax.Array, Any]:
    output, _ = adapter.forward(state, x)
    score = _fixed_class_scorer(opts, spec, output, classes)

    def layer_maps(name: str) -> jax.Array:
        layer_opts = dataclasses.replace(opts, method=registry.get(name), method_options=())
        return _maps(adapter, layer_opts, spec, state, x, classes, key)[0]

    model = (lambda: adapter.model(state)) if hasattr(adapter, "model") else None
    probe = InputProbe(x, lambda images: score(adapter.forward(state, images)[0]), key,
                       layer_maps, model=model, score_output=score)
    attributions = opts.method.fn(probe, **dict(opts.method_options))
    return attribution_maps(attributions, normalize=opts.normalize), output


_BY_KIND = {"activation_gradient": _activation_gradient_maps,
            "layer_score": _layer_score_maps,
            "input": _input_maps}


def _maps(adapter: ModelAdapter, opts: Options, spec: TargetSpec, state: Any, x: jax.Array,
          classes: jax.Array | None, key: jax.Array) -> tuple[jax.Array, Any]:
    """(B, H, W) maps for one batch of (possibly augmented) images, and the model output."""
    with maps_layout("NHWC"):  # the maps handed to the methods are channels-last here
        return _BY_KIND[opts.method.kind](adapter, opts, spec, state, x, classes, key)


# pytorch-grad-cam's aug_smooth: ttach's HorizontalFlip x Multiply([0.9, 1, 1.1]).
_AUG_FLIPS = (False, False, False, True, True, True)
_AUG_FACTORS = (0.9, 1.0, 1.1, 0.9, 1.0, 1.1)


def explain_core(adapter: ModelAdapter, opts: Options, spec: TargetSpec, state: Any,
                 images: jax.Array, classes: jax.Array | None, key: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The whole computation of one explain call (jitted by the caller).

    Args:
      adapter: the model's adapter (static).
      opts: the options (static).
      spec: the target spec (static).
      state: the adapter's state (the weights).
      images: ``(B, H, W, C)`` images.
      classes: ``(B,)`` classes for an 'index' spec, else None.
      key: PRNG key.

    Returns:
      (B, H, W) maps, ``all(isfinite(images))`` and the targeted output (for its width).
    """
    finite = jnp.all(jnp.isfinite(images))
    if not opts.aug_smooth:
        maps, output = _maps(adapter, opts, spec, state, images, classes, key)
    else:
        plain = dataclasses.replace(opts, aug_smooth=False)
        augmented = []
        for flip, factor in zip(_AUG_FLIPS, _AUG_FACTORS, strict=True):
            x = images * factor
            x = x[:, :, ::-1] if flip else x
            m, output = _maps(adapter, plain, spec, state, x, classes, key)
            augmented.append(m[:, :, ::-1] if flip else m)
        maps = jnp.mean(jnp.stack(augmented), axis=0)
    # The logits themselves (small), not their width: a width returned from a jitted function
    # becomes a traced value under an outer jax.vmap/jit, while an output's shape stays static.
    return maps, finite, jax.tree.leaves(opts.select(output))[0]


# Shared by every explain call: a model of the same structure compiles once.
explain_jit = jax.jit(explain_core, static_argnums=(0, 1, 2))

"""The method registry: every explanation method, registered once next to its maths.

A :class:`Method` says what a method computes (its pure function), how the explain pipeline
feeds it (its ``kind``) and what it can do (a layer, gradients, several exits). ``jaxcam.METHODS``,
``jaxcam.EXIT_METHODS``, the pytorch-grad-cam class names of :mod:`jaxcam.compat` and ``jaxcam
methods`` are all queries on it, so a method registered here -- by jaxcam or by a user -- is
usable everywhere at once.

The three kinds and the signature each expects of ``fn``:

* ``"activation_gradient"``: ``fn(activations, gradients, *, eigen_smooth=False, **options)``
  -> ``(B, h, w)`` raw map. ``activations`` and ``gradients`` are the tapped layer's
  ``(B, h, w, C)`` output and the gradient of the target scores with respect to it (None when
  ``uses_gradients`` is False: no backward pass is run).
* ``"layer_score"``: ``fn(probe: LayerProbe, **options)`` -> ``(B, h, w)`` raw map, from
  scores of perturbed inputs or activations (Score-CAM, Ablation-CAM).
* ``"input"``: ``fn(probe: InputProbe, **options)`` -> ``(B, H, W, C)`` input attributions.

Raw layer maps go through :func:`jaxcam.postprocess.postprocess`; input attributions through
:func:`jaxcam.postprocess.attribution_maps`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax

from jaxcam.targets import ScoreFn

__all__ = [
    "KINDS",
    "InputProbe",
    "LayerProbe",
    "Method",
    "all_methods",
    "canonical_name",
    "get",
    "names",
    "register",
    "registered",
    "unregister",
]

KINDS = ("activation_gradient", "layer_score", "input")


@dataclasses.dataclass(frozen=True)
class Method:
    """One explanation method. Hashable: the explain pipeline's ``jax.jit`` keys on it.

    Attributes:
      name: the lower-case name passed as ``method=`` (``"gradcamplusplus"``).
      kind: ``"activation_gradient"``, ``"layer_score"`` or ``"input"`` (see the module
        docstring for the signature of ``fn`` each implies).
      fn: the pure maths.
      summary: one line, shown by ``jaxcam methods``.
      paper: the citation (``"Selvaraju et al., ICCV 2017"``).
      needs_layer: whether ``target_layer`` is required (a function pair always has one).
      uses_gradients: whether the method reads gradients (False skips the backward pass).
      multi_exit: usable by :func:`jaxcam.explain_exits` (activation-gradient methods without
        ``uses_key``).
      class_name: pytorch-grad-cam's class name (``"GradCAMPlusPlus"``), or None for none.
      options: the keyword options ``fn`` accepts beyond the common ones; any other keyword
        given to ``explain`` for this method is a ``TypeError``.
      uses_hvp: (activation-gradient only) ``fn`` also gets ``hvp=``: the Hessian of the summed
        target scores with respect to the layer's activations times those activations
        (ShapleyCAM). Costs one forward-over-reverse pass per tapped layer.
      uses_key: (activation-gradient only) ``fn`` also gets ``key=``, a PRNG key folded with
        the layer's index (RandomCAM).
      scores: (activation-gradient only) replaces the targets' scores:
        ``scores(spec, output, classes, **options) -> (B,)``, given the user's target spec and
        the method's options (FinerCAM's weighted class differences); None keeps the targets.
      layer_combine: how the per-layer maps of several target layers are combined: ``"mean"``
        (pytorch-grad-cam's ``BaseCAM``) or ``"product"`` of each layer's finished map, then
        min-max (RefineCAM).
    """

    name: str
    kind: str
    fn: Callable[..., Any]
    summary: str
    paper: str
    needs_layer: bool = True
    uses_gradients: bool = True
    multi_exit: bool = False
    class_name: str | None = None
    options: tuple[str, ...] = ()
    uses_hvp: bool = False
    uses_key: bool = False
    scores: Callable[..., jax.Array] | None = None
    layer_combine: str = "mean"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Method kind must be one of {KINDS}, got {self.kind!r}")
        if self.name != canonical_name(self.name) or not self.name:
            raise ValueError(f"Method name must be lower case without '-' or '_', got "
                             f"{self.name!r} (e.g. {canonical_name(self.name)!r})")
        if self.multi_exit and self.kind != "activation_gradient":
            raise ValueError("only activation-gradient methods can be multi_exit")
        if not callable(self.fn):
            raise TypeError(f"Method fn must be callable, got {type(self.fn).__name__}")
        extras = self.uses_hvp or self.uses_key or self.scores is not None
        if extras and self.kind != "activation_gradient":
            raise ValueError("uses_hvp, uses_key and scores are for activation-gradient methods")
        if self.uses_key and self.multi_exit:
            raise ValueError("explain_exits does not provide uses_key: a multi_exit method "
                             "takes no random key")
        if self.layer_combine not in ("mean", "product"):
            raise ValueError(f"layer_combine must be 'mean' or 'product', "
                             f"got {self.layer_combine!r}")


@dataclasses.dataclass(frozen=True)
class LayerProbe:
    """What a ``"layer_score"`` method may ask of the model, for one batch and one layer.

    Attributes:
      images: the ``(B, H, W, C_in)`` model input.
      activations: the tapped layer's ``(B, h, w, C)`` activations.
      score_images: images ``(B, H, W, C_in)`` -> ``(B,)`` scores of the full model, each for
        the class chosen on the original image.
      score_activations: activations ``(B, h, w, C)`` -> ``(B,)`` scores of the network above
        the tapped layer, for the same classes.
    """

    images: jax.Array
    activations: jax.Array
    score_images: ScoreFn
    score_activations: ScoreFn


@dataclasses.dataclass(frozen=True)
class InputProbe:
    """What an ``"input"`` method may ask of the model, for one batch.

    Attributes:
      images: the ``(B, H, W, C)`` model input.
      score_images: images -> ``(B,)`` scores, each for the class chosen on the original image.
      key: a PRNG key (SmoothGrad's noise).
      layer_maps: ``layer_maps(name)`` -> ``(B, H, W)`` post-processed maps of the registered
        layer method ``name`` at the target layer (Guided Grad-CAM's Grad-CAM).
      model: ``model()`` -> the model itself in eval mode, inside the trace, where the adapter
        can give it (a Flax NNX model; else ``model`` is None): for methods that look inside
        it (FullGrad's biases).
      score_output: model output -> ``(B,)`` scores for the same classes as ``score_images``.
    """

    images: jax.Array
    score_images: ScoreFn
    key: jax.Array
    layer_maps: Callable[[str], jax.Array]
    model: Callable[[], Any] | None = None
    score_output: Callable[[Any], jax.Array] | None = None


_REGISTRY: dict[str, Method] = {}


def canonical_name(name: str) -> str:
    """``"Grad-CAM++"``-style spellings reduced to the registry's: lower case, no ``-``/``_``.

    Args:
      name: a method name as a user may write it.

    Returns:
      The name in the registry's form (``"gradcam"`` for ``"Grad_CAM"``).
    """
    return name.lower().replace("-", "").replace("_", "")


def register(method: Method) -> Method:
    """Add a method; from then on ``explain``, ``explain_exits`` (if ``multi_exit``), the
    :mod:`jaxcam.compat` classes and ``jaxcam methods`` know it.

    Args:
      method: the method's record.

    Returns:
      ``method`` (so a module may write ``METHOD = register(Method(...))``).

    Raises:
      ValueError: another method of that name is registered (:func:`unregister` it first).
    """
    held = _REGISTRY.get(method.name)
    if held is not None and held != method:
        raise ValueError(f"a method named {method.name!r} is already registered; "
                         "unregister it first")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> Method:
    """Remove a method (a test's, or one to be replaced).

    Args:
      name: the method's name.

    Returns:
      The removed record.

    Raises:
      ValueError: no such method.
    """
    method = get(name)
    del _REGISTRY[method.name]
    return method


@contextlib.contextmanager
def registered(method: Method) -> Iterator[Method]:
    """Register ``method`` for the duration of a ``with`` block (tests, experiments).

    Args:
      method: the method's record.

    Returns:
      A context manager yielding ``method`` and unregistering it on exit.
    """
    register(method)
    try:
        yield method
    finally:
        _REGISTRY.pop(method.name, None)


def get(name: str) -> Method:
    """The method called ``name`` (any spelling :func:`canonical_name` accepts).

    Args:
      name: the method's name.

    Returns:
      Its record.

    Raises:
      ValueError: no such method (the message lists the registered names).
    """
    method = _REGISTRY.get(canonical_name(name)) if isinstance(name, str) else None
    if method is None:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return method


def all_methods() -> tuple[Method, ...]:
    """Every registered method, in registration order."""
    return tuple(_REGISTRY.values())


def names(**where: bool | str) -> tuple[str, ...]:
    """Names of the registered methods whose attributes equal ``where``, in registration order.

    Args:
      **where: attribute values to match, e.g. ``multi_exit=True`` or ``kind="input"``.

    Returns:
      The matching names.

    Raises:
      TypeError: a keyword that is not a :class:`Method` attribute.
    """
    fields = {f.name for f in dataclasses.fields(Method)}
    unknown = sorted(set(where) - fields)
    if unknown:
        raise TypeError(f"names() got unknown Method attribute(s) {unknown}; "
                        f"valid: {sorted(fields)}")
    return tuple(m.name for m in _REGISTRY.values()
                 if all(getattr(m, k) == v for k, v in where.items()))

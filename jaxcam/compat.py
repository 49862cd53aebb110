"""pytorch-grad-cam's class interface, for people switching: ``GradCAM(model, target_layers)``.

A thin layer over :func:`jaxcam.explain`; a class holds the arguments, nothing else, and
computes nothing of its own. The classes are built from the method registry: every registered
method with a ``class_name`` has one (``jaxcam.compat.GradCAM``), a method registered later
included (:func:`cam_class`, or attribute access by its class name); ``BaseCAM(model, layers,
method="...")`` works for any registered method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxcam import methods, registry  # noqa: F401  (methods: registers the built-in methods)
from jaxcam._checks import check_keywords, keyword_names, strict_keywords
from jaxcam.explainer import explain

__all__ = ["BaseCAM", "cam_class", "GradCAM", "GradCAMPlusPlus", "XGradCAM", "HiResCAM",
           "GradCAMElementWise", "LayerCAM", "EigenCAM", "EigenGradCAM", "ScoreCAM",
           "AblationCAM"]


class BaseCAM:
    """``cam = GradCAM(model, target_layers=[...]); maps = cam(input_tensor, targets)``.

    Args:
      model: as for :func:`jaxcam.explain` (NNX module, Linen module, or function pair).
      target_layers: layer paths ('/'-separated strings or tuples; dotted names for PyTorch) or
        layer objects of the model (``model.layer3``, a Keras layer, an NNX submodule), found
        in it by identity; several are aggregated as
        pytorch-grad-cam aggregates them (ReLU, mean, min-max). None or ``[]`` for a function
        pair (its one tap point is the output of ``features_fn``).
      variables: a Linen model's variables.
      method: the registered method (the subclasses set it; ``BaseCAM`` itself needs it).
      reshape_transform: the layer's output -> its map, as pytorch-grad-cam's keyword (e.g.
        :func:`jaxcam.reshape.vit` for a ViT block); see :func:`jaxcam.explain`.
      layout: ``"NHWC"`` or ``"NCHW"`` images and layers (None: the model's own; see
        :func:`jaxcam.explain`).
      **method_options: passed to the method (e.g. ``batch_size`` for ScoreCAM); any other
        keyword is a ``TypeError`` naming the valid ones.
    """

    method: str = ""

    def __init__(self, model: Any, target_layers: Sequence[Any] | None, variables: Any = None,
                 method: str | None = None,
                 reshape_transform: Callable[..., Any] | None = None,
                 layout: str | None = None, **method_options: Any):
        if target_layers is not None and not isinstance(target_layers, list):
            # One layer: a path, or a layer object (a torch.nn.Sequential is iterable, yet one
            # layer).
            target_layers = [target_layers]
        if method is not None:
            self.method = registry.get(method).name
        elif not self.method:
            raise TypeError("BaseCAM needs method=... (a registered method's name); or use a "
                            "subclass such as GradCAM")
        check_keywords(f"{type(self).__name__}()", method_options, _INIT_KEYWORDS,
                       registry.get(self.method).options, f"options of method {self.method!r}")
        self.model = model
        self.target_layers = list(target_layers or [])
        self.variables = variables
        self.reshape_transform = reshape_transform
        self.layout = layout
        self.method_options = method_options

    @strict_keywords
    def __call__(self, input_tensor: Any, targets: Any = None, aug_smooth: bool = False,
                 eigen_smooth: bool = False) -> jax.Array:
        """Maps of a batch.

        Args:
          input_tensor: NHWC images (NCHW with ``layout="NCHW"`` or a PyTorch model).
          targets: as in :func:`jaxcam.explain`, or a list of
            ``jaxcam.targets.ClassifierOutputTarget`` (one per image).
          aug_smooth, eigen_smooth: as in :func:`jaxcam.explain`.

        Returns:
          (B, H, W) maps in [0, 1].
        """
        return explain(self.model, input_tensor, target_layer=self.target_layers or None,
                       targets=targets, method=self.method, variables=self.variables,
                       aug_smooth=aug_smooth, eigen_smooth=eigen_smooth, layout=self.layout,
                       reshape_transform=self.reshape_transform, **self.method_options)

    def __enter__(self) -> BaseCAM:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


_INIT_KEYWORDS = keyword_names(BaseCAM.__init__, skip=1)
_CLASSES: dict[registry.Method, type[BaseCAM]] = {}


def cam_class(method: str) -> type[BaseCAM]:
    """The pytorch-grad-cam-style class of a registered method (made once per registration).

    Args:
      method: the method's name.

    Returns:
      A :class:`BaseCAM` subclass named after the method's ``class_name`` (or its name).

    Raises:
      ValueError: no such method.
    """
    record = registry.get(method)
    cls = _CLASSES.get(record)
    if cls is None:
        name = record.class_name or record.name
        doc = (f"{name}: ``jaxcam.explain(..., method={record.name!r})`` as a class. "
               f"{record.paper}.")
        cls = type(name, (BaseCAM,), {"method": record.name, "__doc__": doc,
                                      "__module__": __name__})
        _CLASSES[record] = cls
    return cls


def __getattr__(name: str) -> type[BaseCAM]:
    """A class of a method registered after import, by its ``class_name``."""
    for record in registry.all_methods():
        if record.class_name == name:
            return cam_class(record.name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


GradCAM = cam_class("gradcam")
GradCAMPlusPlus = cam_class("gradcamplusplus")
XGradCAM = cam_class("xgradcam")
HiResCAM = cam_class("hirescam")
GradCAMElementWise = cam_class("gradcamelementwise")
LayerCAM = cam_class("layercam")
EigenCAM = cam_class("eigencam")
EigenGradCAM = cam_class("eigengradcam")
ScoreCAM = cam_class("scorecam")
AblationCAM = cam_class("ablationcam")

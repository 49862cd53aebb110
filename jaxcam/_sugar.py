"""pytorch-grad-cam's class interface, for people switching: ``GradCAM(model, target_layers)``.

A thin layer over :func:`jaxcam.explain`; it holds the arguments, nothing else, and computes
nothing of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from jaxcam._explain import explain

__all__ = [
    "BaseCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "XGradCAM",
    "HiResCAM",
    "GradCAMElementWise",
    "LayerCAM",
    "EigenCAM",
    "EigenGradCAM",
    "ScoreCAM",
    "AblationCAM",
]


class BaseCAM:
    """``cam = GradCAM(model, target_layers=[...]); maps = cam(input_tensor, targets)``.

    Args:
      model: as for :func:`jaxcam.explain` (NNX module, Linen module, or function pair).
      target_layers: layer paths ('/'-separated strings or tuples); several are aggregated as
        pytorch-grad-cam aggregates them (ReLU, mean, min-max).
      variables: a Linen model's variables.
      **method_options: passed to the method (e.g. ``batch_size`` for ScoreCAM).
    """

    method: str = ""

    def __init__(self, model: Any, target_layers: Sequence[Any], variables: Any = None,
                 **method_options: Any):
        if isinstance(target_layers, (str, tuple)):
            target_layers = [target_layers]
        self.model = model
        self.target_layers = list(target_layers)
        self.variables = variables
        self.method_options = method_options

    def __call__(self, input_tensor: Any, targets: Any = None, aug_smooth: bool = False,
                 eigen_smooth: bool = False) -> jax.Array:
        """(B, H, W) maps in [0, 1] for NHWC ``input_tensor``; ``targets`` as in ``explain``
        (also a list of ``jaxcam.targets.ClassifierOutputTarget``, one per image)."""
        return explain(self.model, input_tensor, target_layer=self.target_layers,
                       targets=targets, method=self.method, variables=self.variables,
                       aug_smooth=aug_smooth, eigen_smooth=eigen_smooth, **self.method_options)

    def __enter__(self) -> BaseCAM:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _cam_class(name: str, method: str, paper: str) -> type[BaseCAM]:
    doc = f"{name}: ``jaxcam.explain(..., method={method!r})`` as a class. {paper}"
    return type(name, (BaseCAM,), {"method": method, "__doc__": doc, "__module__": __name__})


GradCAM = _cam_class("GradCAM", "gradcam", "Selvaraju et al., ICCV 2017.")
GradCAMPlusPlus = _cam_class("GradCAMPlusPlus", "gradcamplusplus",
                             "Chattopadhyay et al., WACV 2018.")
XGradCAM = _cam_class("XGradCAM", "xgradcam", "Fu et al., BMVC 2020.")
HiResCAM = _cam_class("HiResCAM", "hirescam", "Draelos & Carin, 2020.")
GradCAMElementWise = _cam_class("GradCAMElementWise", "gradcamelementwise",
                                "pytorch-grad-cam's element-wise Grad-CAM.")
LayerCAM = _cam_class("LayerCAM", "layercam", "Jiang et al., IEEE TIP 2021.")
EigenCAM = _cam_class("EigenCAM", "eigencam", "Muhammad & Yeasin, IJCNN 2020.")
EigenGradCAM = _cam_class("EigenGradCAM", "eigengradcam", "pytorch-grad-cam's EigenGradCAM.")
ScoreCAM = _cam_class("ScoreCAM", "scorecam", "Wang et al., CVPR Workshops 2020.")
AblationCAM = _cam_class("AblationCAM", "ablationcam", "Desai & Ramaswamy, WACV 2020.")

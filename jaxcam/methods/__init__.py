"""Activation-gradient CAM methods: pure functions from a layer's activations and gradients to a
raw ``(B, h, w)`` map, exactly pytorch-grad-cam 1.5.7's math, in NHWC.

Every method is called as ``method(activations, gradients, eigen_smooth=False)``; the raw map then
goes through :func:`jaxcam.postprocess.postprocess`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from jaxcam.methods._common import principal_component_projection
from jaxcam.methods._eigencam import eigencam
from jaxcam.methods._eigengradcam import eigengradcam
from jaxcam.methods._gradcam import gradcam
from jaxcam.methods._gradcam_elementwise import gradcamelementwise
from jaxcam.methods._gradcam_plusplus import gradcamplusplus
from jaxcam.methods._hirescam import hirescam
from jaxcam.methods._layercam import layercam
from jaxcam.methods._xgradcam import xgradcam

# Lowercase method name -> fn(activations, gradients, *, eigen_smooth=False) -> (B, h, w) raw map.
ACTIVATION_GRADIENT_METHODS: dict[str, Callable[..., jax.Array]] = {
    "gradcam": gradcam,
    "gradcamplusplus": gradcamplusplus,
    "xgradcam": xgradcam,
    "hirescam": hirescam,
    "gradcamelementwise": gradcamelementwise,
    "layercam": layercam,
    "eigencam": eigencam,
    "eigengradcam": eigengradcam,
}

# Methods that read only the activations, so the caller may skip the backward pass.
ACTIVATION_ONLY: frozenset[str] = frozenset({"eigencam"})

__all__ = [
    "ACTIVATION_GRADIENT_METHODS",
    "ACTIVATION_ONLY",
    "eigencam",
    "eigengradcam",
    "gradcam",
    "gradcamelementwise",
    "gradcamplusplus",
    "hirescam",
    "layercam",
    "principal_component_projection",
    "xgradcam",
]

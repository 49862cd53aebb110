"""Every method's maths, a file each: :mod:`jaxcam.methods.layer` (Grad-CAM ... Score-CAM,
Ablation-CAM: a layer's activations to a raw map) and :mod:`jaxcam.methods.input` (saliency,
SmoothGrad, integrated gradients, guided backprop and Guided Grad-CAM: input attributions).

Importing this package registers every built-in method (:mod:`jaxcam.registry`). The
activation-gradient functions are also here by name (``jaxcam.methods.gradcam``), each called as
``method(activations, gradients, eigen_smooth=False)``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from jaxcam import registry

# isort: off
# Layer methods first: the registry lists methods in registration order.
from jaxcam.methods import layer
from jaxcam.methods import input
# isort: on
from jaxcam.methods.layer import (
    eigencam,
    eigengradcam,
    gradcam,
    gradcamelementwise,
    gradcamplusplus,
    hirescam,
    layercam,
    principal_component_projection,
    xgradcam,
)

# Lowercase method name -> fn(activations, gradients, *, eigen_smooth=False) -> (B, h, w) raw
# map, for the built-in activation-gradient methods (a snapshot of the registry at import).
ACTIVATION_GRADIENT_METHODS: dict[str, Callable[..., jax.Array]] = {
    m.name: m.fn for m in registry.all_methods() if m.kind == "activation_gradient"}

# Methods that read only the activations, so the caller may skip the backward pass.
ACTIVATION_ONLY: frozenset[str] = frozenset(
    registry.names(kind="activation_gradient", uses_gradients=False))

__all__ = [
    "ACTIVATION_GRADIENT_METHODS",
    "ACTIVATION_ONLY",
    "eigencam",
    "eigengradcam",
    "gradcam",
    "gradcamelementwise",
    "gradcamplusplus",
    "hirescam",
    "input",
    "layer",
    "layercam",
    "principal_component_projection",
    "xgradcam",
]

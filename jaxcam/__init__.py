"""jaxcam: class activation maps computed functionally in JAX.

``explain`` taps a layer of any JAX model (Flax NNX, Flax Linen, Equinox, Haiku, Keras 3 on
JAX, a PyTorch module run as JAX through torchax, or a pair of plain functions), takes
``jax.vjp`` of the target scores with respect to it, and turns activations and gradients into
maps in one jitted call; ``explain_exits`` does every exit of a multi-exit network in one
forward and one backward pass. ``Explainer`` and ``ExitExplainer`` do their per-model work
(splitting the model, checking layers) once, for explaining many batches with the same weights.
The maths of each method is a pure function in :mod:`jaxcam.methods`, registered in
:mod:`jaxcam.registry`; ``METHODS`` and ``EXIT_METHODS`` are queries on that registry.
"""

from typing import Any

from jaxcam import (
    adapters,
    compat,
    input_space,
    methods,
    metrics,
    postprocess,
    registry,
    reshape,
    targets,
    viz,
)
from jaxcam.adapters import EquinoxModel, HaikuModel, LinenModel
from jaxcam.compat import (
    AblationCAM,
    BaseCAM,
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from jaxcam.compile_cache import compile_stats, enable_compile_cache
from jaxcam.explainer import ExitExplainer, Explainer, explain, explain_exits
from jaxcam.targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

__all__ = [
    "explain",
    "explain_exits",
    "Explainer",
    "ExitExplainer",
    "LinenModel",
    "EquinoxModel",
    "HaikuModel",
    "enable_compile_cache",
    "compile_stats",
    "METHODS",
    "EXIT_METHODS",
    "adapters",
    "compat",
    "methods",
    "metrics",
    "input_space",
    "postprocess",
    "registry",
    "reshape",
    "targets",
    "viz",
    "ClassifierOutputTarget",
    "ClassifierOutputSoftmaxTarget",
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


def __getattr__(name: str) -> Any:
    """``METHODS`` (every registered method's name) and ``EXIT_METHODS`` (those that
    :func:`explain_exits` takes), read from the registry when asked, so they include methods
    registered after import."""
    if name == "METHODS":
        return registry.names()
    if name == "EXIT_METHODS":
        return registry.names(multi_exit=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""jaxcam: class activation maps computed functionally in JAX.

``explain`` taps a layer of any JAX model (Flax NNX, Flax Linen, or a pair of plain functions),
takes ``jax.vjp`` of the target scores with respect to it, and turns activations and gradients
into maps in one jitted call; ``explain_exits`` does every exit of a multi-exit network in one
forward and one backward pass. ``Explainer`` and ``ExitExplainer`` do their per-model work
(splitting the model, checking layers) once, for explaining many batches with the same weights.
The math of each method is a pure function in :mod:`jaxcam.methods` and :mod:`jaxcam.input_space`.
"""

from jaxcam import input_space, methods, metrics, postprocess, targets, viz
from jaxcam._exits import EXIT_METHODS, ExitExplainer, explain_exits
from jaxcam._explain import METHODS, Explainer, explain
from jaxcam._sugar import (
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
from jaxcam.targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

__all__ = [
    "explain",
    "explain_exits",
    "Explainer",
    "ExitExplainer",
    "METHODS",
    "EXIT_METHODS",
    "methods",
    "metrics",
    "input_space",
    "postprocess",
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

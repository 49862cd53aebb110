"""RefineCAM: several layers' maps multiplied together."""

from __future__ import annotations

from jaxcam.methods.layer._gradcam_plusplus import gradcamplusplus
from jaxcam.registry import Method, register

# RefineCAM is a way of combining layers, not new per-layer maths: each target layer's map is
# Grad-CAM++ (pytorch-grad-cam's default base_method), finished as a single-layer map would be
# (ReLU, min-max, resize, min-max); the maps are multiplied and the product min-max scaled
# (``Method.layer_combine = "product"``, done by the explain pipeline). Give it a list of
# target layers; with one layer it is Grad-CAM++.
METHOD = register(Method(
    name="refinecam", kind="activation_gradient", fn=gradcamplusplus,
    summary="product of several layers' Grad-CAM++ maps (denoises early layers)",
    paper="RefineCAM, arXiv 2605.14641 (as in pytorch-grad-cam 1.5.7)",
    class_name="RefineCAM", layer_combine="product"))

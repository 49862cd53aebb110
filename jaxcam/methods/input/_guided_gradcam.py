"""Guided Grad-CAM: guided backpropagation masked by a class activation map (Selvaraju et al.)."""

from __future__ import annotations

import jax

from jaxcam.methods.input._guided_backprop import guided_backprop
from jaxcam.registry import InputProbe, Method, register


def guided_gradcam(guided: jax.Array, cam: jax.Array) -> jax.Array:
    """Multiplies guided-backprop gradients by a CAM, pixel by pixel, for every channel.

    This is pytorch-grad-cam's recipe (``cam_mask * gb`` in its example script): the CAM must
    already be at input resolution (resized and normalised as the caller likes; pgc uses its
    final, min-max-normalised map).

    References:
        Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
        Localization", ICCV 2017.

    Args:
        guided: guided-backprop gradients ``(B, H, W, C)`` (see ``guided_backprop``).
        cam: class activation maps ``(B, H, W)`` at the same spatial size.

    Returns:
        ``guided * cam[..., None]``, ``(B, H, W, C)``.
    """
    if guided.ndim != 4 or cam.ndim != 3 or guided.shape[:3] != cam.shape:
        raise ValueError(
            f"guided_gradcam expects guided (B, H, W, C) and cam (B, H, W) of the same B, H, W; "
            f"got {guided.shape} and {cam.shape}"
        )
    return guided * cam[..., None]


def _guided_gradcam_probe(probe: InputProbe) -> jax.Array:
    """The registry's entry point: guided backprop times the layer's Grad-CAM map."""
    return guided_gradcam(guided_backprop(probe.score_images, probe.images),
                          probe.layer_maps("gradcam"))


METHOD = register(Method(
    name="guidedgradcam", kind="input", fn=_guided_gradcam_probe,
    summary="guided backprop masked by the Grad-CAM map of the target layer",
    paper="Selvaraju et al., ICCV 2017"))

"""Input-space and score-function methods: each a pure, jittable function of a score function.

``score_fn(images: (B, H, W, C)) -> (B,)`` gives one score per image (a class logit, say);
image ``b``'s score must depend on image ``b`` only. Gradient methods differentiate it with
respect to the input; Score-CAM calls it on masked inputs; Ablation-CAM calls the network's head
on ablated activations. All arrays are NHWC.
"""

from jaxcam.input_space._ablationcam import ablationcam, ablationcam_weights
from jaxcam.input_space._common import input_gradient, reduce_channels
from jaxcam.input_space._guided_backprop import guided_backprop, guided_relu_transform
from jaxcam.input_space._guided_gradcam import guided_gradcam
from jaxcam.input_space._integrated_gradients import integrated_gradients, integration_points
from jaxcam.input_space._resize import resize_bilinear_align_corners
from jaxcam.input_space._saliency import saliency
from jaxcam.input_space._scorecam import scorecam, scorecam_weights
from jaxcam.input_space._smoothgrad import smoothgrad, smoothgrad_from_noise, smoothgrad_noise

__all__ = [
    "ablationcam",
    "ablationcam_weights",
    "guided_backprop",
    "guided_gradcam",
    "guided_relu_transform",
    "input_gradient",
    "integrated_gradients",
    "integration_points",
    "reduce_channels",
    "resize_bilinear_align_corners",
    "saliency",
    "scorecam",
    "scorecam_weights",
    "smoothgrad",
    "smoothgrad_from_noise",
    "smoothgrad_noise",
]

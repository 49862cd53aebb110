"""Input-space methods: each a pure, jittable function of a score function.

``score_fn(images: (B, H, W, C)) -> (B,)`` gives one score per image (a class logit, say);
image ``b``'s score must depend on image ``b`` only. The methods differentiate it with respect
to the input; all arrays are NHWC. Each file registers its method
(:func:`jaxcam.registry.register`).
"""

# isort: off
# Imported in the order they are listed by `jaxcam methods` and jaxcam.METHODS: each import
# registers its method.
from jaxcam.methods.input._saliency import saliency
from jaxcam.methods.input._guided_backprop import guided_backprop, guided_relu_transform
from jaxcam.methods.input._guided_gradcam import guided_gradcam
from jaxcam.methods.input._smoothgrad import smoothgrad, smoothgrad_from_noise, smoothgrad_noise
from jaxcam.methods.input._integrated_gradients import integrated_gradients, integration_points
# isort: on
from jaxcam.methods.input._common import Reduction, input_gradient, reduce_channels

__all__ = [
    "Reduction",
    "guided_backprop",
    "guided_gradcam",
    "guided_relu_transform",
    "input_gradient",
    "integrated_gradients",
    "integration_points",
    "reduce_channels",
    "saliency",
    "smoothgrad",
    "smoothgrad_from_noise",
    "smoothgrad_noise",
]

"""Old home of the input-space methods: :mod:`jaxcam.methods.input` (and Score-CAM, Ablation-CAM
in :mod:`jaxcam.methods.layer`) under their old names."""

from jaxcam.methods.input import *  # noqa: F403
from jaxcam.methods.input import __all__ as _input_all
from jaxcam.methods.layer import ablationcam, ablationcam_weights, scorecam, scorecam_weights
from jaxcam.postprocess import resize_bilinear_align_corners

__all__ = [*_input_all, "ablationcam", "ablationcam_weights", "resize_bilinear_align_corners",
           "scorecam", "scorecam_weights"]

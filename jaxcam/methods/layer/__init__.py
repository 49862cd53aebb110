"""Layer methods: pure functions from a layer's activations (and gradients or scores) to a raw
``(B, h, w)`` map, exactly pytorch-grad-cam 1.5.7's math, in NHWC.

Each file holds one method and registers it (:func:`jaxcam.registry.register`); a new layer CAM
method is one more file imported here. The activation-gradient methods are called as
``method(activations, gradients, eigen_smooth=False)``; the raw map then goes through
:func:`jaxcam.postprocess.postprocess`.
"""

# isort: off
# Imported in the order they are listed by `jaxcam methods` and jaxcam.METHODS: each import
# registers its method.
from jaxcam.methods.layer._gradcam import gradcam
from jaxcam.methods.layer._gradcam_plusplus import gradcamplusplus
from jaxcam.methods.layer._xgradcam import xgradcam
from jaxcam.methods.layer._hirescam import hirescam
from jaxcam.methods.layer._gradcam_elementwise import gradcamelementwise
from jaxcam.methods.layer._layercam import layercam
from jaxcam.methods.layer._eigencam import eigencam
from jaxcam.methods.layer._eigengradcam import eigengradcam
from jaxcam.methods.layer._scorecam import (
    MASK_EPS,
    scorecam,
    scorecam_from_scores,
    scorecam_masks,
    scorecam_weights,
)
from jaxcam.methods.layer._ablationcam import ablationcam, ablationcam_weights
from jaxcam.methods.layer._fem import fem
from jaxcam.methods.layer._kpcacam import kernel_pca_projection, kpcacam
from jaxcam.methods.layer._segeigencam import segeigencam, sign_corrected_projection
from jaxcam.methods.layer._shapleycam import shapleycam
from jaxcam.methods.layer._finercam import finer_scores, finercam
from jaxcam.methods.layer._randomcam import random_channel_weights, randomcam
from jaxcam.methods.layer._refinecam import METHOD as _REFINECAM  # noqa: F401
from jaxcam.methods.layer._fullgrad import bias_layers, fullgrad, fullgrad_from_gradients
from jaxcam.methods.layer._dff import DeepFeatureFactorization, dff, nmf
from jaxcam.methods.layer._sess import sess, sess_scales
# isort: on
from jaxcam.methods.layer._common import (
    LAYOUT_RULE,
    combine_channels,
    principal_component_projection,
    resolve_layout,
)

__all__ = [
    "LAYOUT_RULE",
    "resolve_layout",
    "sess_scales",
    "sess",
    "nmf",
    "dff",
    "DeepFeatureFactorization",
    "fullgrad_from_gradients",
    "fullgrad",
    "bias_layers",
    "randomcam",
    "random_channel_weights",
    "finercam",
    "finer_scores",
    "shapleycam",
    "sign_corrected_projection",
    "segeigencam",
    "kpcacam",
    "kernel_pca_projection",
    "fem",
    "MASK_EPS",
    "ablationcam",
    "ablationcam_weights",
    "combine_channels",
    "eigencam",
    "eigengradcam",
    "gradcam",
    "gradcamelementwise",
    "gradcamplusplus",
    "hirescam",
    "layercam",
    "principal_component_projection",
    "scorecam",
    "scorecam_from_scores",
    "scorecam_masks",
    "scorecam_weights",
    "xgradcam",
]

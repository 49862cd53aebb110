"""Data for MSD-Net: a procedural shape data set with object masks, CIFAR, image folders, and an
on-device batch pipeline with augmentation.

Every loader returns an ``ArrayDataset`` (uint8 RGB images, int32 labels, class names and the
normalisation to use); ``batches`` feeds one to a training loop.
"""

from msdnet_flax.data._dataset import ArrayDataset, normalize
from msdnet_flax.data.cifar import load_cifar
from msdnet_flax.data.folder import load_image_folder
from msdnet_flax.data.pipeline import (
    augment_cifar,
    augment_imagenet,
    batches,
    cifar_augment_params,
    epoch_order,
    imagenet_augment_params,
    steps_per_epoch,
)
from msdnet_flax.data.procedural import CLASS_NAMES, generate

__all__ = [
    "CLASS_NAMES",
    "ArrayDataset",
    "augment_cifar",
    "augment_imagenet",
    "batches",
    "cifar_augment_params",
    "epoch_order",
    "generate",
    "imagenet_augment_params",
    "load_cifar",
    "load_image_folder",
    "normalize",
    "steps_per_epoch",
]

"""Training an MSD-Net as the paper does: configuration, optimizer and step, the loop, bundling."""

from msdnet_flax.training.config import TrainConfig
from msdnet_flax.training.loop import train
from msdnet_flax.training.step import make_optimizer, make_schedule

__all__ = ["TrainConfig", "make_optimizer", "make_schedule", "train"]

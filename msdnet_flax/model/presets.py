"""The MSD-Net configurations of the paper, as kalviny/MSDNet-PyTorch's README trains them."""

from __future__ import annotations

from msdnet_flax.model.config import MSDNetConfig

__all__ = [
    "cifar10_anytime",
    "cifar100_anytime",
    "cifar100_budgeted",
    "imagenet_step4",
    "imagenet_step7",
    "PRESETS",
    "get_config",
]


def cifar10_anytime(num_classes: int = 10) -> MSDNetConfig:
    """CIFAR-10 anytime prediction: 10 blocks, step 2, base 4, 16 channels, growth 6."""
    return MSDNetConfig(data="cifar", num_classes=num_classes, n_blocks=10, n_channels=16,
                        base=4, step=2, step_mode="even", growth_rate=6,
                        gr_factor=(1, 2, 4), bn_factor=(1, 2, 4))


def cifar100_anytime(num_classes: int = 100) -> MSDNetConfig:
    """CIFAR-100 anytime prediction: 7 blocks, step 2, base 4, 16 channels, growth 6."""
    return MSDNetConfig(data="cifar", num_classes=num_classes, n_blocks=7, n_channels=16,
                        base=4, step=2, step_mode="even", growth_rate=6,
                        gr_factor=(1, 2, 4), bn_factor=(1, 2, 4))


def cifar100_budgeted(num_classes: int = 100) -> MSDNetConfig:
    """CIFAR-100 budgeted batch classification: 5 blocks, lin_grow, step 1, base 1."""
    return MSDNetConfig(data="cifar", num_classes=num_classes, n_blocks=5, n_channels=16,
                        base=1, step=1, step_mode="lin_grow", growth_rate=6,
                        gr_factor=(1, 2, 4), bn_factor=(1, 2, 4))


def imagenet_step4(num_classes: int = 1000) -> MSDNetConfig:
    """ImageNet, 5 blocks, step 4, base 4, 32 channels, growth 16, four scales."""
    return MSDNetConfig(data="imagenet", num_classes=num_classes, n_blocks=5, n_channels=32,
                        base=4, step=4, step_mode="even", growth_rate=16,
                        gr_factor=(1, 2, 4, 4), bn_factor=(1, 2, 4, 4))


def imagenet_step7(num_classes: int = 1000) -> MSDNetConfig:
    """ImageNet, 5 blocks, step 7, base 7, 32 channels, growth 16, four scales."""
    return MSDNetConfig(data="imagenet", num_classes=num_classes, n_blocks=5, n_channels=32,
                        base=7, step=7, step_mode="even", growth_rate=16,
                        gr_factor=(1, 2, 4, 4), bn_factor=(1, 2, 4, 4))


PRESETS = {
    "cifar10_anytime": cifar10_anytime,
    "cifar100_anytime": cifar100_anytime,
    "cifar100_budgeted": cifar100_budgeted,
    "imagenet_step4": imagenet_step4,
    "imagenet_step7": imagenet_step7,
}


def get_config(name: str) -> MSDNetConfig:
    """A preset by name; an unknown name lists the known ones."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown MSD-Net preset {name!r}; known: {', '.join(PRESETS)}") from None

"""SmoothGrad: input gradients averaged over noisy copies of the image (Smilkov et al. 2017)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam._arrays import sum_in_chunks
from jaxcam.methods.input._common import Reduction, input_gradient, reduce_channels
from jaxcam.registry import InputProbe, Method, register
from jaxcam.targets import ScoreFn


def smoothgrad_noise(
    key: jax.Array, images: jax.Array, *, n_samples: int = 25, noise_level: float = 0.15
) -> jax.Array:
    """The noise ``smoothgrad`` adds: Gaussian, std ``noise_level * (max - min)`` of each image.

    Args:
        key: a ``jax.random`` key.
        images: the images ``(B, H, W, C)``.
        n_samples: noisy copies per image.
        noise_level: noise std as a fraction of each image's value range (the paper's 10-20%).

    Returns:
        ``(n_samples, B, H, W, C)`` noise, ``jax.random.normal(key, ...)`` scaled per image.
    """
    value_range = jnp.max(images, axis=(1, 2, 3)) - jnp.min(images, axis=(1, 2, 3))
    std = (noise_level * value_range)[None, :, None, None, None]
    return std * jax.random.normal(key, (n_samples, *images.shape), images.dtype)


def smoothgrad_from_noise(
    score_fn: ScoreFn,
    images: jax.Array,
    noise: jax.Array,
    *,
    square: bool = False,
    batch_size: int | None = None,
    reduce: Reduction = "none",
) -> jax.Array:
    """SmoothGrad with given noise: the mean over ``s`` of ``grad score(images + noise[s])``.

    Args:
        score_fn: images ``(B, H, W, C)`` -> scores ``(B,)``.
        images: the images ``(B, H, W, C)``.
        noise: ``(S, B, H, W, C)`` perturbations, one per sample.
        square: average the squared gradients instead (SmoothGrad-squared, Hooker et al. 2019;
            captum's ``nt_type="smoothgrad_sq"``).
        batch_size: noisy samples differentiated together (each a full batch of ``B`` images);
            ``None`` vmaps all ``S`` at once. Only memory and speed depend on it.
        reduce: channel reduction of the result, see ``reduce_channels``.

    Returns:
        ``(B, H, W, C)`` mean (squared) gradients, or ``(B, H, W)`` after a reduction.
    """

    def gradient(one_noise: jax.Array) -> jax.Array:
        grad = input_gradient(score_fn, images + one_noise)
        return grad * grad if square else grad

    total = sum_in_chunks(gradient, noise, batch_size)
    return reduce_channels(total / noise.shape[0], reduce)


def smoothgrad(
    score_fn: ScoreFn,
    images: jax.Array,
    *,
    key: jax.Array,
    n_samples: int = 25,
    noise_level: float = 0.15,
    square: bool = False,
    batch_size: int | None = None,
    reduce: Reduction = "none",
) -> jax.Array:
    """SmoothGrad: the input gradient averaged over Gaussian-perturbed copies of each image.

    The noise std is ``noise_level * (max - min)`` of each image (the paper's convention; captum's
    ``NoiseTunnel`` takes an absolute std instead). The noise is ``smoothgrad_noise(key, ...)``;
    ``smoothgrad_from_noise`` takes any noise, e.g. to reproduce another library's samples.
    Gradients are signed (as in the paper); reduce with ``"max_abs"`` for a saliency-style map.
    captum's ``NoiseTunnel(Saliency(model))`` defaults to averaging absolute gradients instead
    (``abs=True``), which is not the same map.

    References:
        Smilkov, Thorat, Kim, Viégas & Wattenberg, "SmoothGrad: removing noise by adding noise",
        ICML workshop 2017.

    Args:
        score_fn: images ``(B, H, W, C)`` -> scores ``(B,)``.
        images: the images ``(B, H, W, C)``.
        key: a ``jax.random`` key for the noise.
        n_samples: noisy copies per image.
        noise_level: noise std as a fraction of each image's value range.
        square: average squared gradients (SmoothGrad-squared).
        batch_size: noisy samples differentiated together; ``None`` vmaps all of them.
        reduce: channel reduction of the result, see ``reduce_channels``.

    Returns:
        ``(B, H, W, C)`` smoothed gradients, or ``(B, H, W)`` after a reduction.
    """
    noise = smoothgrad_noise(key, images, n_samples=n_samples, noise_level=noise_level)
    return smoothgrad_from_noise(
        score_fn, images, noise, square=square, batch_size=batch_size, reduce=reduce
    )


def _smoothgrad_probe(probe: InputProbe, *, n_samples: int = 25, noise_level: float = 0.15,
                      square: bool = False, batch_size: int | None = None) -> jax.Array:
    """The registry's entry point: SmoothGrad of the probed scores with the probe's key."""
    return smoothgrad(probe.score_images, probe.images, key=probe.key, n_samples=n_samples,
                      noise_level=noise_level, square=square, batch_size=batch_size)


METHOD = register(Method(
    name="smoothgrad", kind="input", fn=_smoothgrad_probe,
    summary="input gradients averaged over noisy copies of the image",
    paper="Smilkov et al., arXiv 1706.03825, 2017", needs_layer=False,
    options=("n_samples", "noise_level", "square", "batch_size")))

"""Score-CAM (Wang et al. 2020), as pytorch-grad-cam 1.5.7 computes it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam._arrays import map_in_chunks
from jaxcam.postprocess import resize_bilinear_align_corners
from jaxcam.registry import LayerProbe, Method, register
from jaxcam.targets import ScoreFn

# pytorch-grad-cam's guard against a constant channel in the min-max normalisation.
MASK_EPS = 1e-8


def scorecam_masks(channels: jax.Array, image_size: tuple[int, int]) -> jax.Array:
    """Score-CAM's masks: activation channels upsampled to the image and min-max normalised.

    Upsampling is bilinear with ``align_corners=True`` (pgc uses
    ``torch.nn.UpsamplingBilinear2d``); each mask is scaled as ``(u - min) / (max - min + 1e-8)``
    over its own pixels.

    Args:
      channels: ``(..., B, h, w)`` activation channels (any leading axes, e.g. channels first).
      image_size: ``(H, W)`` of the images.

    Returns:
      ``(..., B, H, W)`` masks in ``[0, 1]``.
    """
    lead = channels.shape[:-2]
    flat = channels.reshape(-1, *channels.shape[-2:])
    mask = resize_bilinear_align_corners(flat, image_size).reshape(*lead, *image_size)
    low = jnp.min(mask, axis=(-2, -1), keepdims=True)
    high = jnp.max(mask, axis=(-2, -1), keepdims=True)
    return (mask - low) / (high - low + MASK_EPS)


def scorecam_from_scores(scores: jax.Array, activations: jax.Array) -> jax.Array:
    """The Score-CAM raw map from each channel's masked-image score.

    Args:
      scores: ``(C, B)`` score of image ``b`` masked by its channel ``c``.
      activations: the target layer's ``(B, h, w, C)`` activations.

    Returns:
      ``(B, h, w)`` raw map ``sum_c softmax_c(scores) A_c``.
    """
    weights = jax.nn.softmax(scores.T, axis=-1)
    return jnp.einsum("bc,bhwc->bhw", weights, activations, precision=jax.lax.Precision.HIGHEST)


def scorecam_weights(
    images: jax.Array, activations: jax.Array, score_fn: ScoreFn, *, batch_size: int | None = 16
) -> jax.Array:
    """Score-CAM channel weights: softmax over channels of the score of each masked image.

    For every channel ``c``: upsample ``activations[..., c]`` to the image size (bilinear,
    ``align_corners=True``: pgc uses ``torch.nn.UpsamplingBilinear2d``), min-max normalise it
    per image (``(u - min) / (max - min + 1e-8)``), multiply the image by it (all colour
    channels) and score the result with the full model. The weights are the softmax of those
    scores over channels. Image ``b``'s masked copies are scored with image ``b``'s target,
    because ``score_fn`` is always called on a batch whose row ``b`` comes from image ``b``.

    Args:
        images: the model input ``(B, H, W, C_in)``.
        activations: the target layer's activations ``(B, h, w, C)`` for those images.
        score_fn: images ``(B, H, W, C_in)`` -> scores ``(B,)``, the full model and target.
        batch_size: activation channels scored together, each a batch of ``B`` masked images
            (pgc's ``batch_size``, default 16); ``None`` scores all channels at once. Only
            memory and speed depend on it.

    Returns:
        ``(B, C)`` weights, each row summing to 1.
    """
    image_size = (images.shape[1], images.shape[2])

    def channel_scores(channel: jax.Array) -> jax.Array:
        return score_fn(images * scorecam_masks(channel, image_size)[..., None])

    # Channels are mapped over at the activations' resolution, so a chunk's masks are the only
    # full-resolution copies alive at once.
    scores = map_in_chunks(channel_scores, jnp.moveaxis(activations, -1, 0), batch_size)
    return jax.nn.softmax(scores.T, axis=-1)


def scorecam(
    images: jax.Array, activations: jax.Array, score_fn: ScoreFn, *, batch_size: int | None = 16
) -> jax.Array:
    """Score-CAM: activations weighted by how much each channel, used as a mask, raises the score.

    Returns the raw map ``sum_c w_c * A_c`` at the activations' resolution, before the ReLU,
    normalisation and resizing pgc applies (``BaseCAM.compute_cam_per_layer``); see
    ``scorecam_weights`` for the weights.

    References:
        Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
        Networks", CVPR workshops 2020.

    Args:
        images: the model input ``(B, H, W, C_in)``.
        activations: the target layer's activations ``(B, h, w, C)`` for those images.
        score_fn: images ``(B, H, W, C_in)`` -> scores ``(B,)``, the full model and target.
        batch_size: activation channels scored together (see ``scorecam_weights``).

    Returns:
        ``(B, h, w)`` raw class activation maps.
    """
    weights = scorecam_weights(images, activations, score_fn, batch_size=batch_size)
    return jnp.einsum("bc,bhwc->bhw", weights, activations, precision=jax.lax.Precision.HIGHEST)


def _scorecam_probe(probe: LayerProbe, *, batch_size: int | None = 16) -> jax.Array:
    """The registry's entry point: Score-CAM of the probed layer."""
    return scorecam(probe.images, probe.activations, probe.score_images, batch_size=batch_size)


METHOD = register(Method(
    name="scorecam", kind="layer_score", fn=_scorecam_probe,
    summary="channels weighted by the score of the image masked by each (no gradients)",
    paper="Wang et al., CVPR Workshops 2020", uses_gradients=False, class_name="ScoreCAM",
    options=("batch_size",)))

"""SESS: Saliency Enhancing with Scaling and Sliding (arXiv 2207.01769, ECCV 2022), around any layer
method."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam.adapters import make_adapter
from jaxcam.postprocess import minmax_normalize, resize_bilinear

# cv2.GaussianBlur(cam, (11, 11), 5.0, 0), which pytorch-grad-cam's SESS applies to the fusion.
BLUR_SIZE, BLUR_SIGMA = 11, 5.0


def window_starts(length: int, step_size: int, window_size: int) -> list[int]:
    """The window starts along one axis; the last is shifted back inside (pytorch-grad-cam)."""
    starts = []
    for start in range(0, length, step_size):
        if start + window_size >= length:
            starts.append(max(length - window_size, 0))
            break
        starts.append(start)
    return starts


def sess_scales(window_size: int, num_scales: int = 12, scale_step_ratio: float = 2.0 / 7.0
                ) -> list[int]:
    """SESS's default scales: the window size, then steps of ``round(ratio * window)``."""
    step = int(round(window_size * scale_step_ratio))
    return [window_size + step * i for i in range(num_scales)]


def _resized_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """torchvision's ``resize(img, shorter)`` output size: the shorter side becomes
    ``shorter``, the longer ``int(shorter * long / short)``."""
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter


def _gaussian_blur(maps: jax.Array) -> jax.Array:
    """``cv2.GaussianBlur(m, (11, 11), 5.0, 0)`` per map: separable, BORDER_REFLECT_101."""
    x = np.arange(BLUR_SIZE) - (BLUR_SIZE - 1) / 2
    kernel = np.exp(-(x ** 2) / (2 * BLUR_SIGMA ** 2))
    kernel = jnp.asarray(kernel / kernel.sum(), maps.dtype)
    pad = BLUR_SIZE // 2
    padded = jnp.pad(maps, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    h, w = maps.shape[1:]
    rows = sum(kernel[i] * padded[:, i:i + h, :] for i in range(BLUR_SIZE))
    return sum(kernel[i] * rows[:, :, i:i + w] for i in range(BLUR_SIZE))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _outputs(adapter: Any, state: Any, output_index: int | None, images: jax.Array) -> Any:
    output = adapter.forward(state, images)[0]
    return output if output_index is None else output[output_index]


def sess(model: Any, images: Any, *, target_layer: Any, targets: Any = None,
         method: str = "gradcam", variables: Any = None, output_index: int | None = None,
         scales: Sequence[int] | None = None, num_scales: int = 12,
         scale_step_ratio: float = 2.0 / 7.0, window_size: int | None = None,
         step_size: int | None = None, pre_filter_ratio: float = 0.0, theta: float = 0.0,
         pool: str = "mean", smooth: bool = True, use_softmax_scores: bool = True,
         batch_size: int = 32, **method_options: Any) -> jax.Array:
    """SESS: a layer method's maps of many scaled, sliding-window patches, fused.

    As pytorch-grad-cam 1.5.7's ``SESS``: each image is resized so that its shorter side is
    each of ``scales`` (default :func:`sess_scales`: the window size and 11 larger sizes); a
    ``window_size`` square window slides over each with stride ``step_size`` (windows at the
    border shifted back inside). Every patch is scored (softmax probability of the image's
    target class, clipped at 0) and the lowest ``pre_filter_ratio`` discarded; the rest are
    explained by ``method`` for that class, weighted by score / best score, pasted back at
    their place in the scaled image, which is resized to the image, and fused per pixel by the
    mean over patches above ``theta`` (``pool="mean"``) or the maximum. The fusion is
    Gaussian-blurred (11x11, sigma 5) and min-max scaled per image.

    Args:
      model: a model :func:`jaxcam.explain` accepts.
      images: ``(B, H, W, C)`` images.
      target_layer: the base method's layer.
      targets: None (each image's top class), an int or a ``(B,)`` int array of classes.
      method: the base method (a registered layer method; pytorch-grad-cam's default is
        Grad-CAM).
      variables: a Linen model's variables.
      output_index: for a model with several outputs, the one targets refer to.
      scales, num_scales, scale_step_ratio: the shorter-side sizes (or how to make them).
      window_size: the window's side (default: the image's shorter side).
      step_size: the window's stride (default: the window size).
      pre_filter_ratio: the fraction of lowest-scoring patches not explained, in ``[0, 1)``.
      theta: the threshold of the mean fusion.
      pool: ``"mean"`` or ``"max"``.
      smooth: blur the fusion.
      use_softmax_scores: weight patches by the softmax probability (else the logit,
        clipped at 0).
      batch_size: patches explained per call (memory only).
      **method_options: the base method's own options.

    Returns:
      ``(B, H, W)`` float32 maps in ``[0, 1]``.

    Raises:
      ValueError: an invalid ``pool``, ``pre_filter_ratio``, ``num_scales`` or scale.

    References:
      Tursun, Denman, Sridharan & Fookes, "SESS: Saliency Enhancing with Scaling and
      Sliding", ECCV 2022. https://arxiv.org/abs/2207.01769
    """
    # The explainer imports the methods (so these imports wait for the call).
    from jaxcam._pipeline import explain_jit
    from jaxcam.explainer import Explainer

    if pool not in ("mean", "max"):
        raise ValueError(f"pool has to be either 'mean' or 'max'. Got: {pool}.")
    if not 0.0 <= pre_filter_ratio < 1.0:
        raise ValueError(f"pre_filter_ratio has to be in [0, 1). Got: {pre_filter_ratio}.")
    if num_scales < 1:
        raise ValueError(f"num_scales has to be at least 1. Got: {num_scales}.")
    images = jnp.asarray(images)
    batch, height, width, _ = images.shape
    window = window_size if window_size is not None else min(height, width)
    step = step_size if step_size is not None else window
    scales = list(scales) if scales is not None else sess_scales(window, num_scales,
                                                                  scale_step_ratio)
    if min(scales) < window:
        raise ValueError(f"Every scale has to be at least the window size {window}. "
                         f"Got: {min(scales)}.")
    adapter, state = make_adapter(model, [], variables)
    if targets is None:
        classes = np.asarray(jnp.argmax(_outputs(adapter, state, output_index, images), -1))
    else:
        classes = np.broadcast_to(np.asarray(targets), (batch,)).astype(np.int32)
    # Prepared per call, so the model's current weights are read (an NNX model's structure is
    # split once per model object: jaxcam.adapters._split_cache), and run through
    # jaxcam.explain's shared jitted function, keyed by the hashable adapter: a later call with
    # the same structure, layer, options and patch batch shapes compiles nothing. (The
    # explainer's own jitted function would be a new jax.jit per call, so a new compilation.)
    explainer = Explainer(model, target_layer=target_layer, method=method, variables=variables,
                          output_index=output_index, **method_options)
    explain_patches = functools.partial(explainer._run,
                                        functools.partial(explain_jit, explainer._adapter))

    # The patches of one image: (scale's size, window corner) pairs, the same for every image.
    channels_first = jnp.moveaxis(images, -1, 1)
    patches, places = [], []
    for scale in scales:
        size = _resized_size(height, width, scale)
        scaled = jnp.moveaxis(resize_bilinear(channels_first, size), 1, -1)
        for y in window_starts(size[0], step, window):
            for x in window_starts(size[1], step, window):
                patches.append(scaled[:, y:y + window, x:x + window])
                places.append((size, y, x))
    patches = jnp.stack(patches, axis=1)  # (B, P, window, window, C)

    fused = []
    for b in range(batch):
        target = int(classes[b])
        outputs = jnp.concatenate([_outputs(adapter, state, output_index,
                                            patches[b, i:i + batch_size])
                                   for i in range(0, len(places), batch_size)])
        if use_softmax_scores:
            outputs = jax.nn.softmax(outputs, axis=-1)
        scores = np.maximum(np.asarray(outputs[:, target]), 0)
        order = np.argsort(scores)[int(len(scores) * pre_filter_ratio):]
        best = scores[order[-1]]
        weights = scores[order] / best if best > 0 else np.ones(len(order), np.float32)
        cams = jnp.concatenate([explain_patches(patches[b, order[i:i + batch_size]], target, None)
                                for i in range(0, len(order), batch_size)])
        total = jnp.zeros((height, width), jnp.float32)
        counts = jnp.zeros((height, width), jnp.float32)
        for cam, weight, index in zip(cams, weights, order, strict=True):
            size, y, x = places[index]
            # Fused in float32 whatever the model's dtype, as pytorch-grad-cam does.
            pasted = (cam * weight).astype(jnp.float32)
            full = jnp.zeros(size, jnp.float32).at[y:y + window, x:x + window].set(pasted)
            full = resize_bilinear(full, (height, width))
            if pool == "max":
                total = jnp.maximum(total, full)
            else:
                mask = full > theta
                total = total + jnp.where(mask, full, 0.0)
                counts = counts + mask
        if pool == "mean":
            total = jnp.where(counts > 0, total / jnp.where(counts > 0, counts, 1.0), 0.0)
        fused.append(total)
    maps = jnp.stack(fused)
    if smooth:
        maps = _gaussian_blur(maps)
    return minmax_normalize(maps)

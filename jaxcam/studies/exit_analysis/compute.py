"""Running a multi-exit model on one batch: every exit's maps, and their faithfulness.

Perturbed images (deletion / insertion steps, Score-CAM's masked copies) are scored by one small
jitted function per exit, ``exit k's logits from the images``, called on fixed-size chunks of
rows: only the blocks up to exit k are compiled into it, each exit compiles once for every
method and every step, and the cost of a perturbation is that of the truncated network.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcam import explain_exits
from jaxcam.adapters import merge_eval
from jaxcam.methods.layer import scorecam_from_scores, scorecam_masks
from jaxcam.metrics import auc, curve_fractions, rise_blur, saliency_ranks
from jaxcam.postprocess import postprocess

__all__ = ["ExitScorer", "gradient_maps", "scorecam_maps", "faithfulness"]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _exit_logits(graphdef: nnx.GraphDef, k: int, state: Any, images: jax.Array) -> jax.Array:
    # exit_features builds every block; XLA drops those after exit k, which nothing here uses.
    model = merge_eval(graphdef, state)
    return model.classify(k, model.exit_features(images)[k])


@functools.partial(jax.jit, static_argnums=(0,))
def _features(graphdef: nnx.GraphDef, state: Any, images: jax.Array) -> list[jax.Array]:
    return merge_eval(graphdef, state).exit_features(images)


class ExitScorer:
    """Exit k's logits of any number of images, in jitted chunks of ``rows`` images.

    Args:
      model: a multi-exit NNX model (``exit_features`` / ``classify``); an eval-mode copy is used.
      rows: images per jitted call (the last chunk is zero-padded), so each exit compiles once.
    """

    def __init__(self, model: Any, rows: int = 64):
        self.graphdef, self.state = nnx.split(merge_eval(*nnx.split(model)))
        self.rows = int(rows)

    def features(self, images: jax.Array) -> list[jax.Array]:
        """Every exit's classifier input for a batch."""
        return _features(self.graphdef, self.state, images)

    def logits(self, k: int, images: jax.Array) -> jax.Array:
        """``(R, C)`` logits of exit ``k`` for ``(R, H, W, 3)`` images."""
        n = images.shape[0]
        out = []
        for start in range(0, n, self.rows):
            chunk = images[start:start + self.rows]
            pad = self.rows - chunk.shape[0]
            if pad:
                chunk = jnp.concatenate([chunk, jnp.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            out.append(_exit_logits(self.graphdef, int(k), self.state, chunk))
        return jnp.concatenate(out)[:n]


def gradient_maps(model: Any, images: jax.Array, targets: jax.Array, method: str
                  ) -> tuple[jax.Array, jax.Array]:
    """Every exit's maps by ``jaxcam.explain_exits``: ``(K, B, H, W)`` maps, ``(K, B, C)`` logits.

    Args:
      model: the multi-exit model.
      images: ``(B, H, W, 3)`` normalised images.
      targets: ``(K, B)`` class of each image at each exit.
      method: an activation-gradient method.
    """
    return explain_exits(model, images, targets=targets, method=method, return_logits=True,
                         check_finite=False)


@functools.partial(jax.jit, static_argnums=(2,))
def _masked_copies(images: jax.Array, acts: jax.Array, size: tuple[int, int]) -> jax.Array:
    """``(c * B, H, W, 3)``: the images times each of ``c`` upsampled, min-max'd channels."""
    mask = scorecam_masks(acts, size)  # (c, B, H, W)
    return (images[None] * mask[..., None]).reshape(-1, *images.shape[1:])


@functools.partial(jax.jit, static_argnums=(3,))
def _scorecam_finish(scores: jax.Array, acts: jax.Array, images: jax.Array,
                     size: tuple[int, int]) -> jax.Array:
    return postprocess(scorecam_from_scores(scores, acts), size)


def _pick(logits: jax.Array, targets: jax.Array, copies: int) -> jax.Array:
    """``(copies, B)`` entries of ``(copies * B, C)`` logits at each image's target."""
    per = logits.reshape(copies, targets.shape[0], -1)
    return jnp.take_along_axis(per, targets[None, :, None].astype(jnp.int32), axis=-1)[..., 0]


def scorecam_maps(scorer: ExitScorer, images: jax.Array, targets: jax.Array,
                  channels_per_call: int | None = None) -> jax.Array:
    """Score-CAM maps of every exit, ``(K, B, H, W)``.

    The same maps as ``jaxcam.explain(model, images, method='scorecam',
    target_layer=model.exit_feature_path(k), output_index=k, targets=targets[k])`` (pytorch-grad-
    cam's Score-CAM: each channel of exit k's classifier input, upsampled and min-max normalised,
    masks the image; the channel's weight is the softmax over channels of exit k's target logit
    of the masked image), with exit k's scores computed through the blocks up to exit k only.

    Args:
      scorer: the model's :class:`ExitScorer`.
      images: ``(B, H, W, 3)`` normalised images.
      targets: ``(K, B)`` target classes.
      channels_per_call: channels masked together (default: as many as fill ``scorer.rows``).
    """
    b = images.shape[0]
    size = tuple(images.shape[1:3])
    per_call = channels_per_call or max(1, scorer.rows // b)
    maps = []
    for k, acts in enumerate(scorer.features(images)):
        channels = jnp.moveaxis(acts, -1, 0)  # (C, B, h, w)
        scores = []
        for start in range(0, channels.shape[0], per_call):
            part = channels[start:start + per_call]
            logits = scorer.logits(k, _masked_copies(images, part, size))
            scores.append(_pick(logits, targets[k], part.shape[0]))
        maps.append(_scorecam_finish(jnp.concatenate(scores), acts, images, size))
    return jnp.stack(maps)


@functools.partial(jax.jit, static_argnums=(2,))
def _curve_images(images: jax.Array, maps: jax.Array, steps: int) -> jax.Array:
    """``(2, steps + 1, B, H, W, C)`` deletion (to 0) and insertion (from RISE's blur) steps."""
    n = maps.shape[1] * maps.shape[2]
    counts = jnp.asarray((np.arange(steps + 1) * n) // steps, jnp.int32)
    moved = (saliency_ranks(maps)[None] < counts[:, None, None, None])[..., None]
    deletion = jnp.where(moved, jnp.zeros_like(images)[None], images[None])
    insertion = jnp.where(moved, images[None], rise_blur(images)[None])
    return jnp.stack([deletion, insertion])


def faithfulness(scorer: ExitScorer, images: jax.Array, maps: jax.Array, targets: jax.Array,
                 steps: int = 16) -> tuple[jax.Array, jax.Array]:
    """Deletion and insertion AUC (RISE) of every exit's maps, each ``(K, B)``.

    The curves of :func:`jaxcam.metrics.deletion_curve` (``baseline=0.0``: pixels become 0 in
    normalised space, the data set's mean colour) and :func:`jaxcam.metrics.insertion_curve`
    (from RISE's blur, 11 x 11, sigma 5), scored with exit k's softmax probability of exit k's
    target, and their :func:`jaxcam.metrics.auc` over :func:`jaxcam.metrics.curve_fractions`.

    Args:
      scorer: the model's :class:`ExitScorer`.
      images: ``(B, H, W, 3)`` normalised images.
      maps: ``(K, B, H, W)`` maps.
      targets: ``(K, B)`` target classes.
      steps: points per curve minus one.
    """
    b, h, w, c = images.shape
    fractions = jnp.asarray(curve_fractions(h * w, steps))
    deletion, insertion = [], []
    for k in range(maps.shape[0]):
        stack = _curve_images(images, maps[k], int(steps)).reshape(-1, h, w, c)
        probs = jax.nn.softmax(scorer.logits(k, stack), axis=-1)
        curves = _pick(probs, targets[k], 2 * (steps + 1)).reshape(2, steps + 1, b)
        deletion.append(auc(curves[0].T, fractions))
        insertion.append(auc(curves[1].T, fractions))
    return jnp.stack(deletion), jnp.stack(insertion)

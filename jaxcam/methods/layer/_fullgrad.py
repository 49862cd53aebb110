"""FullGrad: input gradients and every bias's gradient, as pytorch-grad-cam 1.5.7 computes it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcam.adapters import LayerPath, NnxAdapter
from jaxcam.postprocess import minmax_normalize, resize_bilinear
from jaxcam.registry import InputProbe, Method, register


def bias_layers(model: nnx.Module) -> tuple[list[LayerPath], list[jax.Array]]:
    """The layers whose biases FullGrad attributes to, and their (effective) biases.

    As pytorch-grad-cam's ``FullGrad``: every convolution with a bias (its bias) and every
    batch normalisation with one (in eval mode ``y = s x + b`` with the effective bias
    ``b = beta - mean * gamma / sqrt(var + eps)``). Only those with ``(B, h, w, C)`` outputs are
    used (pytorch-grad-cam takes ``Conv2d`` and ``BatchNorm2d``): see :func:`fullgrad`.

    Args:
      model: a Flax NNX model.

    Returns:
      The layers' paths (graph order) and their ``(C,)`` biases.
    """
    paths, biases = [], []
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm) and node.bias is not None:
            scale = node.scale[...] if node.scale is not None else 1.0
            bias = node.bias[...] - node.mean[...] * scale / jnp.sqrt(node.var[...]
                                                                      + node.epsilon)
        elif isinstance(node, nnx.Conv) and node.bias is not None:
            bias = node.bias[...]
        else:
            continue
        paths.append(tuple(str(p) for p in path))
        biases.append(bias)
    return paths, biases


def _scaled_channels(values: jax.Array, size: tuple[int, int]) -> jax.Array:
    """pytorch-grad-cam's ``scale_accross_batch_and_channels``, summed over channels: each
    ``(b, c)`` map of ``(B, h, w, C)`` min-max scaled, resized to ``size`` and the channels
    added up, ``(B, H, W)``.

    Bilinear resizing is linear and the same for every channel, so the channels are added
    before resizing (one map per image instead of C): equal up to rounding, and C times less
    work (1280 channels at 224 px was most of FullGrad's time)."""
    maps = jnp.moveaxis(values, -1, 1)  # (B, C, h, w)
    return resize_bilinear(jnp.sum(minmax_normalize(maps), axis=1), size)


def fullgrad_from_gradients(images: jax.Array, input_gradients: jax.Array,
                            biases: list[jax.Array], bias_gradients: list[jax.Array]
                            ) -> jax.Array:
    """FullGrad's map from the gradients: ``sum_c scale(|x g_x|_c) + sum_l sum_c scale(|b_l
    g_l|_c)``, where ``scale`` min-max scales one channel of one image and resizes it to the
    image (pytorch-grad-cam's ``FullGrad.compute_cam_per_layer``).

    Args:
      images: ``(B, H, W, C_in)`` inputs ``x``.
      input_gradients: ``(B, H, W, C_in)`` gradients of the scores w.r.t. ``x``.
      biases: each layer's ``(C_l,)`` bias ``b_l``.
      bias_gradients: each layer's ``(B, h_l, w_l, C_l)`` gradient of the scores w.r.t. its
        output.

    Returns:
      ``(B, H, W)`` maps, before the final min-max scaling.
    """
    size = images.shape[1:3]
    cam = _scaled_channels(jnp.abs(input_gradients * images), size)
    for bias, grads in zip(biases, bias_gradients, strict=True):
        cam = cam + _scaled_channels(jnp.abs(bias * grads), size)
    return cam


def fullgrad(probe: InputProbe) -> jax.Array:
    """FullGrad: the input-gradient map plus every bias-gradient map, each channel scaled.

    The full-gradient decomposition writes a ReLU network's output as ``g_x . x + sum of
    g_b . b`` over all biases; FullGrad shows each term's absolute value spatially (see
    :func:`fullgrad_from_gradients`). Every bias-carrying convolution and batch norm of the
    model is used (no ``target_layer``); a layer that does not lead to the explained output
    has zero gradients and adds nothing. pytorch-grad-cam pairs its list of biases (module
    definition order) with its list of gradients (execution order) and asserts they are as many,
    so it fails on a model with bias layers its forward pass does not run (other exits) and
    silently mismatches where the two orders differ; here each bias goes with its own layer.

    Args:
      probe: the pipeline's probe (needs a Flax NNX model).

    Returns:
      ``(B, H, W, 1)`` non-negative maps (the pipeline min-max scales them).

    Raises:
      TypeError: the model is not a Flax NNX model.

    References:
      Srinivas & Fleuret, "Full-Gradient Representation for Neural Network Visualization",
      NeurIPS 2019. https://arxiv.org/abs/1905.00780
    """
    if probe.model is None or probe.score_output is None:
        raise TypeError("FullGrad reads the model's biases, so it needs a Flax NNX model")
    model = probe.model()
    if not isinstance(model, nnx.Module):
        raise TypeError("FullGrad reads the model's biases, so it needs a Flax NNX model")
    paths, biases = bias_layers(model)
    adapter, leaves = NnxAdapter.prepare(nnx.split(model), paths)
    shapes = jax.eval_shape(lambda: adapter.forward(leaves, probe.images)[1])
    deltas = [jnp.zeros(s.shape, s.dtype) for s in shapes]

    def total_score(images: jax.Array, deltas: list[jax.Array]) -> jax.Array:
        edits = [lambda a, d=d: a + d for d in deltas]
        return jnp.sum(probe.score_output(adapter.forward(leaves, images, edits)[0]))

    input_grads, bias_grads = jax.grad(total_score, argnums=(0, 1))(probe.images, deltas)
    spatial = [i for i, s in enumerate(shapes) if len(s.shape) == 4]
    cam = fullgrad_from_gradients(probe.images, input_grads, [biases[i] for i in spatial],
                                  [bias_grads[i] for i in spatial])
    return cam[..., None]


METHOD = register(Method(
    name="fullgrad", kind="input", fn=fullgrad,
    summary="|input x gradient| plus |bias x gradient| of every conv/batch-norm bias",
    paper="Srinivas & Fleuret, NeurIPS 2019", needs_layer=False, class_name="FullGrad"))

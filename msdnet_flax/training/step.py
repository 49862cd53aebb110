"""The optimizer and the jitted data-parallel training step of an MSD-Net.

The paper's loss is the sum over exits of each exit's mean cross-entropy. The optimizer is
PyTorch's SGD as kalviny/MSDNet-PyTorch uses it: weight decay added to the gradient, then
(Nesterov) momentum, then the learning-rate schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcam.extend.conv_grad import fast_strided_conv_grads
from msdnet_flax.data import augment_cifar, augment_imagenet, normalize
from msdnet_flax.training.config import TrainConfig

__all__ = ["TrainState", "make_schedule", "make_optimizer", "make_train_step"]


class TrainState(NamedTuple):
    """Everything a step updates: ``nnx.State`` of the parameters and BatchNorm statistics, and
    the optax state."""

    params: Any
    batch_stats: Any
    opt_state: Any


def make_schedule(cfg: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate per step.

    ``'step'``: ``lr``, x0.1 from epoch ``ceil(0.5 * epochs)``, x0.01 from ``ceil(0.75 * epochs)``
    (kalviny's ``epoch >= epochs * 0.5`` rule); ``'cosine'``: ``lr/2 (1 + cos(pi t / T))`` per
    step. ``warmup_steps`` > 0 prepends a linear ramp from 0.
    """
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "step":
        bounds = {math.ceil(f * cfg.epochs) * steps_per_epoch: 0.1 for f in (0.5, 0.75)}
        main = optax.piecewise_constant_schedule(cfg.lr, bounds)
    else:
        main = optax.cosine_decay_schedule(cfg.lr, max(total - cfg.warmup_steps, 1))
    if not cfg.warmup_steps:
        return main
    warm = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
    if cfg.schedule == "step":  # the boundaries stay at their epochs
        return lambda t: jnp.where(t < cfg.warmup_steps, warm(t), main(t))
    return optax.join_schedules([warm, main], [cfg.warmup_steps])


def _kernel_mask(params: Any) -> Any:
    """True on convolution and linear kernels (no BatchNorm scale/bias, no linear bias)."""
    def is_kernel(path: Sequence[Any], _: Any) -> bool:
        return any(getattr(entry, "key", None) == "kernel" for entry in path)
    return jax.tree_util.tree_map_with_path(is_kernel, params)


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """PyTorch's SGD: ``g + weight_decay * w`` into (Nesterov) momentum, scaled by the schedule.

    ``decay_all`` decays every parameter, as kalviny's ``SGD(model.parameters(), ...)`` does;
    otherwise only convolution and linear kernels.
    """
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay, mask=None if cfg.decay_all else _kernel_mask),
        optax.sgd(make_schedule(cfg, steps_per_epoch), momentum=cfg.momentum,
                  nesterov=cfg.nesterov))


def _loss_fn(graphdef: nnx.GraphDef) -> Callable:
    def loss_fn(params, batch_stats, x, labels):
        model = nnx.merge(graphdef, params, batch_stats, copy=True)
        logits = model(x)
        exit_loss = jnp.stack([
            optax.softmax_cross_entropy_with_integer_labels(lg, labels).mean() for lg in logits])
        exit_acc = jnp.stack([jnp.mean(jnp.argmax(lg, -1) == labels) for lg in logits])
        return exit_loss.sum(), (nnx.state(model, nnx.BatchStat), exit_loss, exit_acc)
    return loss_fn


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, *,
                    mean: Sequence[float], std: Sequence[float], mesh: Mesh, augment: bool = True,
                    fast_conv_grads: bool = True) -> Callable:
    """The jitted data-parallel step ``(state, images, labels, key) -> (state, metrics)``.

    Args:
      graphdef: the model's graph in training mode (``nnx.split(model, nnx.Param,
        nnx.BatchStat)``).
      optimizer: from :func:`make_optimizer`.
      mean: normalisation mean (the [0, 1] scale).
      std: normalisation standard deviation.
      mesh: a mesh with a ``'data'`` axis; images and labels are sharded on it, the state is
        replicated.
      augment: apply ``augment_cifar(key, images)`` first (``augment_imagenet`` at the same
        size for images larger than 64x64).
      fast_conv_grads: on CPU devices, compute the input gradients of the strided convolutions
        XLA:CPU handles slowly with ``jaxcam``'s rewrite (``fast_strided_conv_grads``); about 3x
        faster steps for the tiny test network. Ignored on other platforms.

    Returns:
      ``step(state, images_uint8, labels, key)`` returning the new :class:`TrainState` (the old
      one is donated) and ``{'loss', 'exit_loss' (K,), 'exit_acc' (K,)}``.
    """
    loss_fn = _loss_fn(graphdef)
    if fast_conv_grads and mesh.devices.flat[0].platform == "cpu":
        loss_fn = fast_strided_conv_grads(loss_fn)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, images: jax.Array, labels: jax.Array, key: jax.Array):
        if augment and images.shape[1] <= 64:
            images = augment_cifar(key, images)
        elif augment:  # ImageNet-sized inputs: random resized crop and flip
            images = augment_imagenet(key, images, out_size=images.shape[1])
        x = normalize(images, mean, std)
        (loss, (batch_stats, exit_loss, exit_acc)), grads = grad_fn(
            state.params, state.batch_stats, x, labels)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "exit_loss": exit_loss, "exit_acc": exit_acc}
        return TrainState(params, batch_stats, opt_state), metrics

    replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(step, in_shardings=(replicated, data, data, replicated),
                   out_shardings=(replicated, replicated), donate_argnums=0)

"""Train an MSD-Net as the paper does: SGD on the sum of every exit's cross-entropy.

``train(TrainConfig(...))`` (or ``python -m msdnet_flax.train --help``) runs data-parallel over the
local devices: one jitted step takes the replicated parameters, BatchNorm statistics and optimizer
state and a batch of uint8 images sharded on the mesh's ``'data'`` axis; it augments and
normalises the images on the device, updates the BatchNorm statistics (training mode; the batch
statistics span the whole global batch) and returns the loss and every exit's accuracy.

The data order is a function of ``(seed, epoch)`` and the augmentation key of ``(seed, step)``,
so a run killed at any moment and restarted with the same ``out_dir`` resumes from its latest
checkpoint at the exact step and reproduces the uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from msdnet_flax.checkpoint import (
    latest_checkpoint,
    model_from_arrays,
    read_checkpoint,
    save_checkpoint,
    unflatten_into,
)
from msdnet_flax.data import ArrayDataset, augment_cifar, augment_imagenet, batches, normalize
from msdnet_flax.model import MSDNet
from msdnet_flax.runlog import Meter, Progress, RunLog
from msdnet_flax.train_config import TrainConfig

__all__ = ["TrainConfig", "TrainState", "train", "make_optimizer", "make_schedule",
           "make_train_step", "main"]

# Fields that may change between a run and its resumption without changing the result.
_RESUMABLE_CHANGES = {"out_dir", "log_every", "checkpoint_every", "keep", "devices", "validate",
                      "progress", "fast_conv_grads"}


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
      fast_conv_grads: compute strided convolutions' input gradients with
        ``jaxcam``'s rewrite, several times faster on XLA:CPU.

    Returns:
      ``step(state, images_uint8, labels, key)`` returning the new :class:`TrainState` (the old
      one is donated) and ``{'loss', 'exit_loss' (K,), 'exit_acc' (K,)}``.
    """
    loss_fn = _loss_fn(graphdef)
    if fast_conv_grads:
        from jaxcam._fast_conv_grad import fast_strided_conv_grads
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


def _check_resumable(cfg: TrainConfig, saved: dict[str, Any] | None) -> None:
    if saved is None:
        return
    now = cfg.to_dict()
    changed = sorted(k for k in now if k not in _RESUMABLE_CHANGES and now[k] != saved.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"{cfg.out_dir} holds a run with other settings ({diffs}); use another "
                         f"out_dir or the same settings to resume it")


def _validate(model: MSDNet, data: ArrayDataset, mean, std, batch_size: int) -> list[float]:
    from msdnet_flax.evaluate import predict

    logits = predict(model, data, batch_size, mean=mean, std=std)
    return (logits.argmax(-1) == data.labels[None]).mean(axis=1).tolist()


def train(cfg: TrainConfig, *, splits: dict[str, ArrayDataset | None] | None = None
          ) -> dict[str, Any]:
    """Train (or resume, if ``cfg.out_dir`` holds a checkpoint) until ``cfg.epochs`` are done.

    Writes ``out_dir/checkpoints/ckpt-*`` (each epoch and every ``checkpoint_every`` steps) and
    ``out_dir/log.jsonl`` (a ``"kind": "step"`` record every ``log_every`` steps, a
    ``"kind": "epoch"`` record per epoch with the validation accuracy of every exit).

    Args:
      cfg: the run's settings.
      splits: ``{'train', 'val'}`` data sets to use instead of :func:`sources.load_splits`.

    Returns:
      ``{'step', 'epoch', 'checkpoint', 'last_epoch'}``, the last epoch record (None if the run was
      already complete).
    """
    if splits is None:
        from msdnet_flax.sources import load_splits
        splits = load_splits(cfg)
    train_ds, val_ds = splits["train"], splits.get("val")
    model_config = cfg.model_config(train_ds.num_classes)
    devices = jax.local_devices()[:cfg.devices or None]
    if cfg.batch_size % len(devices):
        raise ValueError(f"batch_size {cfg.batch_size} is not a multiple of the {len(devices)} "
                         f"devices it is sharded over (set devices or batch_size)")
    steps_per_epoch = len(train_ds) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_ds)} training images make no batch of {cfg.batch_size}")
    total = steps_per_epoch * cfg.epochs
    mesh = Mesh(np.asarray(devices), ("data",))
    replicated, data_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    optimizer = make_optimizer(cfg, steps_per_epoch)
    schedule = make_schedule(cfg, steps_per_epoch)
    out_dir, ckpt_dir = Path(cfg.out_dir), Path(cfg.out_dir) / "checkpoints"
    out_dir.mkdir(parents=True, exist_ok=True)

    latest = latest_checkpoint(ckpt_dir)
    meter_state = None
    if latest is not None:
        arrays, meta = read_checkpoint(latest)
        _check_resumable(cfg, meta["train_config"])
        model = model_from_arrays(model_config, arrays, train=True)
        step = int(meta["step"])
        meter_state = meta["extra"].get("meter")
    else:
        model = MSDNet(model_config, rngs=nnx.Rngs(cfg.seed))
        model.train()
        step = 0
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    opt_state = optimizer.init(params)
    if latest is not None:
        opt_state = unflatten_into(opt_state, arrays, "opt_state")
    state = jax.device_put(TrainState(params, batch_stats, opt_state), replicated)
    train_step = make_train_step(graphdef, optimizer, mean=train_ds.mean, std=train_ds.std,
                                 mesh=mesh, augment=cfg.augment,
                                 fast_conv_grads=cfg.fast_conv_grads)

    meter = Meter(model_config.n_blocks, meter_state)
    log = RunLog(out_dir / "log.jsonl", resume_step=step)
    progress = Progress(total, steps_per_epoch, cfg.batch_size, enabled=cfg.progress)
    base_key = jax.random.key(cfg.seed)
    last_epoch_record = None

    def checkpoint(epoch: int) -> Path:
        snapshot = nnx.merge(graphdef, state.params, state.batch_stats)
        return save_checkpoint(
            ckpt_dir, snapshot, step=step, epoch=epoch, mean=train_ds.mean, std=train_ds.std,
            class_names=train_ds.class_names, train_config=cfg, opt_state=state.opt_state,
            extra={"meter": meter.state_dict()}, keep=cfg.keep)

    try:
        for epoch in range(step // steps_per_epoch, cfg.epochs):
            epoch_start, timed_from = time.perf_counter(), step
            if progress.started:
                progress.start(step)
            for images, labels in batches(train_ds, cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                          start_step=step - epoch * steps_per_epoch,
                                          sharding=data_sharding):
                state, metrics = train_step(state, images, labels,
                                            jax.random.fold_in(base_key, step))
                meter.add(metrics)
                step += 1
                if not progress.started:  # the first step compiled: time from here
                    jax.block_until_ready(metrics)
                    progress.start(step)
                    epoch_start, timed_from = time.perf_counter(), step
                if step % cfg.log_every == 0:
                    record = {"kind": "step", "step": step, "epoch": epoch,
                              "lr": float(schedule(step - 1)), **meter.mean("log")}
                    progress.update(step, meter.last)
                    log.write({**record, "images_per_s": progress.images_per_s,
                               "time": time.time()})
                elif meter.pending >= 50:
                    meter.fetch()
                    progress.update(step, meter.last)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 \
                        and step % steps_per_epoch:
                    checkpoint(epoch)
            seconds = time.perf_counter() - epoch_start
            record = {"kind": "epoch", "step": step, "epoch": epoch, **meter.mean("epoch")}
            progress.update(step, meter.last)
            if cfg.validate and val_ds is not None:
                eval_model = nnx.merge(graphdef, state.params, state.batch_stats)
                eval_model.eval()
                record["val_exit_acc"] = _validate(eval_model, val_ds, train_ds.mean,
                                                   train_ds.std, max(cfg.batch_size, 256))
            record["images_per_s"] = (step - timed_from) * cfg.batch_size / max(seconds, 1e-9)
            record["time"] = time.time()
            log.write(record)
            last_epoch_record = record
            checkpoint(epoch + 1)
            val = record.get("val_exit_acc")
            progress.newline(f"epoch {epoch + 1}/{cfg.epochs}: train loss {record['loss']:.4f}"
                             + (f", val acc last exit {100 * val[-1]:.2f}%" if val else ""))
    finally:
        log.close()
    final = latest_checkpoint(ckpt_dir)
    return {"step": step, "epoch": step // steps_per_epoch, "checkpoint": final,
            "last_epoch": last_epoch_record}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m msdnet_flax.train``: parse the flags and :func:`train`."""
    from msdnet_flax.train_config import config_from_args, parse

    args, has_arch = parse(argv)
    splits, num_classes = None, None
    if has_arch and args.arch_num_classes is None:  # the data decides the class count
        from msdnet_flax.sources import load_splits
        splits = load_splits(config_from_args(args, num_classes=1))
        num_classes = splits["train"].num_classes
    cfg = config_from_args(args, num_classes=num_classes)
    result = train(cfg, splits=splits)
    print(f"done: step {result['step']}, checkpoint {result['checkpoint']}")


if __name__ == "__main__":
    main()

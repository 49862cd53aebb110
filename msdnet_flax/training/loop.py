"""Train an MSD-Net as the paper does: SGD on the sum of every exit's cross-entropy.

``train(TrainConfig(...))`` (or ``python -m msdnet_flax.training --help``) runs data-parallel over
the local devices: one jitted step takes the replicated parameters, BatchNorm statistics and
optimizer state and a batch of uint8 images sharded on the mesh's ``'data'`` axis; it augments
and normalises the images on the device, updates the BatchNorm statistics (training mode; the batch
statistics span the whole global batch) and returns the loss and every exit's accuracy.

The data order is a function of ``(seed, epoch)`` and the augmentation key of ``(seed, step)``,
so a run killed at any moment and restarted with the same ``out_dir`` resumes from its latest
checkpoint at the exact step and reproduces the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
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
from msdnet_flax.data import ArrayDataset, batches
from msdnet_flax.model.msdnet import MSDNet
from msdnet_flax.training.config import TrainConfig
from msdnet_flax.training.runlog import Meter, Progress, RunLog
from msdnet_flax.training.step import TrainState, make_optimizer, make_schedule, make_train_step

__all__ = ["TrainConfig", "TrainState", "train", "make_optimizer", "make_schedule",
           "make_train_step", "main"]

# Fields that may change between a run and its resumption without changing the result.
_RESUMABLE_CHANGES = {"out_dir", "log_every", "checkpoint_every", "keep", "devices", "validate",
                      "progress", "fast_conv_grads", "max_steps"}
# Fields the compiled step does not depend on.
_NOT_IN_STEP = _RESUMABLE_CHANGES - {"fast_conv_grads"} | {
    "data", "data_path", "n_train", "n_val", "n_test", "difficulty", "data_seed", "holdout",
    "seed", "init_from"}


def _check_resumable(cfg: TrainConfig, saved: dict[str, Any] | None) -> None:
    if saved is None:
        return
    now = cfg.to_dict()
    changed = sorted(k for k in now if k not in _RESUMABLE_CHANGES and now[k] != saved.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"{cfg.out_dir} holds a run with other settings ({diffs}); use another "
                         f"out_dir or the same settings to resume it")


def _initial_model(path: str, model_config: Any) -> MSDNet:
    """The weights and BatchNorm statistics of checkpoint ``path``, in training mode."""
    arrays, meta = read_checkpoint(path)
    saved = meta["model_config"]
    if saved != model_config.to_dict():
        diffs = ", ".join(f"{k}: {saved.get(k)!r} (checkpoint) vs {v!r} (run)"
                          for k, v in model_config.to_dict().items() if saved.get(k) != v)
        raise ValueError(f"init_from={path!r} holds another architecture than this run's "
                         f"({diffs}); pick a checkpoint of the same model and class count")
    return model_from_arrays(model_config, arrays, train=True)


def _validate(model: MSDNet, data: ArrayDataset, mean, std, batch_size: int) -> list[float]:
    from msdnet_flax.evaluation.core import predict

    logits = predict(model, data, batch_size, mean=mean, std=std)
    return (logits.argmax(-1) == data.labels[None]).mean(axis=1).tolist()


def _step_settings(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the fields the compiled step does not depend on reset (a cache key)."""
    return dataclasses.replace(cfg, **{f.name: f.default for f in dataclasses.fields(cfg)
                                       if f.name in _NOT_IN_STEP})


@functools.lru_cache(maxsize=4)
def _cached_step(graphdef: nnx.GraphDef, cfg: TrainConfig, steps_per_epoch: int,
                 mean: tuple[float, ...], std: tuple[float, ...], devices: tuple) -> Callable:
    """The jitted step, shared by the ``train`` calls of one process (no recompilation when a
    run is resumed or repeated in the same process)."""
    mesh = Mesh(np.asarray(devices), ("data",))
    return make_train_step(graphdef, make_optimizer(cfg, steps_per_epoch), mean=mean, std=std,
                           mesh=mesh, augment=cfg.augment, fast_conv_grads=cfg.fast_conv_grads)


class _Run:
    """One training run's state and bookkeeping (see :func:`train`)."""

    def __init__(self, cfg: TrainConfig, train_ds: ArrayDataset, val_ds: ArrayDataset | None):
        self.cfg, self.train_ds, self.val_ds = cfg, train_ds, val_ds
        model_config = cfg.model_config(train_ds.num_classes)
        devices = jax.local_devices()[:cfg.devices or None]
        if cfg.devices > len(devices):
            hint = (" (on CPU, start with XLA_FLAGS=--xla_force_host_platform_device_count="
                    f"{cfg.devices})" if devices[0].platform == "cpu" else "")
            raise ValueError(f"devices={cfg.devices} asked for, but this process has "
                             f"{len(devices)} local device(s){hint}; set devices to at most "
                             f"{len(devices)} or 0 for all")
        if cfg.batch_size % len(devices):
            raise ValueError(f"batch_size {cfg.batch_size} is not a multiple of the "
                             f"{len(devices)} devices it is sharded over (set devices or "
                             f"batch_size)")
        self.steps_per_epoch = len(train_ds) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(train_ds)} training images make no batch of "
                             f"{cfg.batch_size}")
        mesh = Mesh(np.asarray(devices), ("data",))
        self.data_sharding = NamedSharding(mesh, P("data"))
        optimizer = make_optimizer(cfg, self.steps_per_epoch)  # for its state's structure
        self.schedule = make_schedule(cfg, self.steps_per_epoch)
        self.ckpt_dir = Path(cfg.out_dir) / "checkpoints"
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)

        latest = latest_checkpoint(self.ckpt_dir)
        meter_state, self.step = None, 0
        if latest is not None:
            arrays, meta = read_checkpoint(latest)
            _check_resumable(cfg, meta["train_config"])
            model = model_from_arrays(model_config, arrays, train=True)
            self.step = int(meta["step"])
            meter_state = meta["extra"].get("meter")
        elif cfg.init_from:
            model = _initial_model(cfg.init_from, model_config)
        else:
            model = MSDNet(model_config, rngs=nnx.Rngs(cfg.seed))
            model.train()
        self.graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        opt_state = optimizer.init(params)
        if latest is not None:
            opt_state = unflatten_into(opt_state, arrays, "opt_state")
        self.state = jax.device_put(TrainState(params, batch_stats, opt_state),
                                    NamedSharding(mesh, P()))
        self.train_step = _cached_step(self.graphdef, _step_settings(cfg), self.steps_per_epoch,
                                       tuple(train_ds.mean), tuple(train_ds.std), tuple(devices))
        self.meter = Meter(model_config.n_blocks, meter_state)
        self.log = RunLog(Path(cfg.out_dir) / "log.jsonl", resume_step=self.step)
        self.progress = Progress(self.steps_per_epoch * cfg.epochs, self.steps_per_epoch,
                                 cfg.batch_size, enabled=cfg.progress)
        self.base_key = jax.random.key(cfg.seed)
        self.last_epoch_record: dict[str, Any] | None = None

    def model(self, train: bool) -> MSDNet:
        model = nnx.merge(self.graphdef, self.state.params, self.state.batch_stats)
        if not train:
            model.eval()
        return model

    def checkpoint(self, epoch: int) -> None:
        save_checkpoint(
            self.ckpt_dir, self.model(train=True), step=self.step, epoch=epoch,
            mean=self.train_ds.mean, std=self.train_ds.std,
            class_names=self.train_ds.class_names, train_config=self.cfg,
            opt_state=self.state.opt_state, extra={"meter": self.meter.state_dict()},
            keep=self.cfg.keep)

    def after_step(self, epoch: int, metrics: dict[str, jax.Array]) -> None:
        cfg, step = self.cfg, self.step
        self.meter.add(metrics)
        if step % cfg.log_every == 0:
            record = {"kind": "step", "step": step, "epoch": epoch,
                      "lr": float(self.schedule(step - 1)), **self.meter.mean("log")}
            self.progress.update(step, self.meter.last)
            rate = self.progress.images_per_s
            self.log.write({**record, "images_per_s": rate if math.isfinite(rate) else None,
                            "time": time.time()})
        elif self.meter.pending >= 50 or self.progress.due():
            self.meter.fetch()
            self.progress.update(step, self.meter.last)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 \
                and step % self.steps_per_epoch:
            self.checkpoint(epoch)

    def run_epoch(self, epoch: int) -> bool:
        """Train (the rest of) ``epoch``; False if ``max_steps`` stopped it before its end."""
        cfg = self.cfg
        start, timed_from = time.perf_counter(), self.step
        if self.progress.started:
            self.progress.start(self.step)
        for images, labels in batches(self.train_ds, cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                      start_step=self.step - epoch * self.steps_per_epoch,
                                      sharding=self.data_sharding):
            self.state, metrics = self.train_step(self.state, images, labels,
                                                  jax.random.fold_in(self.base_key, self.step))
            self.step += 1
            if not self.progress.started:  # the first step compiled: time from here
                jax.block_until_ready(metrics)
                self.progress.start(self.step)
                start, timed_from = time.perf_counter(), self.step
            self.after_step(epoch, metrics)
            if cfg.max_steps and self.step >= cfg.max_steps \
                    and self.step % self.steps_per_epoch:
                if not (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                    self.checkpoint(epoch)
                self.progress.newline(f"stopped at step {self.step} (max_steps)")
                return False
        self.end_epoch(epoch, (self.step - timed_from) / max(time.perf_counter() - start, 1e-9))
        return not (cfg.max_steps and self.step >= cfg.max_steps)

    def end_epoch(self, epoch: int, steps_per_s: float) -> None:
        cfg = self.cfg
        record = {"kind": "epoch", "step": self.step, "epoch": epoch,
                  **self.meter.mean("epoch")}
        self.progress.update(self.step, self.meter.last)
        if cfg.validate and self.val_ds is not None:
            record["val_exit_acc"] = _validate(self.model(train=False), self.val_ds,
                                               self.train_ds.mean, self.train_ds.std,
                                               max(cfg.batch_size, 256))
        record.update(images_per_s=steps_per_s * cfg.batch_size, time=time.time())
        self.log.write(record)
        self.last_epoch_record = record
        self.checkpoint(epoch + 1)
        val = record.get("val_exit_acc")
        self.progress.newline(f"epoch {epoch + 1}/{cfg.epochs}: train loss {record['loss']:.4f}"
                              + (f", val acc last exit {100 * val[-1]:.2f}%" if val else ""))


def train(cfg: TrainConfig, *, splits: dict[str, ArrayDataset | None] | None = None
          ) -> dict[str, Any]:
    """Train (or resume, if ``cfg.out_dir`` holds a checkpoint) until ``cfg.epochs`` are done.

    Writes ``out_dir/checkpoints/ckpt-*`` (each epoch and every ``checkpoint_every`` steps) and
    ``out_dir/log.jsonl`` (a ``"kind": "step"`` record every ``log_every`` steps, a
    ``"kind": "epoch"`` record per epoch with the validation accuracy of every exit).

    Args:
      cfg: the run's settings.
      splits: ``{'train', 'val'}`` data sets to use instead of ``sources.load_splits(cfg)``.

    Returns:
      ``{'step', 'epoch', 'checkpoint', 'last_epoch'}``: the steps done, the epoch the next step
      belongs to, the latest checkpoint and the last epoch record written by this call (None if
      there was none).
    """
    if splits is None:
        from msdnet_flax.training.sources import load_splits
        splits = load_splits(cfg)
    run = _Run(cfg, splits["train"], splits.get("val"))
    try:
        for epoch in range(run.step // run.steps_per_epoch, cfg.epochs):
            if cfg.max_steps and run.step >= cfg.max_steps:
                break
            if not run.run_epoch(epoch):
                break
    finally:
        run.log.close()
    return {"step": run.step, "epoch": run.step // run.steps_per_epoch,
            "checkpoint": latest_checkpoint(run.ckpt_dir),
            "last_epoch": run.last_epoch_record}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m msdnet_flax.training``: parse the flags and :func:`train`."""
    from msdnet_flax.training.config import config_from_args, parse

    args, has_arch = parse(argv)
    splits, num_classes = None, None
    if has_arch and args.arch_num_classes is None:  # the data decides the class count
        from msdnet_flax.training.sources import load_splits
        splits = load_splits(config_from_args(args, num_classes=1))
        num_classes = splits["train"].num_classes
    cfg = config_from_args(args, num_classes=num_classes)
    result = train(cfg, splits=splits)
    print(f"done: step {result['step']}, checkpoint {result['checkpoint']}")


if __name__ == "__main__":
    main()

"""Training: the loss goes down, sharding leaves it unchanged, a killed run resumes exactly,
checkpoints describe themselves, and the optimizer is PyTorch's SGD.

The expensive part, a 2-epoch run of a tiny MSD-Net on 8 CPU devices, happens once per session in
a subprocess (``python -m msdnet_flax.training``); a second one is killed with SIGKILL after its
first checkpoint and resumed. The three share a persistent compilation cache, so only the first
compiles.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from msdnet_flax import MSDNetConfig
from msdnet_flax.checkpoint import read_checkpoint
from msdnet_flax.training.config import config_from_args, config_to_argv, parse
from msdnet_flax.training.loop import TrainConfig, make_optimizer, make_schedule, train
from msdnet_flax.training.runlog import TIMING_KEYS
from msdnet_flax.training.sources import load_splits

TINY = MSDNetConfig(data="cifar", num_classes=10, n_blocks=2, n_channels=8, base=1, step=1,
                    growth_rate=6)
STEPS_PER_EPOCH = 50
RUN = TrainConfig(model=TINY, data="procedural", n_train=32 * STEPS_PER_EPOCH, n_val=128,
                  n_test=64, difficulty=(0.0, 0.0), epochs=2, batch_size=32, lr=0.05,
                  schedule="cosine", augment=True, log_every=1, checkpoint_every=20, keep=10,
                  seed=3, progress=False, out_dir="unused")
TOTAL = RUN.epochs * STEPS_PER_EPOCH
# The killed run: checkpoints every 5 steps, killed after its first, resumed up to step 20, then
# compared with the uninterrupted run's checkpoint of step 20 (these fields do not change the
# numbers).
KILLED = {"checkpoint_every": 5, "max_steps": 20}
_RUNS: dict[str, Path] = {}


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)  # conftest's XLA_FLAGS: the same 8 CPU devices as this process
    env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]),
                                           env.get("PYTHONPATH", "")]))
    return env


def _command(out_dir: Path, **changes) -> list[str]:
    cfg = dataclasses.replace(RUN, out_dir=str(out_dir), **changes)
    return [sys.executable, "-m", "msdnet_flax.training", *config_to_argv(cfg)]


def _runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run once per session: 'full' (uninterrupted, 2 epochs) and 'resumed' (killed after its
    first checkpoint, then resumed up to ``KILLED['max_steps']``)."""
    if _RUNS:
        return _RUNS
    root = tmp_path_factory.mktemp("train_runs")
    env = _env(root / "jax_cache")
    full = subprocess.run(_command(root / "full"), env=env, capture_output=True, text=True,
                          timeout=300)
    assert full.returncode == 0, full.stderr[-3000:]

    resumed = root / "resumed"
    proc = subprocess.Popen(_command(resumed, **KILLED), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    latest = resumed / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while not latest.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be killed: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within 240 s")
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(latest.read_text().split("-")[1])
    assert 0 < killed_at < KILLED["max_steps"], killed_at
    again = subprocess.run(_command(resumed, **KILLED), env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    _RUNS.update(full=root / "full", resumed=resumed)
    _RUNS["killed_at"] = killed_at  # type: ignore[assignment]
    return _RUNS


@pytest.fixture
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _runs(tmp_path_factory)


def _log(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def test_two_epochs_lower_the_loss_and_beat_chance(runs):
    epochs = [r for r in _log(runs["full"]) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    # Epoch means over 50 steps: a drop of 0.05 is several standard errors; 1600 images at 12%
    # are 2.7 standard deviations above chance (10%).
    assert epochs[1]["loss"] < epochs[0]["loss"] - 0.05
    assert max(epochs[1]["exit_acc"]) > 0.12
    steps = [r for r in _log(runs["full"]) if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, TOTAL + 1))
    assert all(len(r["exit_acc"]) == TINY.n_blocks for r in steps)
    assert all(len(r["val_exit_acc"]) == TINY.n_blocks for r in epochs)


def test_killed_run_resumes_exactly(runs):
    n = KILLED["max_steps"]
    assert runs["killed_at"] % STEPS_PER_EPOCH, "the kill should land mid-epoch"
    full, resumed = _log(runs["full"])[:n], _log(runs["resumed"])
    assert [r["step"] for r in resumed] == list(range(1, n + 1))  # none lost or repeated
    assert resumed == full  # every logged number
    a, meta_a = read_checkpoint(runs["full"] / "checkpoints" / f"ckpt-{n:08d}")
    b, meta_b = read_checkpoint(runs["resumed"])
    assert meta_a["step"] == meta_b["step"] == n
    assert meta_a["extra"] == meta_b["extra"]
    assert sorted(a) == sorted(b)
    assert any(k.startswith("opt_state/") for k in a)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)


def test_sharded_steps_equal_one_device(runs, tmp_path):
    """The 8-device run's losses, reproduced on 1 device from scratch and from its checkpoints.

    Two steps from each state: the loss of the first checks the sharded forward pass, the second
    the sharded gradients, BatchNorm statistics and update. Longer curves drift apart whatever
    the sharding: float rounding flips ReLUs of this tiny network, and the difference grows
    about 10-30x per step (measured: 1e-7 at steps 1-4, 3e-4 at step 8).
    """
    assert len(jax.local_devices()) == 8
    sharded = {r["step"]: r["loss"] for r in _log(runs["full"]) if r["kind"] == "step"}
    splits = load_splits(RUN)
    one = dataclasses.replace(RUN, devices=1, validate=False)
    result = train(dataclasses.replace(one, out_dir=str(tmp_path / "0"), max_steps=3),
                   splits=splits)
    assert result["step"] == 3 and result["last_epoch"] is None  # stopped mid-epoch
    assert result["checkpoint"].name == "ckpt-00000003"
    for start in (0, 20, 50, 80):  # 50: the first step of the second epoch
        out = tmp_path / str(start)
        if start:
            (out / "checkpoints").mkdir(parents=True)
            for suffix in (".json", ".safetensors"):
                shutil.copy(runs["full"] / "checkpoints" / f"ckpt-{start:08d}{suffix}",
                            out / "checkpoints")
            (out / "checkpoints" / "latest").write_text(f"ckpt-{start:08d}\n")
            # The same compiled step as above: train() caches it.
            train(dataclasses.replace(one, out_dir=str(out), max_steps=start + 2),
                  splits=splits)
        single = {r["step"]: r["loss"] for r in _log(out) if r["kind"] == "step"}
        assert sorted(single)[:2] == [start + 1, start + 2]
        # Two steps from each state, as the docstring says: the from-scratch run's third step
        # (it runs 3, to stop mid-epoch) is past where rounding drift stays under 1e-5
        # (seen: 1.0e-4 at step 3 on jax 0.10.2).
        for step in (start + 1, start + 2):
            np.testing.assert_allclose(single[step], sharded[step], rtol=1e-5,
                                       err_msg=f"step {step}")


def test_checkpoint_is_self_describing(runs):
    from msdnet_flax import load_checkpoint
    from msdnet_flax.data import generate
    from msdnet_flax.evaluation.core import exit_accuracy, predict

    model, meta = load_checkpoint(runs["full"])
    assert model.config == TINY
    norms = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.BatchNorm)]
    assert norms and all(m.use_running_average for m in norms)  # eval mode
    assert meta["step"] == TOTAL and meta["epoch"] == RUN.epochs
    assert TrainConfig.from_dict(meta["train_config"]) == dataclasses.replace(
        RUN, out_dir=str(runs["full"]))
    val = generate(RUN.n_val, seed=RUN.data_seed + 1, difficulty=RUN.difficulty)
    assert meta["class_names"] == list(val.class_names)
    assert meta["mean"] == list(val.mean) and meta["std"] == list(val.std)
    acc = exit_accuracy(predict(model, val, 32, mean=meta["mean"], std=meta["std"]), val.labels)
    last_epoch = [r for r in _log(runs["full"]) if r["kind"] == "epoch"][-1]
    np.testing.assert_allclose(acc, last_epoch["val_exit_acc"], atol=1.5 / RUN.n_val)


def test_resume_refuses_other_settings(runs, tmp_path):
    cfg = dataclasses.replace(RUN, out_dir=str(runs["full"]), lr=0.2)
    with pytest.raises(ValueError, match="lr"):
        train(cfg)


def test_more_devices_than_there_are(tmp_path):
    cfg = dataclasses.replace(RUN, out_dir=str(tmp_path / "run"), devices=99)
    with pytest.raises(ValueError, match=r"devices=99 asked for, but this process has 8 local "
                       r"device\(s\) \(on CPU, start with XLA_FLAGS=--xla_force_host_platform_"
                       r"device_count=99\); set devices to at most 8"):
        train(cfg)


def test_sgd_matches_pytorch_formula(rng):
    """Two steps of PyTorch's SGD(lr, momentum, nesterov=True, weight_decay) by hand."""
    lr, m, wd = 0.1, 0.9, 1e-3
    params = {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
              "bn": {"scale": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
             for _ in range(2)]
    for decay_all in (True, False):
        cfg = TrainConfig(lr=lr, momentum=m, weight_decay=wd, schedule="step", epochs=10,
                          decay_all=decay_all)
        opt = make_optimizer(cfg, steps_per_epoch=100)
        state, p = opt.init(params), params
        for g in grads:
            updates, state = opt.update(g, state, p)
            p = optax.apply_updates(p, updates)
        for path, w0 in (("conv", "kernel"), ("bn", "scale")):
            w = np.asarray(params[path][w0], np.float64)
            decay = wd if (decay_all or w0 == "kernel") else 0.0
            buf = None
            for g in grads:
                d = np.asarray(g[path][w0], np.float64) + decay * w
                buf = d if buf is None else m * buf + d
                w = w - lr * (d + m * buf)
            np.testing.assert_allclose(p[path][w0], w, rtol=1e-5, atol=1e-7)


def test_schedules():
    spe = 10
    step = make_schedule(TrainConfig(lr=0.1, epochs=4, schedule="step"), spe)
    assert [float(step(t)) for t in (0, 19, 20, 29, 30, 39)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    cos = make_schedule(TrainConfig(lr=0.1, epochs=4, schedule="cosine"), spe)
    assert float(cos(0)) == pytest.approx(0.1)
    assert float(cos(20)) == pytest.approx(0.05)
    assert float(cos(40)) == pytest.approx(0.0, abs=1e-9)
    warm = make_schedule(TrainConfig(lr=0.1, epochs=4, schedule="step", warmup_steps=5), spe)
    assert [float(warm(t)) for t in (0, 5, 25)] == pytest.approx([0.0, 0.1, 0.01])


def test_command_line_round_trip():
    for cfg in (RUN, TrainConfig(), TrainConfig(model="cifar100_budgeted", data="cifar100",
                                                data_path="/x", holdout=5000, nesterov=False)):
        args, _ = parse(config_to_argv(cfg))
        assert config_from_args(args) == cfg
    help_text = subprocess.run([sys.executable, "-m", "msdnet_flax.training", "--help"],
                               capture_output=True, text=True, check=True).stdout
    for field in dataclasses.fields(TrainConfig):
        assert "--" + field.name.replace("_", "-") in help_text


def test_checkpoint_files_pointer_and_pruning(tmp_path, rng):
    from msdnet_flax import MSDNet, load_checkpoint, save_checkpoint
    from msdnet_flax.checkpoint import resolve_checkpoint

    model = MSDNet(TINY, rngs=nnx.Rngs(int(rng.integers(1 << 30))))
    kw = {"mean": (0.5, 0.5, 0.5), "std": (0.2, 0.2, 0.2), "class_names": [str(i) for i in
                                                                            range(10)]}
    for step in (3, 6, 9, 12):
        path = save_checkpoint(tmp_path / "checkpoints", model, step=step, epoch=step // 6,
                               keep=2, extra={"note": step}, **kw)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["ckpt-00000009.json", "ckpt-00000009.safetensors", "ckpt-00000012.json",
                     "ckpt-00000012.safetensors", "latest"]  # no temporary files left
    for where in (tmp_path, tmp_path / "checkpoints", path, path.with_suffix(".json"),
                  path.with_suffix(".safetensors")):
        assert resolve_checkpoint(where) == path
    loaded, meta = load_checkpoint(tmp_path)
    assert meta["step"] == 12 and meta["extra"] == {"note": 12} and meta["train_config"] is None
    assert meta["class_names"] == kw["class_names"] and meta["std"] == [0.2, 0.2, 0.2]
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(loaded)),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="no MSD-Net checkpoint"):
        load_checkpoint(tmp_path / "nothing")


def test_checkpoint_stored_in_float16(tmp_path, rng):
    from msdnet_flax import MSDNet, load_checkpoint, save_checkpoint

    model = MSDNet(TINY, rngs=nnx.Rngs(int(rng.integers(1 << 30))))
    kw = {"mean": (0.5, 0.5, 0.5), "std": (0.2, 0.2, 0.2), "class_names": list("abcdefghij")}
    save_checkpoint(tmp_path, model, step=1, storage_dtype="float16", **kw)
    arrays, _ = read_checkpoint(tmp_path)
    assert {a.dtype for a in arrays.values()} == {np.dtype(np.float16)}
    loaded, _ = load_checkpoint(tmp_path)
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(loaded)),
                    strict=True):
        assert b.dtype == np.float32  # cast back on load
        np.testing.assert_array_equal(b, np.asarray(a).astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="storage_dtype must be a floating dtype.*'int8'"):
        save_checkpoint(tmp_path, model, step=2, storage_dtype="int8", **kw)


def test_init_from_starts_at_the_checkpoint_weights(runs, tmp_path):
    from msdnet_flax.checkpoint import latest_checkpoint
    from msdnet_flax.training.loop import _Run

    source = latest_checkpoint(runs["full"] / "checkpoints")
    arrays, _ = read_checkpoint(source)
    cfg = dataclasses.replace(RUN, out_dir=str(tmp_path / "ft"), init_from=str(source), lr=0.01)
    splits = load_splits(cfg)
    run = _Run(cfg, splits["train"], splits["val"])
    run.log.close()
    assert run.step == 0  # a new run: fresh optimizer, schedule from its start
    params = nnx.to_flat_state(run.state.params)
    for path, value in params:
        key = "params/" + "/".join(map(str, path))
        np.testing.assert_array_equal(np.asarray(value.get_value()), arrays[key], err_msg=key)
    other = dataclasses.replace(cfg, model=dataclasses.replace(TINY, growth_rate=4))
    with pytest.raises(ValueError, match=r"another architecture .*growth_rate: 6 \(checkpoint\)"):
        _Run(other, splits["train"], splits["val"])

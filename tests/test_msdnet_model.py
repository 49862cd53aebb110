"""The Flax MSDNet itself: shapes and sizes of the paper's networks, every step/prune mode against
the PyTorch twin, input and config validation, train/eval BatchNorm, pure-dict state, the demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _seeds import fresh_seed
from flax import nnx, traverse_util

import msdnet_flax
from msdnet_flax.interop.convert import abstract_split
from msdnet_flax.interop.pytorch import TorchMSDNet
from msdnet_flax.model import presets as configs
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.cost import cost
from msdnet_flax.model.msdnet import check_images
from msdnet_flax.model.plan import MSDLayerSpec, TransitionSpec, block_steps, build_plan
from msdnet_flax.testing import assert_close, random_torch_msdnet

REPO = Path(__file__).resolve().parents[1]

# Per-exit classifier inputs (h, w, c) and parameters (millions) of the paper's networks.
PAPER = {
    "imagenet_step4": ([(7, 7, 384), (7, 7, 384), (7, 7, 352), (7, 7, 304), (7, 7, 560)], 23.96),
    "cifar100_anytime": ([(8, 8, 160), (8, 8, 208), (8, 8, 140), (8, 8, 188), (8, 8, 236),
                          (8, 8, 152), (8, 8, 200)], 3.07),
}

TINY = MSDNetConfig(data="cifar", num_classes=5, n_blocks=2, n_channels=8, base=2, step=1,
                    growth_rate=4)


# ----------------------------------------------------------------------------------- helpers


def images(rng: np.random.Generator, config: MSDNetConfig, batch: int = 2) -> np.ndarray:
    size = config.image_size
    return rng.normal(size=(batch, size, size, 3)).astype(np.float32)


def n_params(tree) -> int:
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))


def abstract_model(config: MSDNetConfig) -> msdnet_flax.MSDNet:
    """The model with ShapeDtypeStruct leaves, in eval mode, for ``nnx.eval_shape``."""
    model = nnx.merge(*abstract_split(config))
    model.eval()
    return model


@pytest.fixture(scope="module")
def tiny_model() -> msdnet_flax.MSDNet:
    return msdnet_flax.MSDNet(TINY, rngs=nnx.Rngs(fresh_seed("tiny_model")))


# ------------------------------------------------------------------ paper shapes and sizes


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_feature_shapes_and_parameters(name):
    config = configs.get_config(name)
    shapes, millions = PAPER[name]
    model = abstract_model(config)
    x = jax.ShapeDtypeStruct((2, config.image_size, config.image_size, 3), jnp.float32)
    features, logits = nnx.eval_shape(lambda m, x: (m.exit_features(x), m(x)), model, x)
    assert [tuple(f.shape) for f in features] == [(2, *s) for s in shapes]
    assert all(f.dtype == jnp.float32 for f in features)
    assert [tuple(l.shape) for l in logits] == [(2, config.num_classes)] * len(shapes)
    params = n_params(nnx.state(model, nnx.Param))
    assert round(params / 1e6, 2) == millions
    assert params == sum(p.numel() for p in TorchMSDNet(config).parameters())
    assert params == cost(config)[-1].params
    # BatchNorm running statistics are state, not parameters: 2 per BN channel.
    assert n_params(nnx.state(model, nnx.BatchStat)) == n_params(
        [b for k, b in TorchMSDNet(config).state_dict().items() if "running" in k])


@pytest.mark.parametrize("name", ["cifar10_anytime", "cifar100_budgeted"])
def test_parameter_counts_agree(name):
    config = configs.get_config(name)
    params = n_params(nnx.state(nnx.merge(*abstract_split(config)), nnx.Param))
    assert params == sum(p.numel() for p in TorchMSDNet(config).parameters())
    assert params == cost(config)[-1].params


# --------------------------------------------------------- step and prune modes vs the twin


def custom(**kw) -> MSDNetConfig:
    base = dict(data="cifar", num_classes=5, n_blocks=3, n_channels=8, growth_rate=4,
                base=2, step=2, step_mode="even", prune="max", reduction=0.5, bottleneck=True)
    return MSDNetConfig(**{**base, **kw})


CUSTOM = {
    "even-max": custom(step=1),
    "even-min": custom(prune="min"),
    "lin_grow-max": custom(base=1, step=1, step_mode="lin_grow"),
    "lin_grow-min": custom(base=1, step=1, step_mode="lin_grow", prune="min"),
    "min-no-reduction": custom(prune="min", reduction=0.0),
    "max-no-reduction-no-bottleneck": custom(reduction=0.0, bottleneck=False),
    "min-no-bottleneck-bnfactor": custom(prune="min", bottleneck=False, bn_factor=(2, 1, 3),
                                         gr_factor=(1, 3, 2), growth_rate=2),
    "imagenet-min": custom(data="imagenet", n_blocks=2, n_channels=4, base=2, step=2,
                           prune="min", gr_factor=(1, 2, 2, 4), bn_factor=(1, 2, 2, 2)),
}


def test_custom_configs_exercise_what_they_claim():
    for name, config in CUSTOM.items():
        plan = build_plan(config)
        layers = [layer for block in plan for layer in block.layers]
        msd = [layer for layer in layers if isinstance(layer, MSDLayerSpec)]
        transitions = [layer for layer in layers if isinstance(layer, TransitionSpec)]
        assert len(msd) == sum(block_steps(config)), name
        assert any(layer.discard for layer in msd), f"{name}: no layer drops a scale"
        assert bool(transitions) == (config.reduction > 0), name
        if config.prune == "min":
            assert msd[-1].out_scales == 1, name
    assert block_steps(CUSTOM["lin_grow-max"]) == [1, 2, 3]
    assert block_steps(CUSTOM["even-min"]) == [2, 2, 2]


@pytest.mark.parametrize("name", sorted(CUSTOM))
def test_custom_config_matches_twin(name, rng):
    config = CUSTOM[name]
    twin = random_torch_msdnet(config, rng, shift=0.2, biases=True)
    model = msdnet_flax.load_pytorch_checkpoint(twin.state_dict(), config)
    x = images(rng, config, batch=1 if config.data == "imagenet" else 2)
    with torch.no_grad():
        ref_features = twin.exit_features(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
        ref_logits = [twin.classify(k, f) for k, f in enumerate(ref_features)]
    features = model.exit_features(jnp.asarray(x))
    logits = [model.classify(k, f) for k, f in enumerate(features)]
    assert len(features) == len(logits) == config.n_blocks
    for k in range(config.n_blocks):
        assert_close(features[k], ref_features[k].numpy().transpose(0, 2, 3, 1), f"exit {k} feat")
        assert_close(logits[k], ref_logits[k].numpy(), f"exit {k} logits")


# -------------------------------------------------------------------------------- bad input


def test_wrong_spatial_size_names_the_expected_size(tiny_model, rng):
    x = rng.normal(size=(2, 28, 28, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="expects 32x32 images, got 28x28"):
        tiny_model(x)
    with pytest.raises(ValueError, match="224x224"):
        check_images(jnp.asarray(rng.normal(size=(1, 32, 32, 3)), jnp.float32),
                     configs.imagenet_step4())


def test_wrong_channel_count(tiny_model, rng):
    with pytest.raises(ValueError, match=r"3 channels last, got shape \(2, 32, 32, 1\)") as e:
        tiny_model(rng.normal(size=(2, 32, 32, 1)).astype(np.float32))
    assert "NCHW" not in str(e.value)


def test_nchw_input_gets_a_hint(tiny_model, rng):
    with pytest.raises(ValueError, match=r"NCHW.*transpose\(0, 2, 3, 1\)"):
        tiny_model.exit_features(rng.normal(size=(2, 3, 32, 32)).astype(np.float32))


def test_rank_3_input(tiny_model, rng):
    with pytest.raises(ValueError, match=r"rank 4, got rank 3.*x\[None\]"):
        tiny_model(rng.normal(size=(32, 32, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="got rank 5"):
        tiny_model(rng.normal(size=(1, 2, 32, 32, 3)).astype(np.float32))


def test_integer_images(tiny_model, rng):
    x = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(TypeError, match="float images.*uint8"):
        tiny_model(x)
    with pytest.raises(TypeError, match="float images.*int32"):
        tiny_model(jnp.asarray(x, jnp.int32))


def test_empty_batch(tiny_model):
    with pytest.raises(ValueError, match="empty batch"):
        tiny_model(jnp.ones((0, 32, 32, 3), jnp.float32))


def test_not_an_array(tiny_model):
    with pytest.raises(TypeError, match=r"\(batch, 32, 32, 3\) NHWC"):
        tiny_model([[1.0, 2.0]])


def test_bad_input_is_caught_at_trace_time_under_jit(tiny_model, rng):
    forward = nnx.jit(lambda m, x: m(x))
    with pytest.raises(ValueError, match="NCHW"):
        forward(tiny_model, jnp.asarray(rng.normal(size=(1, 3, 32, 32)), jnp.float32))


def test_classify_out_of_range(tiny_model, rng):
    tiny_model.eval()
    x = jnp.asarray(images(rng, TINY))
    features = tiny_model.exit_features(x)
    n = tiny_model.num_exits
    assert n == TINY.n_blocks
    for k in (n, n + 3, -n - 1):
        with pytest.raises(IndexError, match=f"exit {k} does not exist.*0..{n - 1}"):
            tiny_model.classify(k, features[0])
    np.testing.assert_array_equal(tiny_model.classify(-1, features[-1]),
                                  tiny_model.classify(n - 1, features[-1]))


# ---------------------------------------------------------------------------- bad configs


@pytest.mark.parametrize("field, kwargs", [
    ("data", dict(data="cifar10")),
    ("data", dict(data="ImageNet")),
    ("step_mode", dict(step_mode="linear")),
    ("prune", dict(prune="mid")),
    ("growth_rate", dict(growth_rate=-6)),
    ("growth_rate", dict(growth_rate=0)),
    ("bn_factor", dict(bn_factor=(1, 2))),
    ("growth_rate", dict(growth_rate=5, gr_factor=(1, 1, 2), bn_factor=(1, 1, 2))),
    ("gr_factor", dict(gr_factor=(1, 2, 4, 4), bn_factor=(1, 2, 4, 4))),
    ("gr_factor", dict(data="imagenet", gr_factor=(1, 2, 4, 4, 4), bn_factor=(1, 2, 4, 4, 4))),
    ("gr_factor", dict(gr_factor=(1, 2), bn_factor=(1, 2))),
    ("gr_factor", dict(gr_factor=(1, 0, 4))),
    ("prune", dict(prune="min", n_blocks=1, base=1)),
    ("n_blocks", dict(n_blocks=0)),
    ("num_classes", dict(num_classes=0)),
    ("step", dict(step=-1)),
    ("step", dict(step=0)),
    ("reduction", dict(reduction=1.5)),
    ("reduction", dict(reduction=0.01)),
    ("bottleneck", dict(bottleneck="yes")),
])
def test_invalid_config_names_the_field(field, kwargs):
    with pytest.raises(ValueError, match=rf"MSDNetConfig\.{field}=.* is invalid: \S"):
        MSDNetConfig(**kwargs)


def test_config_messages_say_what_is_expected():
    with pytest.raises(ValueError, match="expected 'even' or 'lin_grow'"):
        MSDNetConfig(step_mode="linear")
    with pytest.raises(ValueError, match=r"one factor per scale \(3"):
        MSDNetConfig(bn_factor=(1, 2))
    with pytest.raises(ValueError, match="too many scales.*expected exactly 3"):
        MSDNetConfig(gr_factor=(1, 2, 4, 4), bn_factor=(1, 2, 4, 4))
    with pytest.raises(ValueError, match="must be even"):
        MSDNetConfig(growth_rate=5, gr_factor=(1, 1, 2), bn_factor=(1, 1, 2))
    with pytest.raises(ValueError, match="unknown MSD-Net preset 'msdnet'; known: cifar10_any"):
        configs.get_config("msdnet")


def test_config_round_trips_through_a_dict():
    for name in configs.PRESETS:
        config = configs.get_config(name)
        assert MSDNetConfig(**config.to_dict()) == config
        assert hash(MSDNetConfig(**config.to_dict())) == hash(config)
    assert MSDNetConfig(gr_factor=[1, 2, 4], bn_factor=[1, 2, 4]) == MSDNetConfig()


# ------------------------------------------------------------------------------ train/eval


def batch_stats(model) -> dict:
    return {k: np.array(v) for k, v in
            traverse_util.flatten_dict(msdnet_flax.to_pure_dict(model)["batch_stats"]).items()}


def test_train_mode_updates_batch_stats_and_eval_mode_does_not(rng):
    model = msdnet_flax.MSDNet(TINY, rngs=nnx.Rngs(int(rng.integers(2**31))))
    x = jnp.asarray(images(rng, TINY, batch=2))
    params_before = jax.tree.map(np.array, msdnet_flax.to_pure_dict(model)["params"])
    before = batch_stats(model)
    model.train()  # also the default
    train_logits = model(x)
    after = batch_stats(model)
    assert before.keys() == after.keys() and len(before) > 0
    unchanged = [k for k in before if np.array_equal(before[k], after[k])]
    assert not unchanged, f"{len(unchanged)} running statistics did not move: {unchanged[:3]}"
    # The parameters are not touched by a forward pass.
    jax.tree.map(np.testing.assert_array_equal, params_before,
                 msdnet_flax.to_pure_dict(model)["params"])

    model.eval()
    first = model(x)
    second = model(x)
    for a, b, t in zip(first, second, train_logits, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, t)  # running statistics differ from the batch's
    assert all(np.array_equal(v, after[k]) for k, v in batch_stats(model).items())
    # In eval mode each image's output does not depend on the rest of the batch.
    alone = model(x[:1])
    for a, b in zip(alone, first, strict=True):
        assert_close(a, b[:1], "batch independence")


def test_train_mode_under_nnx_jit_updates_stats_like_eager(rng):
    seed = int(rng.integers(2**31))
    x = jnp.asarray(images(rng, TINY, batch=3))
    eager = msdnet_flax.MSDNet(TINY, rngs=nnx.Rngs(seed))
    jitted = msdnet_flax.MSDNet(TINY, rngs=nnx.Rngs(seed))
    eager(x)
    nnx.jit(lambda m, x: m(x))(jitted, x)
    a, b = batch_stats(eager), batch_stats(jitted)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=str(k))


# ------------------------------------------------------------------------------ pure dicts


def test_nnx_pure_dict_restores_into_a_fresh_model(rng):
    model = msdnet_flax.MSDNet(TINY, rngs=nnx.Rngs(int(rng.integers(2**31))))
    x = jnp.asarray(images(rng, TINY))
    model(x)  # one training-mode call so the running statistics are not the initial ones
    model.eval()
    expected = model(x)
    # nnx.to_pure_dict(s) is the non-deprecated spelling of s.to_pure_dict().
    pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))

    fresh = msdnet_flax.MSDNet(TINY, rngs=nnx.Rngs(int(rng.integers(2**31))))
    fresh.eval()
    assert not np.allclose(fresh(x)[0], expected[0])
    state = nnx.state(fresh)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(fresh, state)
    for a, b in zip(fresh(x), expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_to_pure_dict_and_from_pure_dict(tmp_path, rng):
    model = msdnet_flax.MSDNet(TINY, rngs=nnx.Rngs(int(rng.integers(2**31))))
    x = jnp.asarray(images(rng, TINY))
    model(x)
    model.eval()
    expected = model(x)

    pure = msdnet_flax.to_pure_dict(model)
    assert set(pure) == {"params", "batch_stats"}
    flat_params = traverse_util.flatten_dict(pure["params"])
    flat_stats = traverse_util.flatten_dict(pure["batch_stats"])
    assert {p[-1] for p in flat_params} == {"kernel", "scale", "bias"}
    assert {p[-1] for p in flat_stats} == {"mean", "var"}
    assert n_params(pure["params"]) == cost(TINY)[-1].params

    restored = msdnet_flax.from_pure_dict(TINY, jax.tree.map(np.asarray, pure))
    for a, b in zip(restored(x), expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert restored.classifier[0].m[0].net[1].use_running_average  # eval mode by default
    trainable = msdnet_flax.from_pure_dict(TINY, pure, train=True)
    assert not trainable.classifier[0].m[0].net[1].use_running_average

    # Through msgpack and through np.savez on disk; the latter gives list indices back as
    # string keys ('0'), which match too.
    path = tmp_path / "tiny.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, pure)))
    from_msgpack = flax.serialization.msgpack_restore(path.read_bytes())
    npz = tmp_path / "tiny.npz"
    np.savez(npz, **{"/".join(map(str, k)): np.asarray(v)
                     for k, v in traverse_util.flatten_dict(pure).items()})
    with np.load(npz) as f:
        from_npz = traverse_util.unflatten_dict({tuple(k.split("/")): f[k] for k in f.files})
    assert "0" in from_npz["params"]["blocks"]
    for loaded in (from_msgpack, from_npz):
        for a, b in zip(msdnet_flax.from_pure_dict(TINY, loaded)(x), expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_from_pure_dict_rejects_what_does_not_fit(tiny_model):
    pure = jax.tree.map(np.asarray, msdnet_flax.to_pure_dict(tiny_model))
    with pytest.raises(ValueError, match="'batch_stats' and 'params'.*got \\['params'\\]"):
        msdnet_flax.from_pure_dict(TINY, {"params": pure["params"]})

    broken = jax.tree.map(lambda v: v, pure)
    del broken["params"]["classifier"][1]["linear"]["bias"]
    broken["batch_stats"]["extra"] = {"mean": np.ones(3, np.float32)}
    kernel = broken["params"]["classifier"][0]["linear"]["kernel"]
    broken["params"]["classifier"][0]["linear"]["kernel"] = kernel[:, :3]
    with pytest.raises(ValueError) as e:
        msdnet_flax.from_pure_dict(TINY, broken)
    msg = str(e.value)
    assert "1 missing: params/classifier/1/linear/bias" in msg
    assert "1 unexpected: batch_stats/extra/mean" in msg
    assert "1 shape mismatches: params/classifier/0/linear/kernel (128, 3) != expected (128, 5)" \
        in msg


# ------------------------------------------------------------------------------------ demo


def test_demo_runs_and_prints_every_exit():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-m", "msdnet_flax.model"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "10 exits" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == list(range(10)), out
    shapes = [line for line in out.splitlines() if "(8, 8," in line]
    assert len(shapes) == 10, out
    assert "jitted forward of all exits" in out

"""PyTorch checkpoints (kalviny/MSDNet-PyTorch format) -> Flax NNX MSDNet and back.

The reference is ``msdnet_flax.interop.pytorch.TorchMSDNet``, whose state-dict keys are kalviny's;
each preset's twin gets random weights and random BatchNorm (scale, shift, running statistics), is
saved the way kalviny's ``main.py`` saves a ``DataParallel`` model, and the Flax model loaded from
that file must reproduce every exit's logits and classifier input.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _seeds import fresh_seed
from flax import nnx

import msdnet_flax
from msdnet_flax.interop.pytorch import TorchMSDNet
from msdnet_flax.model import presets as configs
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.testing import assert_close, nchw, random_torch_msdnet

PARITY_PRESETS = ["cifar10_anytime", "cifar100_anytime", "cifar100_budgeted", "imagenet_step4"]

# A small CIFAR network for the tests that are about conversion, not about one architecture.
SMALL = MSDNetConfig(data="cifar", num_classes=7, n_blocks=3, n_channels=8, base=2, step=1,
                     growth_rate=4)


# ----------------------------------------------------------------------------------- helpers


def save_like_kalviny(model: TorchMSDNet, path: os.PathLike, rng: np.random.Generator) -> None:
    """``main.py``'s ``save_checkpoint``: a DataParallel model ('module.' keys) and its SGD state.

    kalviny's optimizer is SGD(momentum=0.9, weight_decay=1e-4); one step on random gradients
    gives it the momentum buffers a real checkpoint has. The step changes the weights, so the
    twin is compared in the state it is saved in.
    """
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)
    for p in model.parameters():
        p.grad = torch.from_numpy(rng.normal(0.0, 1e-3, size=tuple(p.shape)).astype(np.float32))
    optimizer.step()
    model.zero_grad(set_to_none=True)
    state_dict = {"module." + k: v for k, v in model.state_dict().items()}
    assert any(k.endswith("num_batches_tracked") for k in state_dict)
    torch.save({"epoch": 1, "arch": "msdnet", "state_dict": state_dict, "best_prec1": 0.0,
                "optimizer": optimizer.state_dict()}, path)


def torch_outputs(model: TorchMSDNet, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(features NHWC, logits) of every exit of the PyTorch twin."""
    with torch.no_grad():
        features = model.exit_features(nchw(x))
        logits = [model.classify(k, f) for k, f in enumerate(features)]
    return [f.numpy().transpose(0, 2, 3, 1) for f in features], [l.numpy() for l in logits]


def images(rng: np.random.Generator, config: MSDNetConfig, batch: int) -> np.ndarray:
    size = config.image_size
    return rng.normal(size=(batch, size, size, 3)).astype(np.float32)


def assert_outputs_match(features, logits, ref_features, ref_logits, tag: str = "") -> None:
    assert len(features) == len(ref_features) == len(logits) == len(ref_logits)
    for k, (f, rf, l, rl) in enumerate(zip(features, ref_features, logits, ref_logits,
                                           strict=True)):
        assert_close(f, rf, f"{tag}exit {k} features")
        assert_close(l, rl, f"{tag}exit {k} logits")


def seeded_rng() -> np.random.Generator:
    """For module-scoped fixtures (the ``rng`` fixture is per test): fresh, seed printed."""
    return np.random.default_rng(fresh_seed("module_fixture"))


def flat_pure(model: msdnet_flax.MSDNet) -> dict:
    from flax import traverse_util

    return traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model)))


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=PARITY_PRESETS)
def preset_twins(request, tmp_path_factory):
    """(config, random twin in eval mode, Flax model loaded from its kalviny-format file)."""
    rng = seeded_rng()
    config = configs.get_config(request.param)
    twin = random_torch_msdnet(config, rng, shift=0.2, biases=True)
    path = tmp_path_factory.mktemp(request.param) / "checkpoint_001.pth.tar"
    save_like_kalviny(twin, path, rng)
    twin.eval()
    model = msdnet_flax.load_pytorch_checkpoint(path, config)
    yield config, twin, model
    path.unlink()  # the ImageNet file is ~200 MB


@pytest.fixture(scope="module")
def small_twin():
    rng = seeded_rng()
    return random_torch_msdnet(SMALL, rng, shift=0.2, biases=True)


def batch_for(config: MSDNetConfig) -> int:
    return 1 if config.data == "imagenet" else 2


# ---------------------------------------------------------------------------- preset parity


def test_kalviny_checkpoint_file_parity(preset_twins, rng):
    config, twin, model = preset_twins
    assert model.num_exits == config.n_blocks
    x = images(rng, config, batch_for(config))
    ref_features, ref_logits = torch_outputs(twin, x)
    features = model.exit_features(jnp.asarray(x))
    logits = model(jnp.asarray(x))
    for k, l in enumerate(logits):
        assert l.shape == (x.shape[0], config.num_classes), k
    assert_outputs_match(features, logits, ref_features, ref_logits)


@pytest.mark.parametrize("preset_twins", PARITY_PRESETS, indirect=True)
def test_kalviny_checkpoint_file_parity_under_nnx_jit(preset_twins, rng):
    config, twin, model = preset_twins
    x = images(rng, config, batch_for(config))
    ref_features, ref_logits = torch_outputs(twin, x)

    @nnx.jit
    def forward(model, x):
        features = model.exit_features(x)
        return features, [model.classify(k, f) for k, f in enumerate(features)]

    features, logits = forward(model, jnp.asarray(x))
    assert_outputs_match(features, logits, ref_features, ref_logits, "nnx.jit ")


def test_parity_under_jax_jit_functional(small_twin, rng):
    """The functional style: split once, ``jax.jit`` over (state, x), merge inside."""
    model = msdnet_flax.load_pytorch_checkpoint(small_twin.state_dict(), SMALL)
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x):
        m = nnx.merge(graphdef, state)
        return m.exit_features(x), m(x)

    x = images(rng, SMALL, 3)
    features, logits = forward(state, jnp.asarray(x))
    assert_outputs_match(features, logits, *torch_outputs(small_twin, x), "jax.jit ")


# ----------------------------------------------------------------- accepted checkpoint forms


def test_every_state_dict_form_loads_the_same_weights(small_twin, tmp_path, rng):
    sd = small_twin.state_dict()
    module_sd = {"module." + k: v for k, v in sd.items()}
    torch.save(module_sd, tmp_path / "raw_module.pth")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pth.tar")
    forms = {
        "raw state dict": sd,
        "raw state dict, numpy values": {k: v.numpy() for k, v in sd.items()},
        "dict with state_dict": {"epoch": 3, "arch": "msdnet", "state_dict": sd},
        "module. prefixed": module_sd,
        "module. prefixed inside state_dict": {"state_dict": module_sd, "best_prec1": 1.0},
        "file (str path), module. prefixed": str(tmp_path / "raw_module.pth"),
        "file (Path), wrapped": tmp_path / "wrapped.pth.tar",
    }
    reference = flat_pure(msdnet_flax.load_pytorch_checkpoint(sd, SMALL))
    assert len(reference) == len([k for k in sd if not k.endswith("num_batches_tracked")])
    for name, form in forms.items():
        model = msdnet_flax.load_pytorch_checkpoint(form, SMALL)
        got = flat_pure(model)
        assert got.keys() == reference.keys(), name
        for path, value in reference.items():
            np.testing.assert_array_equal(got[path], value, err_msg=f"{name}: {path}")
    # Each form gives a working eval-mode model (BatchNorm on the running statistics).
    x = images(rng, SMALL, 2)
    model = msdnet_flax.load_pytorch_checkpoint(forms["module. prefixed"], SMALL)
    assert_outputs_match(model.exit_features(jnp.asarray(x)), model(jnp.asarray(x)),
                         *torch_outputs(small_twin, x))


def test_read_pytorch_state_dict_strips_prefix_and_num_batches_tracked(small_twin):
    sd = small_twin.state_dict()
    read = msdnet_flax.read_pytorch_state_dict({"state_dict": {"module." + k: v
                                                               for k, v in sd.items()}})
    expected = {k for k in sd if not k.endswith("num_batches_tracked")}
    assert set(read) == expected
    assert all(isinstance(v, np.ndarray) for v in read.values())
    key = "blocks.0.0.layers.0.net.0.weight"
    np.testing.assert_array_equal(read[key], sd[key].numpy())


# ------------------------------------------------------------------------------ round trip


def test_preset_round_trip_gives_back_the_checkpoint(preset_twins):
    """Flax -> to_pytorch_state_dict -> TorchMSDNet.load_state_dict(strict=True), exactly."""
    config, twin, model = preset_twins
    sd = msdnet_flax.to_pytorch_state_dict(model)
    reference = twin.state_dict()
    assert set(sd) == set(reference)
    for key, value in reference.items():
        if not key.endswith("num_batches_tracked"):
            assert sd[key].shape == value.shape, key
            assert torch.equal(sd[key], value), key
    fresh = TorchMSDNet(config)
    result = fresh.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def random_flax_model(config: MSDNetConfig, rng: np.random.Generator) -> msdnet_flax.MSDNet:
    """A Flax-initialised model with random BatchNorm (so the round trip is not torch-born)."""
    model = msdnet_flax.MSDNet(config, rngs=nnx.Rngs(int(rng.integers(2**31))))
    pure = msdnet_flax.to_pure_dict(model)

    def randomized(path, value):
        leaf = path[-1].key
        if leaf == "var":
            return rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        if leaf in ("mean", "bias"):
            return rng.normal(0.0, 0.2, value.shape).astype(np.float32)
        if leaf == "scale":
            return rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        return np.asarray(value)

    return msdnet_flax.from_pure_dict(config, jax.tree_util.tree_map_with_path(randomized, pure))


def test_round_trip_flax_to_torch_state_dict(rng):
    config = configs.cifar100_budgeted()
    model = random_flax_model(config, rng)
    sd = msdnet_flax.to_pytorch_state_dict(model)
    twin = TorchMSDNet(config)
    assert set(sd) == set(twin.state_dict())
    result = twin.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    twin.eval()
    x = images(rng, config, 2)
    assert_outputs_match(model.exit_features(jnp.asarray(x)), model(jnp.asarray(x)),
                         *torch_outputs(twin, x), "flax->torch ")
    # And back: Flax -> state dict (NumPy) -> Flax is exact.
    sd_np = msdnet_flax.to_pytorch_state_dict(model, as_torch=False)
    assert all(isinstance(v, np.ndarray) for v in sd_np.values())
    assert set(sd_np) == {k for k in sd if not k.endswith("num_batches_tracked")}
    back = msdnet_flax.load_pytorch_checkpoint(sd_np, config)
    original = flat_pure(model)
    restored = flat_pure(back)
    assert original.keys() == restored.keys()
    for path, value in original.items():
        np.testing.assert_array_equal(restored[path], value, err_msg=str(path))


# ------------------------------------------------------------------------------ strictness


def test_missing_key_is_named(small_twin):
    sd = dict(small_twin.state_dict())
    del sd["classifier.2.linear.bias"]
    with pytest.raises(ValueError, match=r"1 missing keys: classifier\.2\.linear\.bias") as e:
        msdnet_flax.load_pytorch_checkpoint(sd, SMALL)
    assert "unexpected" not in str(e.value) and "shape" not in str(e.value)


def test_unexpected_keys_are_named_and_counted(small_twin):
    sd = dict(small_twin.state_dict())
    sd["classifier.3.linear.weight"] = torch.zeros(7, 128)
    sd["module.extra.running_mean"] = torch.zeros(3)
    with pytest.raises(ValueError, match="2 unexpected keys") as e:
        msdnet_flax.load_pytorch_checkpoint(sd, SMALL)
    assert "classifier.3.linear.weight" in str(e.value)
    assert "extra.running_mean" in str(e.value)
    assert "missing" not in str(e.value)


def test_wrong_num_classes_lists_shape_mismatches(small_twin):
    wrong = MSDNetConfig(**{**SMALL.to_dict(), "num_classes": 10})
    with pytest.raises(ValueError) as e:
        msdnet_flax.load_pytorch_checkpoint(small_twin.state_dict(), wrong)
    msg = str(e.value)
    # Every exit's linear weight and bias: 2 * n_blocks mismatches, the first few listed.
    assert f"{2 * SMALL.n_blocks} shape mismatches" in msg
    assert "classifier.0.linear.weight (7, 128) != expected (10, 128)" in msg
    assert "classifier.0.linear.bias (7,) != expected (10,)" in msg
    assert "num_classes" in msg  # the hint names the config fields to check


def test_many_problems_are_truncated_but_counted(small_twin):
    sd = {k: v for k, v in small_twin.state_dict().items() if not k.startswith("blocks.1.")}
    with pytest.raises(ValueError) as e:
        msdnet_flax.load_pytorch_checkpoint(sd, SMALL)
    n_missing = sum(1 for k in small_twin.state_dict()
                    if k.startswith("blocks.1.") and not k.endswith("num_batches_tracked"))
    assert n_missing > 5
    assert f"{n_missing} missing keys" in str(e.value)
    assert "..." in str(e.value)


def test_checkpoint_of_another_architecture(small_twin):
    other = MSDNetConfig(**{**SMALL.to_dict(), "n_blocks": 4})  # one more block and exit
    with pytest.raises(ValueError, match=r"\d+ missing keys: blocks\.3\.0\.") as e:
        msdnet_flax.load_pytorch_checkpoint(small_twin.state_dict(), other)
    assert "n_blocks" in str(e.value)


def test_nonexistent_path(tmp_path):
    path = tmp_path / "no_such_dir" / "model_best.pth.tar"
    with pytest.raises(FileNotFoundError, match="model_best.pth.tar") as e:
        msdnet_flax.load_pytorch_checkpoint(path, SMALL)
    assert str(path) in str(e.value)
    with pytest.raises(FileNotFoundError):
        msdnet_flax.load_pytorch_checkpoint(str(tmp_path), SMALL)  # a directory


def test_file_that_is_not_a_checkpoint(tmp_path, rng):
    text = tmp_path / "notes.pth.tar"
    text.write_text("epoch 1: not a checkpoint\n")
    with pytest.raises(ValueError, match="could not read .*notes.pth.tar.* as a PyTorch"):
        msdnet_flax.load_pytorch_checkpoint(text, SMALL)
    junk = tmp_path / "random.pth"
    junk.write_bytes(rng.integers(0, 256, 1000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="could not read"):
        msdnet_flax.load_pytorch_checkpoint(junk, SMALL)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.ones(3), tensor)
    with pytest.raises(TypeError, match="expected a state dict"):
        msdnet_flax.load_pytorch_checkpoint(tensor, SMALL)
    with pytest.raises(TypeError, match="expected a state dict"):
        msdnet_flax.load_pytorch_checkpoint([1, 2, 3], SMALL)

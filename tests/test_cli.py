"""The ``jaxcam`` command: explain on a folder of awkward files, demo, methods, help, gallery in a
real browser. A tiny random MSD-Net checkpoint stands in for the bundled model."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest
from _kinks import assert_exit_maps_close
from flax import nnx
from pytorch_grad_cam.utils.image import show_cam_on_image as pgc_show_cam_on_image

import jaxcam
import msdnet_flax
from jaxcam import batch, cli
from jaxcam.batch import read_image_checked as read_image
from jaxcam.batch import to_model_input, unique_names
from jaxcam.cli import demo as cli_demo
from msdnet_flax.checkpoint import load_checkpoint, save_checkpoint
from msdnet_flax.data import normalize
from msdnet_flax.data.procedural import CLASS_NAMES

MEAN, STD = (0.45, 0.5, 0.55), (0.2, 0.25, 0.3)
GOOD = {"circle__a": (40, 40), "square__a": (32, 32), "rgba": (24, 36), "deep16": (50, 30),
        "big": (200, 300)}  # output name -> original (height, width)
BAD = ("corrupt.png", "empty.png", "text.png")


def _tiny_model() -> msdnet_flax.MSDNet:
    config = msdnet_flax.MSDNetConfig(data="cifar", num_classes=len(CLASS_NAMES), n_blocks=2,
                                      n_channels=4, base=1, step=1, growth_rate=2,
                                      bn_factor=(1, 1, 1))
    model = msdnet_flax.MSDNet(config, rngs=nnx.Rngs(0))
    model.eval()
    return model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(directory, _tiny_model(), step=7, mean=MEAN, std=STD,
                    class_names=CLASS_NAMES)
    return directory


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Good images of every kind, and three files that are not images."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    for sub in ("circle", "square", "broken"):
        (root / sub).mkdir()
    cv2.imwrite(str(root / "circle" / "a.png"), rng.integers(0, 256, (40, 40, 3), np.uint8))
    cv2.imwrite(str(root / "square" / "a.png"), rng.integers(0, 256, (32, 32), np.uint8))
    cv2.imwrite(str(root / "rgba.png"), rng.integers(0, 256, (24, 36, 4), np.uint8))
    cv2.imwrite(str(root / "deep16.png"), rng.integers(0, 65536, (50, 30, 3), np.uint16))
    yy, xx = np.mgrid[0:200, 0:300]
    photo = np.stack([xx * 255 // 300, yy * 255 // 200, (xx + yy) % 256], -1).astype(np.uint8)
    cv2.imwrite(str(root / "big.jpg"), photo)
    (root / "broken" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(300))
    (root / "broken" / "empty.png").write_bytes(b"")
    (root / "broken" / "text.png").write_text("this is a text file, not a PNG\n")
    (root / "notes.txt").write_text("not an image extension: never picked from a directory\n")
    return root


def _main(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(argv)
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def run(inputs, ckpt, tmp_path_factory) -> tuple[int, str, Path]:
    out = tmp_path_factory.mktemp("out")
    rc, stdout = _main(["explain", str(inputs), "--model", str(ckpt), "--out", str(out),
                        "--batch-size", "4"])
    return rc, stdout, out


def test_explain_writes_everything_and_reports_bad_files(run, inputs):
    rc, stdout, out = run
    assert rc == 1
    # jaxcam.batch's shards, manifest and errors.jsonl are written beside #5's outputs.
    expected = {"cams.npz", "errors.txt", "index.html", "shards", "manifest.json", "errors.jsonl"}
    for name, (h, w) in GOOD.items():
        expected |= {f"{name}_cam.png", f"{name}_exits.png"}
        cam = cv2.imread(str(out / f"{name}_cam.png"))
        grid = cv2.imread(str(out / f"{name}_exits.png"))
        assert cam is not None and cam.shape == (h, w, 3)  # the original's own resolution
        assert grid is not None and grid.shape[1] > 3 * 128
    assert {p.name for p in out.iterdir()} == expected
    lines = (out / "errors.txt").read_text().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in lines) == sorted(BAD)
    reasons = dict(line.split("\t") for line in lines)
    assert "0 bytes" in reasons[str(inputs / "broken" / "empty.png")]
    assert "text" in reasons[str(inputs / "broken" / "text.png")]
    for bad in BAD:
        assert str(inputs / "broken" / bad) in stdout
    assert "explained 5 image(s)" in stdout and "3 failed" in stdout
    page = (out / "index.html").read_text()
    for name in GOOD:
        assert f'src="{name}_exits.png"' in page and f'href="{name}_cam.png"' in page


def test_npz_maps_equal_explain_exits_on_the_same_batch(run, ckpt):
    _, _, out = run
    data = np.load(out / "cams.npz")
    names = list(data["names"])
    assert sorted(names) == sorted(GOOD)
    model, meta = load_checkpoint(ckpt)
    batch = np.stack([to_model_input(read_image(f), 32).astype(np.float32)
                      for f in data["files"]])
    # Normalised inside a compiled function, as the engine's step does: XLA rewrites the division
    # by the constant std as a multiplication (one ulp apart from NumPy's division), and an
    # exit-1 map of a near-tie can magnify that ulp to 1e-2.
    x = jax.jit(lambda b: normalize(b, MEAN, STD))(batch)
    maps, logits = jaxcam.explain_exits(model, x, return_logits=True)
    assert data["maps"].dtype == np.float32 and data["maps"].shape == (2, 5, 32, 32)
    assert_exit_maps_close(data["maps"], maps, model, x)
    np.testing.assert_allclose(data["logits"], np.asarray(logits), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(data["targets"], np.asarray(logits).argmax(-1))
    np.testing.assert_array_equal(data["exits"], [1, 2])
    assert list(data["class_names"]) == list(CLASS_NAMES) and str(data["method"]) == "gradcam"
    labels = dict(zip(names, data["labels"], strict=True))
    assert labels["circle__a"] == 0 and labels["square__a"] == 1 and labels["big"] == -1


def test_preprocessing_of_awkward_images(inputs):
    big = cv2.cvtColor(cv2.imread(str(inputs / "big.jpg")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(to_model_input(read_image(inputs / "big.jpg"), 32),
                                  cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA))
    gray = read_image(inputs / "square" / "a.png")
    assert gray.shape == (32, 32, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    raw16 = cv2.imread(str(inputs / "deep16.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    deep = read_image(inputs / "deep16.png")
    assert deep.dtype == np.float32 and deep.max() <= 255
    np.testing.assert_allclose(deep, raw16 / 257.0, rtol=1e-6)
    rgba = cv2.imread(str(inputs / "rgba.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(read_image(inputs / "rgba.png"), rgba[..., 2::-1])


def test_cam_overlay_is_pytorch_grad_cams_on_the_original(run):
    _, _, out = run
    data = np.load(out / "cams.npz")
    for i, (name, file) in enumerate(zip(data["names"], data["files"], strict=True)):
        original = read_image(file)
        h, w = original.shape[:2]
        img = np.minimum(original.astype(np.float32) / np.float32(255), np.float32(1))
        mask = cv2.resize(data["maps"][-1, i], (w, h), interpolation=cv2.INTER_LINEAR)
        expected = pgc_show_cam_on_image(img, mask, use_rgb=True)
        written = cv2.imread(str(out / f"{name}_cam.png"))[..., ::-1]
        np.testing.assert_array_equal(written, expected)


def test_target_true_class_exits_globs_and_missing(inputs, ckpt, tmp_path):
    rc, stdout = _main(["explain", str(inputs / "circle"), str(inputs / "square"),
                        str(inputs / "rgba.png"), "--target", "true", "--exits", "1",
                        "--model", str(ckpt), "--out", str(tmp_path / "a")])
    assert rc == 1 and "rgba.png" in stdout and "not one of" in stdout
    data = np.load(tmp_path / "a" / "cams.npz")
    np.testing.assert_array_equal(data["targets"], [[0, 1]])
    np.testing.assert_array_equal(data["exits"], [1])
    rc, stdout = _main(["explain", str(inputs / "**" / "*.jpg"), str(inputs / "missing.png"),
                        "--target", "triangle", "--exits", "last", "--model", str(ckpt),
                        "--out", str(tmp_path / "b"), "--compare", "hirescam"])
    assert rc == 1 and "missing.png: no such file or directory" in stdout
    data = np.load(tmp_path / "b" / "cams.npz")
    assert [Path(f).name for f in data["files"]] == ["big.jpg"]
    np.testing.assert_array_equal(data["targets"], [[2]])
    grid = cv2.imread(str(tmp_path / "b" / "big_exits.png"))
    assert grid.shape[0] > 2 * 128  # a second row: hirescam


def test_usage_errors(inputs, ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["explain", str(inputs / "big.jpg"), "--model", str(ckpt), "--exits", "3"])
    assert exc.value.code == 2 and "exits 1..2" in capsys.readouterr().err
    assert cli.main(["explain", str(inputs / "big.jpg"), "--model", str(tmp_path / "nope"),
                     "--out", str(tmp_path)]) == 2
    assert "cannot load model" in capsys.readouterr().err
    assert cli.parse_exits("1,4-6,last", 10) == (0, 3, 4, 5, 9)
    rc, stdout = _main(["explain", str(inputs / "broken"), "--model", str(ckpt), "--out",
                        str(tmp_path / "none")])
    assert rc == 1 and "explained 0 image(s)" in stdout
    assert np.load(tmp_path / "none" / "cams.npz")["maps"].shape == (2, 0, 32, 32)


def test_unique_names():
    assert unique_names([Path("a/x/cat.png"), Path("b/x/cat.png"), Path("b/dog.png")]) == \
        ["a__x__cat", "b__x__cat", "dog"]
    assert unique_names([Path("d/cat.png"), Path("d/cat.jpg")]) == ["cat.png", "cat.jpg"]
    assert unique_names([Path("d/Cat.png"), Path("e/cat.png")]) == ["d__Cat", "e__cat"]
    assert unique_names([Path("d/c t.png")]) == ["c_t"]
    assert unique_names([Path("a/cat.png"), Path("a/cat.jpg"), Path("b/cat.png")]) == \
        ["cat.png", "cat.jpg", "b__cat"]


def test_methods_lists_every_method(capsys):
    assert cli.main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(jaxcam.METHODS)
    for line, name in zip(lines, jaxcam.METHODS, strict=True):
        assert line[2:].split()[0] == name and len(line.split()) > 3
        assert line.startswith("*") == (name in jaxcam.EXIT_METHODS)


@pytest.mark.parametrize("argv", [[], ["explain"], ["demo"], ["methods"]])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "usage: jaxcam" in text
    if argv == ["explain"]:
        for flag in ("--model", "--method", "--exits", "--target", "--out", "--batch-size",
                     "--save-images", "--files-from", "--coordinator", "--num-processes",
                     "--process-id", "--shard-size", "--max-pixels", "manifest.json"):
            assert flag in text


def test_demo_writes_inputs_masks_and_gallery(ckpt, tmp_path, monkeypatch):
    model, meta = load_checkpoint(ckpt)
    monkeypatch.setattr(cli_demo, "load_demo_model",
                        lambda: (model, meta, "tiny test model", "UNTRAINED test model"))
    rc, stdout = _main(["demo", "--out", str(tmp_path), "--n", "4"])
    assert rc == 0 and "index.html" in stdout
    images = sorted((tmp_path / "inputs" / "images").rglob("*.png"))
    masks = sorted((tmp_path / "inputs" / "masks").glob("*_mask.png"))
    assert len(images) == 4 and len(masks) == 4
    assert all(p.parent.name in CLASS_NAMES for p in images)
    assert len(list(tmp_path.glob("*_exits.png"))) == 4
    page = (tmp_path / "index.html").read_text()
    assert "object mask" in page and "map energy in object" in page
    assert "UNTRAINED test model" in page


def test_demo_output_reads_back_with_open_results(ckpt, tmp_path, monkeypatch):
    model, meta = load_checkpoint(ckpt)
    monkeypatch.setattr(cli_demo, "load_demo_model",
                        lambda: (model, meta, "tiny test model", None))
    rc, _ = _main(["demo", "--out", str(tmp_path), "--n", "3"])
    assert rc == 0
    results = batch.open_results(tmp_path)
    images = sorted((tmp_path / "inputs" / "images").rglob("*.png"))
    assert len(results) == 3 and sorted(Path(f) for f in results) == images
    with np.load(tmp_path / "cams.npz") as cams:
        for i, file in enumerate(cams["files"]):
            result = results[str(file)]
            np.testing.assert_array_equal(result.maps, cams["maps"][:, i])
            assert result.label == CLASS_NAMES.index(Path(file).parent.name)
    # Rerunning with other settings replaces the previous demo instead of refusing it.
    assert _main(["demo", "--out", str(tmp_path), "--n", "2"])[0] == 0
    assert len(batch.open_results(tmp_path)) == 2


def test_pretrained_missing_and_present(ckpt, tmp_path, monkeypatch):
    # The module (msdnet_flax may also export the function under the same name).
    bundled = importlib.import_module("msdnet_flax.pretrained")
    monkeypatch.setattr(bundled, "BUNDLED_PATH", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no bundled model at .*absent: train one"):
        bundled.pretrained()
    monkeypatch.setattr(bundled, "BUNDLED_PATH", ckpt)
    model, meta = bundled.pretrained()
    assert model.num_exits == 2 and meta["class_names"] == list(CLASS_NAMES)


def test_console_script(inputs, ckpt, tmp_path):
    exe = Path(sys.executable).parent / "jaxcam"
    assert exe.is_file(), f"{exe} missing: install the package (pip install -e '.[dev]')"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([str(exe), "explain", str(inputs / "big.jpg"),
                           str(inputs / "broken" / "empty.png"), "--model", str(ckpt),
                           "--out", str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "empty.png: empty file (0 bytes)" in proc.stdout
    assert "images/s" in proc.stderr
    assert cv2.imread(str(tmp_path / "big_exits.png")) is not None


def test_gallery_in_headless_chromium(run, tmp_path):
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_bin):
        pytest.fail("chromium and chromedriver are needed for the gallery test; install them "
                    "with: apt-get update && apt-get install -y chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is needed for the gallery test: pip install -e '.[dev]'")
    _, _, out = run
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=options)
    try:
        driver.get((out / "index.html").resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
            "i.naturalWidth]);")
        assert len(images) == len(GOOD)
        for src, complete, width in images:
            assert complete and width > 0, f"{src} did not load"
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        shots = Path(os.environ.get("JAXCAM_SCREENSHOTS", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shots / "gallery.png"))
        driver.get((out / "big_exits.png").resolve().as_uri())
        assert driver.save_screenshot(str(shots / "grid.png"))
    finally:
        driver.quit()

"""jaxcam.batch: explaining a data set on every device, in several processes, resumably.

One folder of random images (and of every kind of bad file) is explained by the Python API on
1 device at batch 7 (run A) and on 8 devices at batch 64 (run B); by two real processes over
localhost through the command line; and by a real process killed with SIGKILL once its first
shard exists, then resumed. Every result is checked against ``jaxcam.explain_exits`` on the same
preprocessed batch, and the runs against each other. A tiny MSD-Net keeps compiles short.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest
from _kinks import assert_exit_maps_close
from _seeds import fresh_seed
from flax import nnx

import jaxcam
import msdnet_flax
from jaxcam import batch
from jaxcam.batch import read_image_checked as read_image
from jaxcam.batch import to_model_input
from jaxcam.cli.common import preprocessing_for
from jaxcam.cli.inputs import list_inputs as cli_list_inputs
from msdnet_flax.checkpoint import load_checkpoint, save_checkpoint
from msdnet_flax.data import normalize
from msdnet_flax.data.procedural import CLASS_NAMES

MEAN, STD = (0.45, 0.5, 0.55), (0.2, 0.25, 0.3)
SHARD = 4
BAD = {"empty.jpg": "0 bytes", "cut.jpg": "truncated JPEG", "cut.png": "truncated PNG",
       "text.png": "not a decodable image", "pdf.jpg": "not a decodable image",
       "bomb.png": "declares 100000x100000", "missing.png": "No such file",
       "adir.png": "not a regular file but a directory", "notes.txt": "not a decodable image"}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid, tiny PNG whose header declares ``width`` x ``height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (3 * width + 1) * 4, 9)  # four rows of zeros
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def data_rng() -> np.random.Generator:
    """Fresh module data every run (the seed is printed on failure)."""
    return np.random.default_rng(fresh_seed("module_data"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data_rng) -> dict:
    """A tiny checkpoint, a folder of good and bad images, and a file list of bad paths."""
    root = tmp_path_factory.mktemp("batch")
    config = msdnet_flax.MSDNetConfig(data="cifar", num_classes=len(CLASS_NAMES), n_blocks=2,
                                      n_channels=4, base=1, step=1, growth_rate=2,
                                      bn_factor=(1, 1, 1))
    model = msdnet_flax.MSDNet(config, rngs=nnx.Rngs(int(data_rng.integers(1 << 30))))
    save_checkpoint(root / "ckpt", model, step=3, mean=MEAN, std=STD, class_names=CLASS_NAMES)
    images = root / "images"
    good = []
    for k in range(27):  # 27: not a multiple of 4, 7, 8 or 64
        folder = images / ("circle" if k % 3 else "square")
        folder.mkdir(parents=True, exist_ok=True)
        h, w = (int(v) for v in data_rng.integers(12, 90, 2))
        path = folder / f"im{k:02d}.{'png' if k % 2 else 'jpg'}"
        cv2.imwrite(str(path), data_rng.integers(0, 256, (h, w, 3), np.uint8))
        good.append(path)
    broken = images / "broken"
    broken.mkdir()
    ok, jpg = cv2.imencode(".jpg", data_rng.integers(0, 256, (64, 64, 3), np.uint8))
    ok, png = cv2.imencode(".png", data_rng.integers(0, 256, (64, 64, 3), np.uint8))
    (broken / "empty.jpg").write_bytes(b"")
    (broken / "cut.jpg").write_bytes(jpg.tobytes()[: len(jpg) * 2 // 3])
    (broken / "cut.png").write_bytes(png.tobytes()[: len(png) * 2 // 3])
    (broken / "text.png").write_text("not a PNG\n")
    (broken / "pdf.jpg").write_bytes(b"%PDF-1.4\n" + data_rng.bytes(200))
    (broken / "bomb.png").write_bytes(bomb_png())
    (root / "adir.png").mkdir()
    (root / "notes.txt").write_text("a text file\n")
    listing = root / "list.txt"
    listing.write_text(f"# bad paths\n{root / 'missing.png'}\n\n{root / 'adir.png'}\n"
                       f"{root / 'notes.txt'}\n")
    return {"root": root, "ckpt": root / "ckpt", "images": images, "list": listing,
            "good": good, "model": load_checkpoint(root / "ckpt")}


def _inputs(setup: dict) -> batch.Inputs:
    return batch.list_inputs([str(setup["images"])], [str(setup["list"])])


def _run(setup: dict, out: Path, devices: list, batch_size: int, **kw) -> batch.RunSummary:
    model, meta = setup["model"]
    job = batch.BatchJob(out=out, batch_size=batch_size, shard_size=SHARD, **kw)
    return batch.explain_dataset(model, preprocessing_for(model, meta), _inputs(setup), job,
                                 devices=devices,
                                 progress=False)


@pytest.fixture(scope="module")
def run_a(setup, tmp_path_factory) -> tuple[batch.RunSummary, Path, int]:
    """1 device, batch 7, every picture; counting the backend compilations it causes."""
    out = tmp_path_factory.mktemp("run_a")
    compiles = []

    def listen(event: str, duration: float, **_: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        summary = _run(setup, out, jax.local_devices()[:1], 7)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return summary, out, len(compiles)


def _assert_same_results(out: Path, ref: Path) -> None:
    """Bit-identical maps and logits (issue 14: whatever devices, batch, processes, resume)."""
    a, b = batch.open_results(out), batch.open_results(ref)
    assert list(a) == list(b)
    for (file, x), (_, y) in zip(a.items(), b.items(), strict=True):
        assert x.name == y.name and x.index == y.index and x.label == y.label
        np.testing.assert_array_equal(x.maps, y.maps, err_msg=file)
        np.testing.assert_array_equal(x.logits, y.logits, err_msg=file)
        np.testing.assert_array_equal(x.targets, y.targets)
    assert a.errors == b.errors


def test_maps_equal_explain_exits_and_bad_inputs_are_recorded(setup, run_a):
    summary, out, n_compiles = run_a
    assert summary.explained == 27 and summary.failed == len(BAD) and summary.complete
    # One compilation for one batch shape, though 27 = 3 * 7 + 6 leaves a padded last batch.
    assert summary.compilations == 1 and n_compiles == 1
    results = batch.open_results(out)
    assert sorted(Path(f) for f in results) == sorted(setup["good"])
    files = list(results)
    x = np.stack([to_model_input(read_image(f), 32).astype(np.float32) for f in files])
    model, _ = setup["model"]
    maps, logits = jaxcam.explain_exits(model, normalize(x, MEAN, STD), return_logits=True)
    got = np.stack([results[f].maps for f in files], axis=1)
    assert got.dtype == np.float32 and got.shape == (2, 27, 32, 32) and got.std() > 0.05
    # The engine's batches of 7 and explain_exits' one batch of 27 are different float32
    # programs: an image whose exit head has a ReLU input within rounding of zero may take
    # either side of the kink (seen: 5.5e-8, that map 5% off), and only those may differ.
    assert_exit_maps_close(got, maps, model, normalize(x, MEAN, STD))
    np.testing.assert_allclose(np.stack([results[f].logits for f in files], axis=1),
                               np.asarray(logits), rtol=1e-4, atol=1e-5)
    for f in files:
        r = results[f]
        assert r.label == CLASS_NAMES.index(Path(f).parent.name)
        np.testing.assert_array_equal(r.targets, r.predictions)
        assert r.size == read_image(f).shape[:2] and results[r.name].file == f
    reasons = {Path(e["file"]).name: e["reason"] for e in results.errors}
    assert set(reasons) == set(BAD)
    for name, why in BAD.items():
        assert why in reasons[name], (name, reasons[name])
    # The #5 outputs of a small run: pictures, gallery, merged cams.npz, errors.txt.
    npz = np.load(out / "cams.npz")
    np.testing.assert_array_equal(npz["maps"], got)
    assert (out / "index.html").is_file() and len(list(out.glob("*_exits.png"))) == 27
    assert len((out / "errors.txt").read_text().splitlines()) == len(BAD)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["explained"] == 27
    assert sum(s["explained"] + s["failed"] for s in manifest["shards"]) == 27 + len(BAD)


def test_same_results_on_8_devices_at_batch_64(setup, run_a, tmp_path):
    summary = _run(setup, tmp_path, jax.local_devices(), 64, save_images="none")
    # 64 rounded up to whole chunks of 32 on each of the 8 devices.
    assert summary.devices == 8 and summary.batch_size == 256 and summary.compilations == 1
    assert not list(tmp_path.glob("*.png"))  # --save-images none
    _assert_same_results(tmp_path, run_a[1])
    # Another run's settings in the same directory are refused, not mixed in.
    with pytest.raises(batch.RunMismatchError, match="method"):
        _run(setup, tmp_path, jax.local_devices(), 64, method="hirescam")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def test_two_processes_over_localhost_equal_one(setup, run_a, tmp_path):
    port = _free_port()
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "jaxcam.cli", "explain", str(setup["images"]), "--files-from",
            str(setup["list"]), "--model", str(setup["ckpt"]), "--out", str(out),
            "--batch-size", "6", "--shard-size", str(SHARD), "--save-images", "none",
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    procs = [subprocess.Popen([*argv, "--process-id", str(i)], env=_env(2), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [1, 1], logs  # 1: some inputs failed
    assert "explained 27 image(s)" in logs[0] and f"{len(BAD)} failed" in logs[0]
    assert "2 process(es), 2 device(s) each" in logs[0] and "explained" not in logs[1]
    assert "process 0/2 explained [" in logs[0] and "ETA" in logs[0]  # one bar, process 0's
    manifest = json.loads((out / "manifest.json").read_text())
    per = manifest["per_process"]
    assert [p["shards_computed"] for p in per] == [5, 4]  # 36 inputs, shards of 4
    _assert_same_results(out, run_a[1])


_KILLED = textwrap.dedent("""
    import sys, time
    import jax
    from jaxcam import batch
    from jaxcam.cli.common import preprocessing_for
    from msdnet_flax.checkpoint import load_checkpoint
    ckpt, images, listing, out, pause = sys.argv[1:]
    model, meta = load_checkpoint(ckpt)
    job = batch.BatchJob(out=out, batch_size=7, shard_size=SHARD, save_images="none")
    batch.explain_dataset(model, preprocessing_for(model, meta),
                          batch.list_inputs([images], [listing]), job,
                          devices=jax.local_devices()[:1], progress=False,
                          on_shard=lambda j: time.sleep(float(pause)))
""").replace("SHARD", str(SHARD))


def test_killed_run_resumes_to_the_same_outputs(setup, run_a, tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(_KILLED)
    proc = subprocess.Popen([sys.executable, str(script), str(setup["ckpt"]),
                             str(setup["images"]), str(setup["list"]), str(out), "0.3"],
                            env=_env(8), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while not list((out / "shards").glob("shard-*.npz")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "shards").glob("shard-*.npz")))
    assert 1 <= done < 9
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    with pytest.raises(ValueError, match="not complete"):
        batch.open_results(out)
    summary = _run(setup, out, jax.local_devices()[:1], 7, save_images="none")
    assert summary.resumed == done and summary.complete
    assert summary.explained + summary.failed == 27 + len(BAD)
    assert not [p for p in (out / "shards").iterdir() if not p.name.startswith("shard-")]
    _assert_same_results(out, run_a[1])


# ------------------------------------------------------------------ units (no compilation)


def test_declared_size_is_read_from_every_header(rng):
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff"):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        ok, buf = cv2.imencode(ext, rng.integers(0, 256, (h, w, 3), np.uint8))
        assert ok and batch.declared_size(buf.tobytes()) == (w, h), ext
    w, h = (int(v) for v in rng.integers(1, 60000, 2))
    gif = (b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0) + b"," +
           struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x02\x44\x01\x00;")
    assert batch.declared_size(gif) == (w, h)
    assert batch.declared_size(b"%PDF-1.4 whatever") is None
    # A real JPEG whose frame header is patched to declare 60000 x 50000 pixels.
    ok, jpg = cv2.imencode(".jpg", rng.integers(0, 256, (16, 24, 3), np.uint8))
    data = bytearray(jpg.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 50000, 60000)
    with pytest.raises(batch.InputError, match="60000x50000"):
        batch.decode_checked(bytes(data))
    with pytest.raises(batch.InputError, match="decompression bomb"):
        batch.decode_checked(bomb_png())
    # Bytes after a JPEG's end-of-image marker are not truncation.
    img = rng.integers(0, 256, (20, 20, 3), np.uint8)
    ok, jpg = cv2.imencode(".jpg", img)
    out = batch.decode_checked(jpg.tobytes() + rng.bytes(50))
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8


def test_center_crop_equals_the_image_folder_loader(rng, tmp_path):
    from msdnet_flax.data.folder import _load

    for k in range(3):
        h, w = (int(v) for v in rng.integers(20, 120, 2))
        path = tmp_path / f"{k}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), np.uint8))
        np.testing.assert_array_equal(batch.center_crop(batch.read_image_checked(path), 32),
                                      _load(path, 32, 37))


def test_overlay_of_a_centre_cropped_input_sits_on_the_crop(rng):
    from jaxcam.batch._pictures import overlay_on_original

    original = rng.integers(0, 256, (300, 500, 3)).astype(np.float32)
    cam = np.zeros((32, 32), np.float32)
    cam[:8, :8] = 1.0  # hot: the crop's top-left corner
    # By hand: the shorter side to round(32 * 256 / 224) = 37 gives 37 x 61 (int(37 * 500 /
    # 300)); the crop starts at round(2.5) = 2, round(14.5) = 14 and spans 32, so in the
    # original it is rows 2 * 300/37 .. 34 * 300/37 = 16.2 .. 275.7, columns 14 * 500/61 ..
    # 46 * 500/61 = 114.8 .. 377.0.
    out = overlay_on_original(original, cam, crop=True).astype(np.int32)
    assert out.shape == (300, 500, 3)
    dimmed = np.round(original / 255 * np.float32(0.35 * 255)).astype(np.int32)
    outside = np.ones((300, 500), bool)
    outside[16:276, 115:377] = False
    np.testing.assert_array_equal(out[outside], dimmed[outside])
    # On a grey photo the colours are the map's: red where it is 1, blue where it is 0.
    grey = np.full_like(original, 128.0)
    out = overlay_on_original(grey, cam, crop=True).astype(np.int32)
    hot = out[20:70, 120:170]  # inside the box's first quarter of rows and columns
    cold = out[200:270, 300:370]
    assert (hot[..., 0] > hot[..., 2] + 50).all() and (cold[..., 2] > cold[..., 0] + 50).all()
    # Without the crop the map covers the whole image: its hot quarter is the top-left.
    whole = overlay_on_original(grey, cam, crop=False).astype(np.int32)
    assert (whole[:60, :100, 0] > whole[:60, :100, 2] + 50).all()
    assert (whole[100:, 150:, 2] > whole[100:, 150:, 0] + 50).all()


def test_shards_cover_every_input_once_for_any_process_count(rng):
    for _ in range(20):
        n, size, processes = int(rng.integers(0, 500)), int(rng.integers(1, 40)), \
            int(rng.integers(1, 9))
        ranges = batch.shard_ranges(n, size)
        seen = [i for p in range(processes)
                for j in batch.owned_shards(len(ranges), p, processes) for i in ranges[j]]
        assert sorted(seen) == list(range(n))


def test_progress_bar_shows_rate_and_eta():
    import io

    from jaxcam.batch._progress import Progress

    stream = io.StringIO()
    bar = Progress(10, stream=stream, log_every=0.0)
    bar(4)
    bar.close()
    text = stream.getvalue()
    assert "4/10 40%" in text and "images/s" in text and "ETA" in text


def test_command_line_usage_errors(setup, capsys):
    from jaxcam import cli

    for argv, message in ((["--model", str(setup["ckpt"])], "nothing to explain"),
                          ([str(setup["images"]), "--process-id", "1", "--num-processes", "2"],
                           "need --coordinator"),
                          ([str(setup["images"]), "--shard-size", "0"], "at least 1")):
        with pytest.raises(SystemExit) as exc:
            cli.main(["explain", *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def _fake_cifar(root: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, list]]:
    """A CIFAR-10 directory in the real format (class names: the procedural ones)."""
    import pickle

    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = int(rng.integers(1, 4))
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        (d / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
        expected[name] = (data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1), labels)
    (d / "batches.meta").write_bytes(pickle.dumps(
        {b"label_names": [c.encode() for c in CLASS_NAMES]}, protocol=2))
    return expected


def test_cifar_and_imagenet_sources_explained_for_their_true_class(setup, rng, tmp_path):
    expected = _fake_cifar(tmp_path / "cifar", rng)
    folder = tmp_path / "imagenet"
    for c in ("triangle", "circle"):
        (folder / c).mkdir(parents=True)
        for k in range(2):
            h, w = (int(v) for v in rng.integers(30, 80, 2))
            cv2.imwrite(str(folder / c / f"{k}.jpg"), rng.integers(0, 256, (h, w, 3), np.uint8))
    inputs = cli_list_inputs([f"cifar10:{tmp_path / 'cifar'}", f"imagenet:{folder}"])
    n_test = len(expected["test_batch"][1])
    assert len(inputs) == n_test + 4
    assert inputs.names[0] == "cifar10-test_00000" and inputs.keys[0].endswith("#0")
    classes = batch.class_index(CLASS_NAMES)
    train = cli_list_inputs([f"cifar10-train:{tmp_path / 'cifar'}"])
    images = np.concatenate([expected[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((expected[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert len(train) == len(images)
    for i in range(len(train)):
        np.testing.assert_array_equal(train.load(i), images[i])
        assert train.label(i, classes) == labels[i]
    out = tmp_path / "out"
    model, meta = setup["model"]
    job = batch.BatchJob(out=out, target="true", batch_size=5, shard_size=3)
    summary = batch.explain_dataset(model, preprocessing_for(model, meta), inputs, job,
                                    devices=jax.local_devices()[:1],
                                    progress=False)
    assert summary.explained == len(inputs) and summary.failed == 0
    results = batch.open_results(out)
    x = np.stack([batch.center_crop(inputs.load(i), 32) if inputs.crop(i) else inputs.load(i)
                  for i in range(len(inputs))]).astype(np.float32)
    want = np.asarray([inputs.label(i, classes) for i in range(len(inputs))])
    assert list(want[:n_test]) == expected["test_batch"][1]
    assert list(want[n_test:]) == [CLASS_NAMES.index(c) for c in ("circle",) * 2 +
                                   ("triangle",) * 2]
    maps = jaxcam.explain_exits(model, normalize(x, MEAN, STD), targets=want)
    got = np.stack([results[k].maps for k in inputs.keys], axis=1)
    assert_exit_maps_close(got, maps, model, normalize(x, MEAN, STD))
    for k in inputs.keys:
        np.testing.assert_array_equal(results[k].targets, results[k].label)
    with pytest.raises(KeyError, match="not among"):
        results["nope.png"]

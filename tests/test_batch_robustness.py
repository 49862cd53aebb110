"""jaxcam.batch over messy folders: issue 14's twelve cases, each a test.

Every test builds its own hostile input (a JPEG that hides its size behind a stray byte, a file
name that is not UTF-8, a named pipe, symlink loops, a picture that cannot be written, clashing
names, an output folder inside the input folder, inputs changed between runs, leftovers of a
killed merge, an unwritable output folder) and checks the promise of the README's "Explaining a
data set" against it. Data are random and fresh each run (the seed is printed). A tiny MSD-Net
keeps compiles short.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest
from _seeds import fresh_seed
from flax import nnx

import msdnet_flax
from jaxcam import batch
from msdnet_flax.checkpoint import save_checkpoint
from msdnet_flax.data.procedural import CLASS_NAMES

MEAN, STD = (0.45, 0.5, 0.55), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def rng_m() -> np.random.Generator:
    return np.random.default_rng(fresh_seed("module"))


@pytest.fixture(scope="module")
def model(rng_m):
    config = msdnet_flax.MSDNetConfig(data="cifar", num_classes=len(CLASS_NAMES), n_blocks=2,
                                      n_channels=4, base=1, step=1, growth_rate=2,
                                      bn_factor=(1, 1, 1))
    net = msdnet_flax.MSDNet(config, rngs=nnx.Rngs(int(rng_m.integers(1 << 30))))
    net.eval()
    return net


PREP = batch.Preprocessing(32, MEAN, STD, CLASS_NAMES)


def _image(path: Path, rng: np.random.Generator, size: tuple[int, int] | None = None) -> Path:
    h, w = size or tuple(int(v) for v in rng.integers(12, 60, 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix if path.suffix in (".png", ".jpg", ".bmp") else ".png",
                           rng.integers(0, 256, (h, w, 3), np.uint8))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _run(model, inputs: batch.Inputs, out: Path, **kw) -> batch.RunSummary:
    job = batch.BatchJob(out=out, **{"batch_size": 4, "shard_size": 2, **kw})
    return batch.explain_dataset(model, PREP, inputs, job, devices=jax.local_devices()[:1],
                                 progress=False)


def _in_thread(fn, timeout: float):
    """``fn()``'s result, or a failure if it has not returned within ``timeout`` seconds (a
    hang must fail the test, not stall it)."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"still running after {timeout} s (hangs)"
    if "error" in box:
        raise box["error"]
    return box["value"]


# 1 ---------------------------------------------------------------------------------------------


def _jpeg_hiding_its_size(rng: np.random.Generator, w: int, h: int) -> bytes:
    """A 16x16 JPEG whose frame header declares w x h, with one stray 0x00 byte before the frame
    header: libjpeg skips the byte (with a warning) and decodes w x h pixels."""
    ok, jpg = cv2.imencode(".jpg", rng.integers(0, 256, (16, 16, 3), np.uint8))
    data = bytearray(jpg.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data[:sof]) + b"\x00" + bytes(data[sof:])


def test_1_jpeg_hiding_its_size_behind_a_stray_byte_is_refused_before_decoding(rng):
    w, h = int(rng.integers(200, 400)), int(rng.integers(200, 400))
    data = _jpeg_hiding_its_size(rng, w, h)
    assert len(data) < 1000
    # The bypass is real: OpenCV decodes the declared size, which a limit must have prevented.
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (h, w)
    with pytest.raises(batch.InputError, match=f"declares {w}x{h}"):
        batch.decode_checked(data, max_pixels=w * h - 1)
    assert batch.declared_size(data) == (w, h)
    assert batch.decode_checked(data, max_pixels=w * h).shape[:2] == (h, w)


# 2 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext,name", [(".pgm", "gray.png"), (".hdr", "radiance.hdr"),
                                      (".jp2", "j2k.jp2"), (".pfm", "float.pfm"),
                                      (".pam", "arbitrary.pam"), (".ppm", "pixmap.ppm")])
def test_2_max_pixels_applies_to_every_format(rng, tmp_path, ext, name):
    h, w = int(rng.integers(64, 100)), int(rng.integers(64, 100))
    img = rng.integers(0, 256, (h, w, 3), np.uint8)
    if ext == ".pgm":
        img = img[..., 0]
    if ext in (".hdr", ".pfm"):
        img = img.astype(np.float32) / 255
    ok, buf = cv2.imencode(ext, img)
    assert ok
    path = tmp_path / name
    path.write_bytes(buf.tobytes())
    with pytest.raises(batch.InputError, match=f"declares {w}x{h}"):
        batch.read_image_checked(path, max_pixels=w * h - 1)
    assert batch.read_image_checked(path, max_pixels=w * h).shape == (h, w, 3)


def test_2_unknown_size_is_refused_and_decoding_holds_a_budget(rng):
    # A Sun raster whose magic is damaged: no header parser knows its size, so no decoding.
    with pytest.raises(batch.InputError, match="no known header tells its size"):
        batch.decode_checked(b"\x00\x01" + rng.bytes(300))
    budget = batch.PixelBudget(100)
    held, peak, lock = [0], [0], threading.Lock()

    def work(n: int) -> None:
        got = budget.acquire(n)
        with lock:
            held[0] += got
            peak[0] = max(peak[0], held[0])
        time.sleep(0.002)
        with lock:
            held[0] -= got
        budget.release(got)

    threads = [threading.Thread(target=work, args=(int(n),))
               for n in rng.integers(1, 150, 40)]  # some larger than the whole budget
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] <= 100 and held[0] == 0


# 3 ---------------------------------------------------------------------------------------------


def test_3_file_name_that_is_not_utf8_is_an_input_like_any_other(model, rng, tmp_path):
    folder = tmp_path / "photos"
    bad = folder / os.fsdecode(b"caf\xe9.png")
    _image(bad, rng)
    _image(folder / "plain.png", rng)
    inputs = batch.list_inputs([str(folder)])
    assert str(bad) in inputs.keys
    out = tmp_path / "out"
    summary = _run(model, inputs, out, save_images="all")
    assert summary.complete and summary.explained == 2 and summary.failed == 0
    results = batch.open_results(out)
    assert results[str(bad)].file == str(bad)
    name = results[str(bad)].name
    assert name.isascii() and (out / f"{name}_exits.png").is_file()
    assert "caf\\xe9.png" in (out / "index.html").read_text(encoding="utf-8")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"]
    # The failure of such a file is as readable as any other.
    bad.write_bytes(b"")
    summary = _run(model, batch.list_inputs([str(folder)]), out, save_images="all")
    assert summary.failed == 1 and "caf\\xe9.png" in (out / "errors.txt").read_text()
    assert batch.open_results(out).errors[0]["file"] == str(bad)


# 4 ---------------------------------------------------------------------------------------------


def test_4_named_pipe_is_refused_not_waited_on(rng, tmp_path):
    good = _image(tmp_path / "good.png", rng)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{fifo}\n{good}\n")
    inputs = batch.list_inputs([], [str(listing)])
    assert inputs.keys == [str(fifo), str(good)]
    with pytest.raises(batch.InputError, match="named pipe"):
        _in_thread(lambda: inputs.load(0), timeout=10)
    assert inputs.load(1).shape[2] == 3
    # Found by a folder walk or named on the command line, it is an error entry with the reason.
    for args in ([str(tmp_path)], [str(fifo)]):
        walked = _in_thread(lambda a=args: batch.list_inputs(a), timeout=10)
        assert dict(walked.errors)[str(fifo)].startswith("not a regular file but a named pipe")


# 5 ---------------------------------------------------------------------------------------------

_LIST = textwrap.dedent("""
    import json, sys
    from jaxcam import batch
    inputs = batch.list_inputs(sys.argv[1:])
    print(json.dumps({"keys": inputs.keys, "errors": inputs.errors}))
""")


def _list_in_subprocess(args: list[str], timeout: float = 60) -> dict:
    """``list_inputs(args)`` in a fresh process killed after ``timeout`` s (a walk that never
    ends would otherwise eat this process's memory)."""
    proc = subprocess.run([sys.executable, "-c", _LIST, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _loops(root: Path, rng: np.random.Generator) -> list[Path]:
    files = [_image(root / "a.png", rng), _image(root / "sub" / "b.png", rng)]
    (root / "sub" / "up").symlink_to("..")
    (root / "self").symlink_to(".")
    return files


def test_5_symlink_loops_end_the_walk(rng, tmp_path):
    root = tmp_path / "loops"
    files = _loops(root, rng)
    for args in ([str(root)], [f"{root}/**/*.png"]):
        got = _list_in_subprocess(args)
        assert sorted(got["keys"]) == sorted(str(f) for f in files), args
        assert max(len(Path(k).parts) for k in got["keys"]) <= len(root.parts) + 2
        loops = sorted(Path(f).name for f, why in got["errors"] if "loop" in why)
        assert loops == ["self", "up"], got["errors"]


# 6 ---------------------------------------------------------------------------------------------


def test_6_walk_reports_what_it_cannot_follow(rng, tmp_path, monkeypatch):
    root = tmp_path / "messy"
    good = _image(root / "ok.png", rng)
    (root / "gone.jpg").symlink_to(root / "deleted.jpg")
    _image(root / "locked" / "hidden_from_us.png", rng)
    (root / "self").symlink_to(".")
    real_scandir = os.scandir

    def scandir(path=".", *a):  # root may open any folder: refuse one as if it were 0o000
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path, *a)

    monkeypatch.setattr(os, "scandir", scandir)
    inputs = batch.list_inputs([str(root)])
    assert inputs.keys == [str(good)]
    reasons = {Path(f).name: why for f, why in inputs.errors}
    assert reasons.keys() == {"gone.jpg", "locked", "self"}, reasons
    assert "broken symbolic link" in reasons["gone.jpg"]
    assert "Permission denied" in reasons["locked"]
    assert "loop" in reasons["self"]


# 7 ---------------------------------------------------------------------------------------------


def test_7_picture_that_cannot_be_written_leaves_its_shard_to_be_redone(model, rng, tmp_path):
    folder = tmp_path / "in"
    files = [_image(folder / f"im{k}.png", rng) for k in range(5)]
    out = tmp_path / "out"
    inputs = batch.list_inputs([str(folder)])
    blocked = out / f"{inputs.names[2]}_exits.png"
    blocked.mkdir(parents=True)  # writing the picture there fails (a full disk, a bad name)
    with pytest.raises(OSError, match=inputs.names[2]) as exc:  # not a "failed input"
        _run(model, inputs, out, save_images="all")
    assert isinstance(exc.value, batch.OutputError)
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"]
    assert not (out / "shards" / "shard-000001.npz").exists()  # im2's shard is not complete
    blocked.rmdir()
    summary = _run(model, batch.list_inputs([str(folder)]), out, save_images="all")
    assert summary.complete and summary.explained == 5 and summary.failed == 0
    assert blocked.is_file() and not batch.open_results(out).errors
    assert len(list(out.glob("*_exits.png"))) == len(files)
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


# 8 ---------------------------------------------------------------------------------------------


def test_8_output_names_are_unique_across_groups_and_bounded(rng, tmp_path):
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    a, b, c = (_image(d1 / "cat.png", rng), _image(d1 / "cat-2.png", rng),
               _image(d2 / "cat.png", rng))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{c}\n")
    long = _image(d2 / ("x" * 240 + ".png"), rng)
    longer = _image(d2 / ("x" * 241 + ".png"), rng)
    inputs = batch.list_inputs([str(d1), str(long), str(longer)], [str(listing)])
    assert inputs.keys == [str(p) for p in (b, a, long, longer, c)]
    lower = [n.lower() for n in inputs.names]
    assert len(set(lower)) == len(lower), inputs.names
    assert max(len(n) for n in inputs.names) <= batch.MAX_NAME
    assert inputs.names[:2] == ["cat-2", "cat"]


# 9 ---------------------------------------------------------------------------------------------


def test_9_output_folder_inside_an_input_folder_is_never_an_input(model, rng, tmp_path,
                                                                monkeypatch):
    photos = tmp_path / "photos"
    for k in range(3):
        _image(photos / f"p{k}.png", rng)
    monkeypatch.chdir(photos)
    first = _run(model, batch.list_inputs(["."]), Path("jaxcam_out"), save_images="all")
    assert first.inputs == 3 and first.complete and len(list(Path("jaxcam_out").glob("*.png")))
    # The same command again, and with --overwrite: still the three photos, nothing recomputed.
    again = _run(model, batch.list_inputs(["."]), Path("jaxcam_out"), save_images="all")
    assert again.inputs == 3 and again.resumed == again.shards and again.complete
    over = _run(model, batch.list_inputs(["."]), Path("jaxcam_out"), save_images="all",
                overwrite=True)
    assert over.inputs == 3
    # Listed with the output folder excluded, as jaxcam explain lists them: the same run.
    listed = batch.list_inputs(["."], exclude=["jaxcam_out"])
    assert listed.keys == batch.list_inputs(["."]).excluding("jaxcam_out").keys
    assert len(listed) == 3 and not listed.errors


# 10 --------------------------------------------------------------------------------------------


def test_10_changed_inputs_are_recomputed_and_preprocessing_is_in_the_fingerprint(
        model, rng, tmp_path):
    folder = tmp_path / "in"
    files = [_image(folder / f"im{k}.png", rng, (40, 40)) for k in range(4)]
    out = tmp_path / "out"
    _run(model, batch.list_inputs([str(folder)]), out, save_images="none")
    before = batch.open_results(out)
    old = before[str(files[0])].maps
    _image(files[0], rng, (40, 40))  # replaced by another image of the same size
    st = files[0].stat()
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    files[3].write_bytes(b"")  # emptied
    summary = _run(model, batch.list_inputs([str(folder)]), out, save_images="none")
    after = batch.open_results(out)
    assert not np.array_equal(after[str(files[0])].maps, old)
    assert summary.explained == 3 and summary.failed == 1
    assert summary.changed == 2 and summary.resumed == 0 and summary.complete
    fresh = _run(model, batch.list_inputs([str(folder)]), tmp_path / "fresh", save_images="none")
    assert fresh.explained == 3
    np.testing.assert_array_equal(after[str(files[0])].maps,
                                  batch.open_results(tmp_path / "fresh")[str(files[0])].maps)
    # Nothing changed since: nothing recomputed.
    assert _run(model, batch.list_inputs([str(folder)]), out, save_images="none").changed == 0
    # The same files centre-cropped (imagenet:DIR) make other model inputs: another run.
    crop = batch.FileSource(sorted(str(f) for f in files), crop=True)
    inputs = batch.list_inputs(["c:x"], prefixes={"c": lambda _: crop})
    with pytest.raises(batch.RunMismatchError):
        _run(model, inputs, out, save_images="none")


def test_10_content_hash_sees_a_change_that_keeps_size_and_mtime(model, rng, tmp_path):
    folder = tmp_path / "in"
    path = _image(folder / "a.bmp", rng, (20, 20))  # BMP: same size for any pixels
    out = tmp_path / "out"
    _run(model, batch.list_inputs([str(folder)]), out, save_images="none", content_hash=True)
    st = path.stat()
    _image(path, rng, (20, 20))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    summary = _run(model, batch.list_inputs([str(folder)]), out, save_images="none",
                   content_hash=True)
    assert summary.changed == 1


# 11 --------------------------------------------------------------------------------------------


def test_11_results_are_bit_identical_whatever_position_batch_and_devices(model, rng):
    images = rng.uniform(0, 255, (40, 32, 32, 3)).astype(np.float32)
    others = rng.uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)

    def explain(x: np.ndarray, devices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        step = batch.ExplainStep(model, image_size=32, mean=MEAN, std=STD, exits=(0, 1),
                                 batch_size=size, devices=jax.local_devices()[:devices])
        parts = [step(x[s:s + step.batch_size]) for s in range(0, len(x), step.batch_size)]
        return (np.concatenate([p[0] for p in parts], 1),
                np.concatenate([p[1] for p in parts], 1))

    ref = explain(images, 1, 1)
    runs = {(devices, size): explain(images, devices, size)
            for devices, size in ((1, 64), (4, 8), (8, 16))}
    # Every image five slots later, behind other images (as after a resume or another order).
    maps, logits = explain(np.concatenate([others, images]), 1, 1)
    runs["shifted"] = (maps[:, 5:], logits[:, 5:])
    # The same image in every slot: the last slot too.
    same = explain(np.repeat(images[:1], 64, 0), 1, 64)
    runs["same"] = (same[0][:, :1].repeat(40, 1), same[1][:, :1].repeat(40, 1))
    for k in range(64):
        np.testing.assert_array_equal(same[0][:, k], ref[0][:, 0], err_msg=f"slot {k}")
        np.testing.assert_array_equal(same[1][:, k], ref[1][:, 0], err_msg=f"slot {k}")
    for key, (maps, logits) in runs.items():
        if key != "same":
            np.testing.assert_array_equal(maps, ref[0], err_msg=str(key))
            np.testing.assert_array_equal(logits, ref[1], err_msg=str(key))


# 12 --------------------------------------------------------------------------------------------


def test_12_leftovers_removed_and_a_no_op_rerun_keeps_the_run_readable(model, rng, tmp_path,
                                                                      monkeypatch):
    folder = tmp_path / "in"
    for k in range(3):
        _image(folder / f"im{k}.png", rng)
    out = tmp_path / "out"
    _run(model, batch.list_inputs([str(folder)]), out, save_images="all")
    leftovers = [out / ".cams.npz.tmp4242", out / ".manifest.json.tmp77",
                 out / ".errors.jsonl.tmp77", out / ".im0_exits.png.tmp9",
                 out / "shards" / ".shard-000000.npz.tmp5"]
    for p in leftovers:
        p.write_bytes(b"partial")
    # A re-run with nothing to do, killed before it finishes, leaves a readable run.
    from jaxcam.batch import _run as run_module

    def killed(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(run_module, "finish_run", killed)
        with pytest.raises(KeyboardInterrupt):
            _run(model, batch.list_inputs([str(folder)]), out, save_images="all")
    assert len(batch.open_results(out)) == 3
    summary = _run(model, batch.list_inputs([str(folder)]), out, save_images="all")
    assert summary.complete and summary.resumed == summary.shards
    assert not [p for p in leftovers if p.exists()]


def test_12_unwritable_out_is_one_line_and_exit_status_3(rng, tmp_path, capsys, model):
    from jaxcam import cli

    save_checkpoint(tmp_path / "ckpt", model, step=1, mean=MEAN, std=STD,
                    class_names=CLASS_NAMES)
    _image(tmp_path / "in" / "a.png", rng)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be\n")
    code = cli.main(["explain", str(tmp_path / "in"), "--model", str(tmp_path / "ckpt"),
                     "--out", str(blocker / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and "cannot write" in err[0], err
    # A full disk while writing shards: the same line, the same status.
    import numpy

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    real = numpy.savez
    numpy.savez = full
    try:
        code = cli.main(["explain", str(tmp_path / "in"), "--model", str(tmp_path / "ckpt"),
                         "--out", str(tmp_path / "out"), "--no-progress"])
    finally:
        numpy.savez = real
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and "No space left on device" in err[-1], err


_PEER = textwrap.dedent("""
    import functools, sys, time
    from jaxcam import batch, cli
    if sys.argv[1] == "slow":  # this process takes its time over each shard
        batch.explain_dataset = functools.partial(batch.explain_dataset,
                                                  on_shard=lambda j: time.sleep(0.5))
    sys.exit(cli.main(sys.argv[2:]))
""")


def test_12_a_dead_peer_ends_the_run_with_the_tools_message_within_seconds(model, rng, tmp_path):
    import socket

    save_checkpoint(tmp_path / "ckpt", model, step=1, mean=MEAN, std=STD,
                    class_names=CLASS_NAMES)
    for k in range(20):
        _image(tmp_path / "in" / f"im{k:02d}.png", rng)
    out = tmp_path / "out"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}

    def start(pid: int, speed: str, port: int) -> subprocess.Popen:
        argv = ["explain", str(tmp_path / "in"), "--model", str(tmp_path / "ckpt"), "--out",
                str(out), "--batch-size", "2", "--shard-size", "2", "--save-images", "none",
                "--no-progress", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                "--process-id", str(pid)]
        return subprocess.Popen([sys.executable, "-c", _PEER, speed, *argv], env=env,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    procs = [start(0, "fast", port), start(1, "slow", port)]
    deadline = time.time() + 240
    while not (out / "shards" / "shard-000001.npz").exists():  # process 1's first shard
        assert procs[1].poll() is None and time.time() < deadline, procs[1].communicate()
        time.sleep(0.05)
    procs[1].kill()
    killed = time.time()
    try:
        _, err = procs[0].communicate(timeout=60)
    finally:
        procs[0].kill()
        procs[1].communicate()
    assert time.time() - killed < 30, "the survivor waited for JAX's heartbeat"
    assert procs[0].returncode == 4, err
    assert "process 1 of 2 stopped" in err and "Traceback" not in err, err
    done = len(list((out / "shards").glob("shard-*.npz")))
    # The same command again finishes the run; "resumed" counts every process's shards.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [start(0, "fast", port), start(1, "fast", port)]
    logs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert f"resumed: {done} of 10 shard(s)" in logs[0][0], logs[0]
    assert len(batch.open_results(out)) == 20

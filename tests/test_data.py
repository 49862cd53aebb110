"""msdnet_flax.data: procedural shapes, CIFAR and image-folder loaders, the batch pipeline."""

from __future__ import annotations

import gc
import hashlib
import pickle
import tarfile
import threading
import time
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from msdnet_flax.data import (
    CLASS_NAMES,
    ArrayDataset,
    augment_cifar,
    augment_imagenet,
    batches,
    cifar_augment_params,
    epoch_order,
    generate,
    imagenet_augment_params,
    load_cifar,
    load_image_folder,
    normalize,
    procedural,
)


@pytest.fixture(scope="module")
def shapes() -> ArrayDataset:
    return generate(4000, seed=123)


def _tiny(rng: np.random.Generator, n: int = 50, size: int = 8) -> ArrayDataset:
    return ArrayDataset(images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                        labels=rng.integers(0, 10, n).astype(np.int32),
                        class_names=tuple("abcdefghij"), mean=(0.5, 0.5, 0.5),
                        std=(0.25, 0.25, 0.25))


# ----------------------------------------------------------------------------- ArrayDataset


def test_array_dataset_validates(rng: np.random.Generator) -> None:
    ds = _tiny(rng)
    assert len(ds) == 50
    sub = ds.subset(np.array([3, 1]))
    np.testing.assert_array_equal(sub.images, ds.images[[3, 1]])
    np.testing.assert_array_equal(sub.labels, ds.labels[[3, 1]])
    ok = dict(images=ds.images, labels=ds.labels, class_names=ds.class_names, mean=ds.mean,
              std=ds.std)
    with pytest.raises(TypeError, match="uint8"):
        ArrayDataset(**{**ok, "images": ds.images.astype(np.float32)})
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        ArrayDataset(**{**ok, "images": ds.images[..., :1]})
    with pytest.raises(TypeError, match="int32"):
        ArrayDataset(**{**ok, "labels": ds.labels.astype(np.int64)})
    with pytest.raises(ValueError, match="labels must have shape"):
        ArrayDataset(**{**ok, "labels": ds.labels[:-1]})
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        ArrayDataset(**{**ok, "class_names": ("a", "b", "c")})
    with pytest.raises(ValueError, match="std"):
        ArrayDataset(**{**ok, "std": (0.2, 0.0, 0.2)})
    with pytest.raises(ValueError, match="masks"):
        ArrayDataset(**{**ok, "masks": np.zeros((50, 4, 4), bool)})
    with pytest.raises(ValueError, match="difficulty"):
        ArrayDataset(**{**ok, "difficulty": np.full(50, 1.5, np.float32)})


def test_normalize_jittable(rng: np.random.Generator) -> None:
    x = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    got = jax.jit(normalize, static_argnums=(1, 2))(x, mean, std)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, (x / 255.0 - np.array(mean)) / np.array(std), rtol=1e-6,
                               atol=1e-6)


# ----------------------------------------------------------------------------- procedural


def test_procedural_deterministic_and_seed_dependent() -> None:
    a = generate(300, seed=7)
    b = generate(300, seed=7)
    c = generate(300, seed=8)
    for field in ("images", "labels", "masks", "difficulty"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.labels, c.labels)


# sha256 of each array's bytes, taken from the generator that made the bundled model's training
# data: any change to the rendering (even one reordered random draw) shows up here.
_PINNED = {
    (64, 0, 32, (0.0, 1.0)): {
        "images": "0b37c70369a39efcf001b9bea341d3e4b8d5be1a853e2e2dd0aca093966f6800",
        "labels": "2f69ce7707cbd42be828339f9aecf8b451f00177e9d1d04808986613ce75881b",
        "masks": "d9ba13f8e5dc9ee384881a0bf5094da52d58e020657884e899b9d9e22c3395a3",
        "difficulty": "80add0b5f65be2c1d6ee359a0d36687a8e678d42872ca87958b2508e0bd595e1",
    },
    # two chunks, another size, a fixed difficulty
    (600, 3, 40, 0.7): {
        "images": "7acdb19edf34950f53c678cd0d07cae0035251cce4f5b7de3b16ea4ae92def20",
        "labels": "40869bc7e1d0d203fe130c43ee7139843a3720ad62607c1603753629e3fae602",
        "masks": "5d8bfa8ccc21fd970f133db4f7a139eb49e1fca172c873f4a1725bf3299e6b76",
        "difficulty": "e42e17cd4c04273c291a6882e0672678cf88397662e64d6eae7a45322850b54e",
    },
}


@pytest.mark.parametrize("key", list(_PINNED), ids=["64-seed0", "600-seed3-size40"])
def test_procedural_bit_identical_to_pinned_hashes(key: tuple) -> None:
    n, seed, size, difficulty = key
    d = generate(n, seed=seed, size=size, difficulty=difficulty)
    got = {f: hashlib.sha256(np.ascontiguousarray(getattr(d, f)).tobytes()).hexdigest()
           for f in _PINNED[key]}
    assert got == _PINNED[key]


def test_procedural_shapes_dtypes_and_labels(shapes: ArrayDataset) -> None:
    n = len(shapes)
    assert shapes.images.shape == (n, 32, 32, 3) and shapes.images.dtype == np.uint8
    assert shapes.labels.shape == (n,) and shapes.labels.dtype == np.int32
    assert shapes.masks.shape == (n, 32, 32) and shapes.masks.dtype == np.bool_
    assert shapes.difficulty.dtype == np.float32
    assert shapes.class_names == CLASS_NAMES and len(set(CLASS_NAMES)) >= 10
    counts = np.bincount(shapes.labels, minlength=len(CLASS_NAMES))
    assert counts.max() - counts.min() <= 1  # balanced by construction
    d = shapes.difficulty
    assert d.min() >= 0 and d.max() <= 1 and d.min() < 0.05 and d.max() > 0.95
    fixed = generate(20, seed=1, difficulty=0.3, size=48)
    assert fixed.images.shape == (20, 48, 48, 3)
    np.testing.assert_array_equal(fixed.difficulty, np.float32(0.3))
    ranged = generate(200, seed=1, difficulty=(0.2, 0.4))
    assert ranged.difficulty.min() >= 0.2 and ranged.difficulty.max() <= 0.4
    with pytest.raises(ValueError, match="difficulty"):
        generate(5, seed=0, difficulty=(0.5, 0.2))
    with pytest.raises(ValueError, match="seed"):
        generate(5, seed=-1)


def test_procedural_masks_and_contrast(shapes: ArrayDataset) -> None:
    areas = shapes.masks.sum((1, 2))
    assert areas.min() >= 20  # every object is visible
    # Mask pixels differ from the rest of the image (the object stands out).
    img = shapes.images.astype(np.float32)
    m = shapes.masks[..., None]
    inside = (img * m).sum((1, 2)) / m.sum((1, 2))
    outside = (img * ~m).sum((1, 2)) / (~m).sum((1, 2))
    contrast = np.linalg.norm(inside - outside, axis=1)
    assert np.median(contrast) > 30
    easy, hard = shapes.difficulty < 0.3, shapes.difficulty > 0.7
    assert np.median(contrast[easy]) > np.median(contrast[hard])
    # Harder samples have smaller objects.
    assert areas[hard].mean() < 0.6 * areas[easy].mean()


def test_procedural_colour_does_not_predict_class(shapes: ArrayDataset) -> None:
    mean_rgb = shapes.images.reshape(len(shapes), -1, 3).mean(1) / 255.0
    per_class = np.stack([mean_rgb[shapes.labels == c].mean(0)
                          for c in range(len(CLASS_NAMES))])
    assert np.abs(per_class - mean_rgb.mean(0)).max() < 0.03
    obj_rgb = np.stack([shapes.images[i][shapes.masks[i]].mean(0) for i in range(600)]) / 255
    labels = shapes.labels[:600]
    per_class_obj = np.stack([obj_rgb[labels == c].mean(0) for c in range(len(CLASS_NAMES))])
    assert np.abs(per_class_obj - obj_rgb.mean(0)).max() < 0.1


def test_procedural_normalisation_constants(shapes: ArrayDataset) -> None:
    pixels = shapes.images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(pixels.mean(0), procedural.MEAN, atol=0.015)
    np.testing.assert_allclose(pixels.std(0), procedural.STD, atol=0.01)
    assert shapes.mean == procedural.MEAN and shapes.std == procedural.STD


def test_procedural_50k_generation_takes_seconds() -> None:
    # Processor time of all threads: generation is a few seconds of compute; the bound is
    # generous, and wall time is not asserted, as it depends on what else the machine runs.
    wall, cpu = time.perf_counter(), time.process_time()
    ds = generate(50_000, seed=0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert len(ds) == 50_000
    assert cpu < 15.0, f"generating 50,000 images took {cpu:.1f}s of CPU ({wall:.1f}s wall)"


# ----------------------------------------------------------------------------- CIFAR


def _fake_cifar(root: Path, rng: np.random.Generator, num_classes: int
                ) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Write a tiny CIFAR archive and its extracted directory in the real format.

    Returns (archive, extracted dir, {split: (NHWC images, labels)}).
    """
    if num_classes == 10:
        dirname, archive = "cifar-10-batches-py", "cifar-10-python.tar.gz"
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        meta_name, names_key, labels_key = "batches.meta", b"label_names", b"labels"
    else:
        dirname, archive = "cifar-100-python", "cifar-100-python.tar.gz"
        files = {"train": ["train"], "test": ["test"]}
        meta_name, names_key, labels_key = "meta", b"fine_label_names", b"fine_labels"
    blobs: dict[str, bytes] = {}
    expected = {}
    for split, names in files.items():
        ims, labs = [], []
        for name in names:
            n = int(rng.integers(2, 5))
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            lab = [int(v) for v in rng.integers(0, num_classes, n)]  # a list, as the real files
            batch = {b"batch_label": name.encode(), labels_key: lab, b"data": data,
                     b"filenames": [f"img{i}.png".encode() for i in range(n)]}
            if num_classes == 100:
                batch[b"coarse_labels"] = [v // 5 for v in lab]
            blobs[name] = pickle.dumps(batch, protocol=2)
            ims.append(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
            labs.append(np.array(lab))
        expected[split] = (np.concatenate(ims), np.concatenate(labs))
    class_names = [f"class{i}".encode() for i in range(num_classes)]
    meta = {names_key: class_names, b"num_cases_per_batch": 10000}
    if num_classes == 100:
        meta[b"coarse_label_names"] = [f"super{i}".encode() for i in range(20)]
    blobs[meta_name] = pickle.dumps(meta, protocol=2)
    extracted = root / dirname
    extracted.mkdir(parents=True)
    for name, raw in blobs.items():
        (extracted / name).write_bytes(raw)
    with tarfile.open(root / archive, "w:gz") as tar:
        tar.add(extracted, arcname=dirname)
    return root / archive, extracted, expected


@pytest.mark.parametrize("num_classes", [10, 100])
def test_load_cifar_archive_and_directory(tmp_path: Path, rng: np.random.Generator,
                                          num_classes: int) -> None:
    archive, extracted, expected = _fake_cifar(tmp_path, rng, num_classes)
    for split in ("train", "test"):
        images, labels = expected[split]
        only_archive = tmp_path / "download"
        only_archive.mkdir(exist_ok=True)
        (only_archive / archive.name).write_bytes(archive.read_bytes())
        for source in (archive, extracted, tmp_path, only_archive):
            ds = load_cifar(source, split=split, num_classes=num_classes)
            np.testing.assert_array_equal(ds.images, images)
            np.testing.assert_array_equal(ds.labels, labels)
            assert ds.labels.dtype == np.int32 and ds.images.dtype == np.uint8
            assert ds.class_names == tuple(f"class{i}" for i in range(num_classes))
    # Channel-major rows: pixel (0, 0)'s red, green, blue are columns 0, 1024, 2048.
    raw = pickle.loads((extracted / ("test_batch" if num_classes == 10 else "test"))
                       .read_bytes(), encoding="bytes")[b"data"]
    np.testing.assert_array_equal(load_cifar(archive, split="test", num_classes=num_classes)
                                  .images[0, 0, 0], raw[0, [0, 1024, 2048]])


def test_load_cifar_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    missing = tmp_path / "nope.tar.gz"
    with pytest.raises(FileNotFoundError, match="nope.tar.gz"):
        load_cifar(missing, split="train", num_classes=10)
    _, extracted, _ = _fake_cifar(tmp_path / "c10", rng, 10)
    (extracted / "data_batch_3").write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="data_batch_3"):
        load_cifar(extracted, split="train", num_classes=10)
    (extracted / "data_batch_3").write_bytes(pickle.dumps({b"labels": [1]}))
    with pytest.raises(ValueError, match=r"data_batch_3.*b'data'"):
        load_cifar(extracted, split="train", num_classes=10)
    (extracted / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar(extracted, split="test", num_classes=10)
    with pytest.raises(ValueError, match="num_classes"):
        load_cifar(extracted, split="test", num_classes=20)
    not_tar = tmp_path / "cifar-10-python.tar.gz"
    not_tar.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz"):
        load_cifar(not_tar, split="test", num_classes=10)


# ----------------------------------------------------------------------------- image folder


def _write(path: Path, rgb_or_gray: np.ndarray) -> None:
    img = rgb_or_gray
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), img)


def test_load_image_folder(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "imgs"
    for name in ("zebra", "ant", "cat"):
        (root / name).mkdir(parents=True)
    # An image whose shorter side already equals `resize`: the crop is an exact slice.
    exact = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    _write(root / "ant" / "a_exact.png", exact)
    _write(root / "ant" / "b_gray.png", rng.integers(0, 256, (30, 17), dtype=np.uint8))
    _write(root / "cat" / "c_rgba.png", rng.integers(0, 256, (25, 40, 4), dtype=np.uint8))
    _write(root / "cat" / "d.jpg", rng.integers(0, 256, (64, 48, 3), dtype=np.uint8))
    _write(root / "zebra" / "e.JPG", rng.integers(0, 256, (9, 9, 3), dtype=np.uint8))
    (root / "zebra" / "notes.txt").write_text("not an image")
    ds = load_image_folder(root, size=8, resize=12)
    assert ds.class_names == ("ant", "cat", "zebra")
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1, 2])
    assert ds.images.shape == (5, 8, 8, 3) and ds.images.dtype == np.uint8
    top, left = int(round((12 - 8) / 2)), int(round((20 - 8) / 2))
    np.testing.assert_array_equal(ds.images[0], exact[top:top + 8, left:left + 8])
    gray = ds.images[1]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    assert ds.mean == (0.485, 0.456, 0.406)
    default = load_image_folder(root, size=7)  # resize = round(7 * 256 / 224) = 8
    assert default.images.shape == (5, 7, 7, 3)
    subset = load_image_folder(root, size=8, resize=12, class_names=["zebra", "ant"])
    np.testing.assert_array_equal(subset.labels, [0, 1, 1])


def test_load_image_folder_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    with pytest.raises(FileNotFoundError, match="missing_root"):
        load_image_folder(tmp_path / "missing_root", size=8)
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "empty").mkdir()
    _write(root / "a" / "ok.png", rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        load_image_folder(root, size=8)
    (root / "empty").rmdir()
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image_folder(root, size=8)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_image_folder(root, size=8, class_names=["a", "nope"])


# ----------------------------------------------------------------------------- pipeline


def test_epoch_order() -> None:
    a = epoch_order(100, seed=1, epoch=0)
    np.testing.assert_array_equal(np.sort(a), np.arange(100))
    np.testing.assert_array_equal(a, epoch_order(100, seed=1, epoch=0))
    assert not np.array_equal(a, epoch_order(100, seed=1, epoch=1))
    assert not np.array_equal(a, epoch_order(100, seed=2, epoch=0))
    np.testing.assert_array_equal(epoch_order(7, seed=1, epoch=3, shuffle=False), np.arange(7))


def _collect(it) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(np.asarray(x), np.asarray(y)) for x, y in it], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batches_cover_epoch_once(rng: np.random.Generator, prefetch: int) -> None:
    ds = _tiny(rng, n=50)
    # Tag every image with its index so the order can be read back.
    images = ds.images.copy()
    images[:, 0, 0, 0] = np.arange(50)
    ds = ArrayDataset(images=images, labels=ds.labels, class_names=ds.class_names, mean=ds.mean,
                      std=ds.std)
    orders = []
    for epoch in (0, 1):
        shapes_seen = []
        it = batches(ds, 16, seed=3, epoch=epoch, drop_remainder=False, prefetch=prefetch)
        xs, ys = [], []
        for x, y in it:
            assert isinstance(x, jax.Array) and x.dtype == jnp.uint8 and y.dtype == jnp.int32
            shapes_seen.append(x.shape[0])
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
        assert shapes_seen == [16, 16, 16, 2]
        x, y = np.concatenate(xs), np.concatenate(ys)
        order = x[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(np.sort(order), np.arange(50))
        np.testing.assert_array_equal(order, epoch_order(50, seed=3, epoch=epoch))
        np.testing.assert_array_equal(y, ds.labels[order])
        np.testing.assert_array_equal(x, ds.images[order])
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])
    dropped = [x.shape[0] for x, _ in batches(ds, 16, seed=3, prefetch=prefetch)]
    assert dropped == [16, 16, 16]


def test_batches_start_step_resumes(rng: np.random.Generator) -> None:
    ds = _tiny(rng, n=70)
    full_x, full_y = _collect(batches(ds, 8, seed=5, epoch=2))
    rest_x, rest_y = _collect(batches(ds, 8, seed=5, epoch=2, start_step=3))
    np.testing.assert_array_equal(rest_x, full_x[24:])
    np.testing.assert_array_equal(rest_y, full_y[24:])
    assert list(batches(ds, 8, start_step=8)) == []
    with pytest.raises(ValueError, match="start_step"):
        batches(ds, 8, start_step=9)


def test_batches_sharded(rng: np.random.Generator) -> None:
    ds = _tiny(rng, n=64)
    mesh = jax.make_mesh((8,), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    plain_x, plain_y = _collect(batches(ds, 32, seed=1))
    xs, ys = [], []
    for x, y in batches(ds, 32, seed=1, sharding=sharding):
        assert x.sharding == sharding and y.sharding == sharding
        assert len(x.addressable_shards) == 8
        assert all(s.data.shape == (4, 8, 8, 3) for s in x.addressable_shards)
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    np.testing.assert_array_equal(np.concatenate(xs), plain_x)
    np.testing.assert_array_equal(np.concatenate(ys), plain_y)
    with pytest.raises(ValueError, match="divide evenly"):
        batches(ds, 12, sharding=sharding)


class _Exploding(np.ndarray):
    """An image array whose third batch gather fails."""

    calls = 0

    def __getitem__(self, idx):  # noqa: ANN001
        if isinstance(idx, np.ndarray):
            type(self).calls += 1
            if type(self).calls == 3:
                raise RuntimeError("disk on fire")
        return super().__getitem__(idx)


def test_batches_propagate_producer_errors(rng: np.random.Generator) -> None:
    ds = _tiny(rng, n=64)
    _Exploding.calls = 0
    bad = ArrayDataset(images=ds.images.view(_Exploding), labels=ds.labels,
                       class_names=ds.class_names, mean=ds.mean, std=ds.std)
    it = batches(bad, 8)
    next(it)
    next(it)
    with pytest.raises(RuntimeError, match="disk on fire"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def _batch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "msdnet_flax.data.batches"]


def test_batches_thread_stops_on_close_and_gc(rng: np.random.Generator) -> None:
    ds = _tiny(rng, n=400)
    before = len(_batch_threads())
    it = batches(ds, 4, prefetch=2)
    next(it)
    it.close()
    assert len(_batch_threads()) == before
    it = batches(ds, 4, prefetch=2)
    next(it)
    del it
    gc.collect()
    deadline = time.time() + 5
    while len(_batch_threads()) > before and time.time() < deadline:
        time.sleep(0.01)
    assert len(_batch_threads()) == before


# ----------------------------------------------------------------------------- augmentation

# Jitted once per shape (eager dispatch would compile every primitive separately).
_cifar_params = jax.jit(cifar_augment_params, static_argnums=1)
_imagenet_params = jax.jit(imagenet_augment_params, static_argnums=(1, 2, 3))


def test_augment_cifar_matches_numpy(rng: np.random.Generator) -> None:
    x = rng.integers(1, 256, (16, 32, 32, 3), dtype=np.uint8)
    key = jax.random.key(int(rng.integers(2**31)))
    out = augment_cifar(key, x)
    assert out.shape == x.shape and out.dtype == jnp.uint8
    np.testing.assert_array_equal(out, augment_cifar(key, x))
    assert not np.array_equal(out, augment_cifar(jax.random.fold_in(key, 1), x))
    offsets, flips = map(np.asarray, _cifar_params(key, 16))
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(16):
        top, left = offsets[i]
        ref = padded[i, top:top + 32, left:left + 32]
        if flips[i]:
            ref = ref[:, ::-1]
        np.testing.assert_array_equal(np.asarray(out[i]), ref)
    assert 0 <= offsets.min() and offsets.max() <= 8


def test_augment_imagenet(rng: np.random.Generator) -> None:
    x = rng.integers(0, 256, (6, 40, 56, 3), dtype=np.uint8)
    key = jax.random.key(int(rng.integers(2**31)))
    out = augment_imagenet(key, x, 24)
    assert out.shape == (6, 24, 24, 3) and out.dtype == jnp.uint8
    np.testing.assert_array_equal(out, augment_imagenet(key, x, 24))
    boxes, flips = map(np.asarray, _imagenet_params(key, 6, 40, 56))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 40).all() and (left + w <= 56).all() and (h > 0).all() and (w > 0).all()
    # Reference: OpenCV's bilinear resize (half-pixel centres, no antialiasing) of each box.
    for i in range(6):
        crop = x[i, top[i]:top[i] + h[i], left[i]:left[i] + w[i]].astype(np.float32)
        ref = cv2.resize(crop, (24, 24), interpolation=cv2.INTER_LINEAR)
        if flips[i]:
            ref = ref[:, ::-1]
        np.testing.assert_allclose(np.asarray(out[i], np.float32), ref, atol=1.01)
    # A constant image stays constant (same shapes: no recompilation).
    np.testing.assert_array_equal(augment_imagenet(key, np.full_like(x, 77), 24), 77)


def test_augment_imagenet_scale_and_ratio_distribution() -> None:
    boxes, flips = map(np.asarray, _imagenet_params(jax.random.key(0), 4000, 100, 100))
    area = boxes[:, 2] * boxes[:, 3] / 1e4
    ratio = boxes[:, 3] / boxes[:, 2]
    assert 0.07 <= area.min() and area.max() <= 1.0 and 0.45 < area.mean() < 0.62
    assert 0.7 < ratio.min() and ratio.max() < 1.4
    assert 0.45 < flips.mean() < 0.55

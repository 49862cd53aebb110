"""Batches on device with background prefetching, and jitted on-device augmentation.

``batches`` walks one epoch of an ``ArrayDataset`` in a deterministic order (``epoch_order``),
gathers each batch on the host in a background thread and places it on the device(s) with
``jax.device_put`` (sharded over the batch axis when given a sharding), ``prefetch`` batches
ahead of the consumer. Images stay uint8 (4x less host-to-device traffic); augment and normalise
them on the device:

    for x, y in batches(train, 64, seed=0, epoch=e, sharding=sharding):
        key, sub = jax.random.split(key)
        x = normalize(augment_cifar(sub, x), train.mean, train.std)
"""

from __future__ import annotations

import functools
import math
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from msdnet_flax.data._dataset import ArrayDataset

__all__ = [
    "augment_cifar",
    "augment_imagenet",
    "batches",
    "cifar_augment_params",
    "epoch_order",
    "imagenet_augment_params",
    "steps_per_epoch",
]

_CIFAR_PAD = 4


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order in which an epoch visits ``n`` samples: a permutation fixed by (seed, epoch).

    Args:
      n: number of samples.
      seed: non-negative run seed.
      epoch: non-negative epoch index; each epoch gets its own independent permutation.
      shuffle: if False, the identity order ``0..n-1``.

    Returns:
      (n,) int64 array holding each index of ``range(n)`` once.
    """
    n = _check_int("n", n, 0)
    seed = _check_int("seed", seed, 0)
    epoch = _check_int("epoch", epoch, 0)
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch]))
    return rng.permutation(n).astype(np.int64)


def steps_per_epoch(n: int, batch_size: int, *, drop_remainder: bool = True) -> int:
    """The number of batches ``batches`` yields for ``n`` samples.

    Args:
      n: number of samples.
      batch_size: samples per batch.
      drop_remainder: whether a last, smaller batch is dropped.

    Returns:
      ``n // batch_size`` if ``drop_remainder`` else ``ceil(n / batch_size)``.
    """
    return n // batch_size if drop_remainder else -(-n // batch_size)


def _batch_shardings(sharding: jax.sharding.Sharding) -> tuple[Any, Any, int]:
    """(image sharding, label sharding, number of shards along the batch axis)."""
    if isinstance(sharding, NamedSharding):
        spec = tuple(sharding.spec)
        axes = spec[0] if spec else None
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        shards = math.prod(sharding.mesh.shape[a] for a in names)
        # Shard the batch axis only: the labels are rank 1, whatever the spec says about H, W, C.
        batch_spec = PartitionSpec(axes)
        named = NamedSharding(sharding.mesh, batch_spec)
        return named, named, shards
    if not isinstance(sharding, jax.sharding.Sharding):
        raise TypeError(f"sharding must be a jax.sharding.Sharding (e.g. "
                        f"NamedSharding(mesh, PartitionSpec('data'))), got "
                        f"{type(sharding).__name__}")
    return sharding, sharding, 1


class _End:
    pass


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


_END = _End()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` on ``q`` unless asked to stop first; True if it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _worker(produce: Callable[[], Iterator[Any]], q: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in produce():
            if not _put(q, item, stop):
                return
        _put(q, _END, stop)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        _put(q, _Failure(exc), stop)


def _shutdown(stop: threading.Event, q: queue.Queue, thread: threading.Thread) -> None:
    stop.set()
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
    if thread is not threading.current_thread():
        thread.join(timeout=30.0)


class _Prefetcher(Iterator[Any]):
    """Runs ``produce()`` in a daemon thread, at most ``depth`` items ahead of the consumer.

    ``close()`` (also on ``with`` exit, exhaustion, an error, or garbage collection) stops the
    thread and waits for it. An exception raised by the producer is re-raised by ``__next__``.
    """

    def __init__(self, produce: Callable[[], Iterator[Any]], depth: int):
        q: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()
        # The thread must not reference self, or the iterator could never be collected.
        thread = threading.Thread(target=_worker, args=(produce, q, stop), daemon=True,
                                  name="msdnet_flax.data.batches")
        self._queue, self._stop, self._thread = q, stop, thread
        self._finalizer = weakref.finalize(self, _shutdown, stop, q, thread)
        self._done = False
        thread.start()

    def __iter__(self) -> _Prefetcher:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, _End):
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item

    def close(self) -> None:
        """Stop the background thread (idempotent)."""
        self._done = True
        self._finalizer()

    def __enter__(self) -> _Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def batches(dataset: ArrayDataset, batch_size: int, *, seed: int = 0, epoch: int = 0,
            shuffle: bool = True, drop_remainder: bool = True, start_step: int = 0,
            sharding: jax.sharding.Sharding | None = None,
            prefetch: int = 2) -> Iterator[tuple[jax.Array, jax.Array]]:
    """One epoch of (images, labels) batches, already on the device(s).

    Args:
      dataset: the samples.
      batch_size: samples per batch (the global batch when sharded).
      seed: run seed; with ``epoch`` it fixes the order (``epoch_order``).
      epoch: epoch index.
      shuffle: visit samples in a random (but deterministic) order.
      drop_remainder: drop the last batch if it is smaller than ``batch_size``.
      start_step: skip this many batches (resume mid-epoch); skipped batches are not gathered.
      sharding: where to place each batch; a ``NamedSharding`` shards the batch axis over the
        mesh axes of its spec's first entry (e.g. ``PartitionSpec('data')``), and the batch size
        must divide evenly. ``None``: jax's default device.
      prefetch: batches prepared ahead in a background thread; 0 prepares them synchronously.

    Returns:
      An iterator of ``(images, labels)``: (B, H, W, 3) uint8 and (B,) int32 ``jax.Array``s.
      Call ``close()`` on it (or use it in a ``with`` block) to stop the background thread early;
      dropping it also stops the thread. Errors raised while preparing a batch are re-raised by
      ``next()``.
    """
    if not isinstance(dataset, ArrayDataset):
        raise TypeError(f"dataset must be an ArrayDataset, got {type(dataset).__name__}")
    batch_size = _check_int("batch_size", batch_size, 1)
    start_step = _check_int("start_step", start_step, 0)
    prefetch = _check_int("prefetch", prefetch, 0)
    n = len(dataset)
    order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
    steps = steps_per_epoch(n, batch_size, drop_remainder=drop_remainder)
    if start_step > steps:
        raise ValueError(f"start_step={start_step} is past the end of the epoch: {n} samples in "
                         f"batches of {batch_size} give {steps} steps")
    image_sharding = label_sharding = None
    if sharding is not None:
        image_sharding, label_sharding, shards = _batch_shardings(sharding)
        sizes = {batch_size} if steps == 0 else \
            {min(batch_size, n - s * batch_size) for s in (0, steps - 1)}
        bad = sorted(s for s in sizes if s % shards)
        if bad:
            raise ValueError(f"batch size {bad[0]} does not divide evenly over the {shards} "
                             f"shards of the batch axis of {sharding}; choose a batch size that "
                             f"is a multiple of {shards}"
                             + ("" if drop_remainder else " and a data set size that leaves a "
                                "last batch divisible by it, or drop_remainder=True"))
    images, labels = dataset.images, dataset.labels

    def produce() -> Iterator[tuple[jax.Array, jax.Array]]:
        for step in range(start_step, steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            x, y = images[idx], labels[idx]
            yield jax.device_put(x, image_sharding), jax.device_put(y, label_sharding)

    if prefetch == 0:
        return produce()
    return _Prefetcher(produce, prefetch)


# ---------------------------------------------------------------------------------------------
# Augmentation (on device, jitted, vmapped over the batch).


def _shard_like_batch(params: tuple[jax.Array, ...], images: jax.Array) -> tuple[jax.Array, ...]:
    """Give per-image random parameters the batch sharding of ``images``.

    Under an explicitly sharded mesh (``jax.make_mesh``'s default axis type), ``vmap`` needs every
    mapped input sharded alike over the batch axis; the freshly drawn parameters are replicated.
    """
    sharding = getattr(jax.typeof(images), "sharding", None)
    spec = tuple(getattr(sharding, "spec", ()) or ())
    if not spec or spec[0] is None:
        return params
    target = NamedSharding(sharding.mesh, PartitionSpec(spec[0]))
    return tuple(jax.sharding.reshard(p, target) for p in params)


def cifar_augment_params(key: jax.Array, batch_size: int,
                         pad: int = _CIFAR_PAD) -> tuple[jax.Array, jax.Array]:
    """The random choices ``augment_cifar`` makes for a key.

    Args:
      key: a JAX PRNG key.
      batch_size: number of images.
      pad: zero padding on each side.

    Returns:
      ``offsets`` (B, 2) int32: the crop's (top, left) corner in the padded image, in
      ``[0, 2 * pad]``; and ``flips`` (B,) bool: whether the crop is mirrored left-right.
    """
    # One draw (a single threefry expansion keeps compilation fast) for all choices.
    u = jax.random.uniform(key, (batch_size, 3))
    offsets = jnp.minimum(jnp.floor(u[:, :2] * (2 * pad + 1)), 2 * pad).astype(jnp.int32)
    flips = u[:, 2] < 0.5
    return offsets, flips


@jax.jit
def augment_cifar(key: jax.Array, images_uint8: jax.Array) -> jax.Array:
    """CIFAR augmentation: zero-pad 4, random crop back to H x W, random horizontal flip.

    Each image gets its own crop and flip (see ``cifar_augment_params``); deterministic given
    ``key``.

    Args:
      key: a JAX PRNG key.
      images_uint8: (B, H, W, C) images (any dtype; uint8 expected).

    Returns:
      (B, H, W, C) augmented images, same dtype.
    """
    b, h, w, c = images_uint8.shape
    offsets, flips = _shard_like_batch(cifar_augment_params(key, b), images_uint8)
    p = _CIFAR_PAD
    padded = jnp.pad(images_uint8, ((0, 0), (p, p), (p, p), (0, 0)))

    def one(img: jax.Array, off: jax.Array, flip: jax.Array) -> jax.Array:
        crop = jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))
        return jnp.where(flip, crop[:, ::-1], crop)

    return jax.vmap(one)(padded, offsets, flips)


def imagenet_augment_params(key: jax.Array, batch_size: int, height: int, width: int, *,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3),
                            attempts: int = 10) -> tuple[jax.Array, jax.Array]:
    """The random resized crop boxes and flips ``augment_imagenet`` uses for a key.

    Follows torchvision's ``RandomResizedCrop.get_params``: up to ``attempts`` tries of an area
    fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``; the first box that fits
    is used, else a centred crop of the whole image clamped to ``ratio``.

    Args:
      key: a JAX PRNG key.
      batch_size: number of images.
      height: input image height.
      width: input image width.
      scale: range of the crop's area as a fraction of the image.
      ratio: range of the crop's width / height.
      attempts: tries before the centred fallback.

    Returns:
      ``boxes`` (B, 4) int32 ``(top, left, crop_height, crop_width)`` and ``flips`` (B,) bool.
    """
    # One draw (a single threefry expansion keeps compilation fast) for all choices.
    u = jax.random.uniform(key, (batch_size, 2 * attempts + 3))
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, :attempts])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    log_r = lo + (hi - lo) * u[:, attempts:2 * attempts]
    aspect = jnp.exp(log_r)
    cw = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    ch = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    ok = (cw > 0) & (cw <= width) & (ch > 0) & (ch <= height)
    first = jnp.argmax(ok, axis=1)
    found = jnp.any(ok, axis=1)
    rows = jnp.arange(batch_size)
    cw, ch = cw[rows, first], ch[rows, first]
    top = jnp.minimum(jnp.floor(u[:, -3] * (height - ch + 1)), height - ch).astype(jnp.int32)
    left = jnp.minimum(jnp.floor(u[:, -2] * (width - cw + 1)), width - cw).astype(jnp.int32)
    # torchvision's fallback: the whole image, clamped to the ratio range, centred.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    ft, fl = (height - fh) // 2, (width - fw) // 2
    boxes = jnp.stack([jnp.where(found, top, ft), jnp.where(found, left, fl),
                       jnp.where(found, ch, fh), jnp.where(found, cw, fw)], axis=1)
    flips = u[:, -1] < 0.5
    return boxes.astype(jnp.int32), flips


def _resize_crop(img: jax.Array, box: jax.Array, out_size: int) -> jax.Array:
    """Bilinear resize of the crop ``img[box]`` to out_size^2, as crop-then-resize does.

    Half-pixel centres, sample positions clamped to the crop's edge pixels (OpenCV's and
    torchvision's ``INTER_LINEAR`` / bilinear without antialiasing).
    """
    h, w = img.shape[:2]
    top, left, ch, cw = (box[i].astype(jnp.float32) for i in range(4))
    grid = jnp.arange(out_size, dtype=jnp.float32) + 0.5
    ys = jnp.clip(top + grid * ch / out_size - 0.5, top, top + ch - 1.0)
    xs = jnp.clip(left + grid * cw / out_size - 0.5, left, left + cw - 1.0)
    y0 = jnp.floor(ys).astype(jnp.int32)
    x0 = jnp.floor(xs).astype(jnp.int32)
    y1 = jnp.minimum(y0 + 1, h - 1)
    x1 = jnp.minimum(x0 + 1, w - 1)
    wy = (ys - y0)[:, None, None]
    wx = (xs - x0)[None, :, None]
    f = img.astype(jnp.float32)
    top_rows, bottom_rows = f[y0], f[y1]  # (out, W, C)
    rows = top_rows + (bottom_rows - top_rows) * wy
    left_cols, right_cols = rows[:, x0], rows[:, x1]
    return left_cols + (right_cols - left_cols) * wx


@functools.partial(jax.jit, static_argnames=("out_size",))
def augment_imagenet(key: jax.Array, images: jax.Array, out_size: int) -> jax.Array:
    """ImageNet augmentation: random resized crop (scale 0.08..1, ratio 3/4..4/3) + flip.

    Bilinear resampling without antialiasing; each image gets its own box and flip (see
    ``imagenet_augment_params``); deterministic given ``key``.

    Args:
      key: a JAX PRNG key.
      images: (B, H, W, C) images, uint8 or float.
      out_size: side of the square output.

    Returns:
      (B, out_size, out_size, C) images of the input dtype (integers rounded and clipped).
    """
    b, h, w, _ = images.shape
    boxes, flips = _shard_like_batch(imagenet_augment_params(key, b, h, w), images)

    def one(img: jax.Array, box: jax.Array, flip: jax.Array) -> jax.Array:
        out = _resize_crop(img, box, out_size)
        return jnp.where(flip, out[:, ::-1], out)

    out = jax.vmap(one)(images, boxes, flips)
    if jnp.issubdtype(images.dtype, jnp.integer):
        info = jnp.iinfo(images.dtype)
        return jnp.clip(jnp.round(out), info.min, info.max).astype(images.dtype)
    return out.astype(images.dtype)

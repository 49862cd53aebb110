"""Reading one input safely: only regular files are opened, the pixel count is known from the
header before anything is decoded (or the file is refused), decoding holds a share of a memory
budget, truncation is detected, any bit depth and channel count is decoded to RGB, and the model's
preprocessing (whole-image resize, or ImageNet's centre crop) is applied.

The header is read by Pillow's lazy ``Image.open`` (which parses the headers of every common
format and, like libjpeg, skips stray bytes between JPEG markers, so a header that libjpeg would
accept cannot hide its size), with small parsers for the formats OpenCV decodes but Pillow does
not identify (Radiance HDR, PFM, PAM).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import warnings

import cv2
import numpy as np

from jaxcam.batch._preprocessing import Preprocessing
from jaxcam.extend.images import center_crop

__all__ = ["InputError", "DEFAULT_MAX_PIXELS", "MAX_FILE_BYTES", "declared_size", "check_complete",
           "read_image_checked", "read_file_checked", "decode_checked", "decode_image",
           "to_model_input", "preprocess", "center_crop", "PixelBudget", "file_kind",
           "file_version"]

# 100 megapixels: larger than any camera's photos, small enough that a few decoding threads at
# once (3 bytes a pixel, plus OpenCV's working copies) cannot exhaust memory.
DEFAULT_MAX_PIXELS = 100_000_000
# A file this large is no image we could explain; refusing it before reading bounds memory.
MAX_FILE_BYTES = 1 << 30

class InputError(ValueError):
    """An input that cannot be explained; the message says why (recorded in errors.jsonl)."""


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, for messages: ``named pipe``, ``directory``..."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISLNK, "symbolic link")):
        if test(mode):
            return name
    return "special file"


def _pillow_size(data: bytes) -> tuple[str, tuple[int, int]] | None:
    """``(format, (width, height))`` from Pillow's header parsers, or None.

    Pillow's own ``Image.open`` would refuse images above its global decompression-bomb limit
    before telling their size; the plugins are therefore called as ``Image.open`` calls them
    (``PIL.Image._open_core``), without that check: ``--max-pixels`` is the limit here.
    """
    from PIL import Image

    Image.init()
    prefix = data[:16]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": only the size matters
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            try:
                verdict = True if accept is None else accept(prefix)
                if not verdict or isinstance(verdict, str):  # a string: "not quite this one"
                    continue
                im = factory(io.BytesIO(data), "")
            except Exception:  # noqa: BLE001 - not this format, or a header it cannot parse
                continue
            w, h = im.size
            return im.format or fmt, (int(w), int(h))
    return None


def _text_header_size(data: bytes) -> tuple[str, tuple[int, int]] | None:
    """``(format, (width, height))`` of the text-headed formats OpenCV reads and Pillow does not
    identify: Radiance HDR (``-Y H +X W`` after the header lines), PFM and PAM."""
    head = data[:4096]
    try:
        if head.startswith((b"#?RADIANCE", b"#?RGBE")):
            end = head.index(b"\n\n") + 2
            fields = head[end:head.index(b"\n", end)].split()
            dims = {fields[0][1:2]: int(fields[1]), fields[2][1:2]: int(fields[3])}
            return "HDR", (dims[b"X"], dims[b"Y"])
        if head[:3] in (b"PF\n", b"Pf\n"):
            w, h = head[3:].split(None, 2)[:2]
            return "PFM", (int(w), int(h))
        if head[:3] == b"P7\n":
            items = dict(line.split(None, 1) for line in head[3:].split(b"ENDHDR")[0]
                         .decode("ascii").splitlines() if " " in line)
            return "PAM", (int(items["WIDTH"]), int(items["HEIGHT"]))
    except (ValueError, IndexError, KeyError, UnicodeDecodeError):
        return None
    return None


def declared_size(data: bytes) -> tuple[int, int] | None:
    """The (width, height) an image file's header declares, read without decoding it.

    Pillow's header parsers (PNG, JPEG, GIF, BMP, WebP, TIFF, PNM, JPEG 2000, Sun raster, AVIF
    and more; JPEG markers found past stray bytes as libjpeg finds them), then Radiance HDR, PFM
    and PAM.

    Args:
      data: the file's bytes.

    Returns:
      ``(width, height)``, or None when no parser recognises the header.
    """
    found = _pillow_size(data) or _text_header_size(data)
    return None if found is None else found[1]


def check_complete(data: bytes) -> None:
    """Raise :class:`InputError` if a PNG or JPEG file was cut short.

    OpenCV decodes a truncated JPEG into an image whose missing rows are grey (with only a
    warning on stderr), so truncation is detected from the file's structure: a PNG's last image
    data chunk must be followed by its IEND chunk, a JPEG's last scan by its end-of-image marker.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if data.rfind(b"IEND") < max(data.rfind(b"IDAT"), 0):
            raise InputError(f"truncated PNG ({len(data)} bytes): no IEND chunk after the image "
                             f"data; the file was cut short")
    elif data[:3] == b"\xff\xd8\xff":
        if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
            raise InputError(f"truncated JPEG ({len(data)} bytes): no end-of-image marker after "
                             f"the last scan; the file was cut short")


def decode_image(raw: np.ndarray) -> np.ndarray:
    """Decode an encoded image file's bytes to (H, W, 3) RGB on the 0..255 scale.

    8-bit images come back as uint8; 16-bit ones as float32 divided by 257 (so 65535 -> 255,
    keeping their finer steps); float images (TIFF) as float32 times 255. Grayscale is repeated
    into three channels; an alpha channel is dropped (as ``cv2.IMREAD_COLOR`` and the training
    loaders do); EXIF orientation is applied. No size or completeness checks: see
    :func:`decode_checked`.

    Args:
      raw: the file's bytes as a uint8 array.

    Returns:
      The decoded image.

    Raises:
      ValueError: empty, or not an image OpenCV can decode (naming why).
    """
    if raw.size == 0:
        raise ValueError("empty file (0 bytes)")
    img = cv2.imdecode(raw, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if img is None or img.size == 0:
        head = bytes(raw[:8])
        kind = "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "binary data"
        raise ValueError(f"not a decodable image ({raw.size} bytes; starts like {kind}: "
                         f"{head!r}); corrupt or not an image format OpenCV reads")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return img.astype(np.float32) / np.float32(257)
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(np.nan_to_num(img.astype(np.float32)), 0, 1) * np.float32(255)
    info = np.iinfo(img.dtype)  # e.g. 8-bit signed
    return ((img.astype(np.float32) - info.min) * (255 / (info.max - info.min))).astype(np.float32)


class PixelBudget:
    """A count of pixels that decoding threads may hold at once, shared by all of them.

    A thread reserves an image's declared pixel count before decoding it and releases it once
    decoded, waiting while the budget is spent: however many workers run, the decoders never
    hold more than ``pixels`` pixels at once (and OpenCV's working copies of them). An image
    larger than the whole budget waits until it is alone.

    Args:
      pixels: the budget; the engine uses ``max(--max-pixels, batch x 4 megapixels)``, so one
        image of the largest accepted size always fits and ordinary photos decode in parallel.
    """

    def __init__(self, pixels: int):
        self.pixels = max(1, int(pixels))
        self._free = self.pixels
        self._cond = threading.Condition()

    def acquire(self, n: int) -> int:
        """Reserve ``n`` pixels (at most the whole budget), waiting until they are free."""
        n = min(max(0, int(n)), self.pixels)
        with self._cond:
            self._cond.wait_for(lambda: self._free >= n)
            self._free -= n
        return n

    def release(self, n: int) -> None:
        """Give back what :meth:`acquire` returned."""
        with self._cond:
            self._free += n
            self._cond.notify_all()


def _check_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """The declared ``(width, height)``, or :class:`InputError` when unknown, empty or too large."""
    found = _pillow_size(data) or _text_header_size(data)
    if found is None:
        head = data[:8]
        kind = "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "binary data"
        raise InputError(f"not a decodable image: no known header tells its size ({len(data):,} "
                         f"bytes; starts like {kind}: {head!r}); corrupt, not an image, or a "
                         f"format whose size cannot be checked against --max-pixels before "
                         f"decoding, so it is not decoded")
    fmt, (w, h) = found
    if w * h > max_pixels:
        raise InputError(f"image declares {w}x{h} = {w * h:,} pixels ({fmt}), more than the limit "
                         f"of {max_pixels:,} (--max-pixels): a decompression bomb or an image "
                         f"too large to decode safely")
    if w <= 0 or h <= 0:
        raise InputError(f"image declares an empty {w}x{h} size; corrupt header")
    return w, h


def decode_checked(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                   budget: PixelBudget | None = None) -> np.ndarray:
    """Decode an image file's bytes after checking its declared size and completeness.

    Args:
      data: the encoded file.
      max_pixels: largest width x height accepted (checked from the header, before decoding, so
        a decompression bomb never allocates its pixels; a file whose size cannot be read from
        its header is refused).
      budget: pixels decoding threads may hold together; this decode waits for its share.

    Returns:
      (H, W, 3) RGB on the 0..255 scale, uint8 (8-bit files) or float32 (16-bit, float).

    Raises:
      InputError: empty, size unknown, too large, truncated, decoding to more pixels than it
        declares, or not a decodable image (the message says which).
    """
    if not data:
        raise InputError("empty file (0 bytes)")
    w, h = _check_size(data, max_pixels)
    check_complete(data)
    held = 0 if budget is None else budget.acquire(w * h)
    try:
        img = decode_image(np.frombuffer(data, np.uint8))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    except cv2.error as exc:  # e.g. OpenCV's own pixel limit
        raise InputError(f"OpenCV refused to decode it: {str(exc).strip().splitlines()[-1]}"
                         ) from None
    finally:
        if budget is not None:
            budget.release(held)
    if img.shape[0] * img.shape[1] > w * h:  # never seen, but then the header lied
        raise InputError(f"decodes to {img.shape[1]}x{img.shape[0]} pixels though its header "
                         f"declares {w}x{h}; corrupt or crafted file")
    return img


def read_file_checked(path: str | os.PathLike, content_hash: bool = False
                      ) -> tuple[bytes, str]:
    """A regular file's bytes and its version, refusing anything else unread.

    The file is opened non-blocking (a named pipe would otherwise wait for a writer forever)
    and checked on the open descriptor, so what is read is what was checked.

    Args:
      path: the file.
      content_hash: put a SHA-256 of the bytes in the version (else size and mtime only).

    Returns:
      ``(data, version)``; the version is ``"<size>:<mtime ns>"`` or ``"<size>:sha256:<hex>"``.

    Raises:
      InputError: missing, not a regular file (the message names what it is), unreadable, or
        larger than :data:`MAX_FILE_BYTES`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"not a regular file but a {file_kind(st.st_mode)}: only regular "
                             f"files are read")
        if st.st_size > MAX_FILE_BYTES:
            raise InputError(f"file is {st.st_size:,} bytes, more than {MAX_FILE_BYTES:,}: not "
                             f"an image this tool decodes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    version = (f"{len(data)}:sha256:{hashlib.sha256(data).hexdigest()}" if content_hash
               else f"{st.st_size}:{st.st_mtime_ns}")
    return data, version


def file_version(path: str | os.PathLike, content_hash: bool = False) -> str:
    """The version :func:`read_file_checked` would record for ``path`` now (``"missing"``,
    ``"not-regular"`` or ``"unreadable"`` when it would refuse the file unread)."""
    if content_hash:
        try:
            return read_file_checked(path, True)[1]
        except InputError:
            pass
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    if not stat.S_ISREG(st.st_mode):
        return "not-regular"
    return "unreadable" if content_hash else f"{st.st_size}:{st.st_mtime_ns}"


def read_image_checked(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
                       budget: PixelBudget | None = None) -> np.ndarray:
    """Read and decode one image file, as :func:`decode_checked`, refusing huge or non-regular
    files unread.

    Raises:
      InputError: unreadable (missing, a directory, a named pipe or device, no permission),
        larger than :data:`MAX_FILE_BYTES`, or anything :func:`decode_checked` refuses.
    """
    return decode_checked(read_file_checked(path)[0], max_pixels, budget)


def to_model_input(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W, 3) 0..255 image (whole, aspect not kept) to (size, size, 3).

    Shrinking uses ``cv2.INTER_AREA`` and enlarging ``cv2.INTER_LINEAR``, as the training
    loaders do; 8-bit images stay uint8 (identical to what training saw), others float32.

    Args:
      image: the decoded image.
      size: the model's input side.

    Returns:
      The resized image (``image`` itself when it already has that size).
    """
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if h * w > size * size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def preprocess(image: np.ndarray, prep: Preprocessing, crop: bool | None = None) -> np.ndarray:
    """The model input for one decoded image: (size, size, 3) float32 on the 0..255 scale.

    Float32 rather than uint8 because 16-bit inputs keep their finer steps; normalisation with
    ``prep.mean``/``prep.std`` happens on the device.

    Args:
      image: (H, W, 3) RGB on the 0..255 scale.
      prep: the model's preprocessing.
      crop: ImageNet's resize-and-centre-crop (:func:`center_crop`) instead of resizing the
        whole image (:func:`to_model_input`); None: ``prep.crop``.

    Returns:
      The model input before normalisation.
    """
    size = prep.image_size
    small = center_crop(image, size) if (prep.crop if crop is None else crop) \
        else to_model_input(image, size)
    return small.astype(np.float32)

"""Reading one input safely: size limits checked from the header before decoding, truncation
detected, any bit depth and channel count decoded to RGB, and the model's preprocessing
(whole-image resize, or ImageNet's centre crop)."""

from __future__ import annotations

import os
import struct

import cv2
import numpy as np

from jaxcam.batch._preprocessing import Preprocessing
from jaxcam.extend.images import center_crop

__all__ = ["InputError", "DEFAULT_MAX_PIXELS", "MAX_FILE_BYTES", "declared_size", "check_complete",
           "read_image_checked", "decode_checked", "decode_image", "to_model_input", "preprocess",
           "center_crop"]

# 100 megapixels: larger than any camera's photos, small enough that a few decoding threads at
# once (3 bytes a pixel, plus OpenCV's working copies) cannot exhaust memory.
DEFAULT_MAX_PIXELS = 100_000_000
# A file this large is no image we could explain; refusing it before reading bounds memory.
MAX_FILE_BYTES = 1 << 30

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class InputError(ValueError):
    """An input that cannot be explained; the message says why (recorded in errors.jsonl)."""


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's first start-of-frame segment, walking the segments."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None  # lost the segment structure: let the decoder judge
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or a scan before any frame header
            return None
        if marker in _SOF:
            if i + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return (1 + int.from_bytes(data[24:27], "little"),
                1 + int.from_bytes(data[27:30], "little"))
    if chunk == b"VP8 " and len(data) >= 30:
        return (int.from_bytes(data[26:28], "little") & 0x3FFF,
                int.from_bytes(data[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a (classic, not Big-) TIFF's first image file directory."""
    end = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack(end + "I", data[4:8])
        (count,) = struct.unpack(end + "H", data[offset:offset + 2])
        found: dict[int, int] = {}
        for k in range(count):
            e = offset + 2 + 12 * k
            tag, kind = struct.unpack(end + "HH", data[e:e + 4])
            if tag in (256, 257):
                fmt = end + ("H" if kind == 3 else "I")
                found[tag] = struct.unpack(fmt, data[e + 8:e + 8 + struct.calcsize(fmt)])[0]
    except struct.error:
        return None
    return (found[256], found[257]) if 256 in found and 257 in found else None


def declared_size(data: bytes) -> tuple[int, int] | None:
    """The (width, height) an image file's header declares, read without decoding it.

    Understands PNG, JPEG, GIF, BMP, WebP and TIFF headers; other formats give None (OpenCV's
    own pixel limit then still applies when decoding).

    Args:
      data: the file's bytes (the first few kilobytes suffice except for JPEGs with large
        metadata segments before the frame header).

    Returns:
      ``(width, height)`` or None.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return w, h
    if data[:2] == b"BM" and len(data) >= 26:
        if int.from_bytes(data[14:18], "little") == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            w, h = struct.unpack("<HH", data[18:22])
        else:
            w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    return None


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


def decode_checked(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file's bytes after checking its declared size and completeness.

    Args:
      data: the encoded file.
      max_pixels: largest width x height accepted (checked from the header, before decoding, so
        a decompression bomb never allocates its pixels).

    Returns:
      (H, W, 3) RGB on the 0..255 scale, uint8 (8-bit files) or float32 (16-bit, float).

    Raises:
      InputError: empty, too large, truncated, or not a decodable image (the message says which).
    """
    if not data:
        raise InputError("empty file (0 bytes)")
    size = declared_size(data)
    if size is not None:
        w, h = size
        if w * h > max_pixels:
            raise InputError(f"image declares {w}x{h} = {w * h:,} pixels, more than the limit of "
                             f"{max_pixels:,} (--max-pixels): a decompression bomb or an image "
                             f"too large to decode safely")
        if w == 0 or h == 0:
            raise InputError(f"image declares an empty {w}x{h} size; corrupt header")
    check_complete(data)
    try:
        return decode_image(np.frombuffer(data, np.uint8))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    except cv2.error as exc:  # e.g. OpenCV's own pixel limit for formats not parsed above
        raise InputError(f"OpenCV refused to decode it: {str(exc).strip().splitlines()[-1]}"
                         ) from None


def read_image_checked(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS
                       ) -> np.ndarray:
    """Read and decode one image file, as :func:`decode_checked`, refusing huge files unread.

    Raises:
      InputError: unreadable (missing, a directory, no permission), larger than
        :data:`MAX_FILE_BYTES`, or anything :func:`decode_checked` refuses.
    """
    try:
        with open(path, "rb") as f:
            n = os.fstat(f.fileno()).st_size
            if n > MAX_FILE_BYTES:
                raise InputError(f"file is {n:,} bytes, more than {MAX_FILE_BYTES:,}: not an "
                                 f"image this tool decodes")
            data = f.read()
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}") from None
    return decode_checked(data, max_pixels)


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

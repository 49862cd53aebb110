"""A procedural shape-classification data set with ground-truth object masks.

Each image shows one object whose class is its *shape* (see ``CLASS_NAMES``), at a random
position, scale, aspect jitter and orientation, in a random colour with a random texture, on a
cluttered background (colour gradient, low-frequency colour noise, stripes, pixel noise) with
distractors that belong to no class: thin lines, thin partial arcs (at most 150 degrees) and small
soft blobs. Harder samples (difficulty ``d`` near 1) have smaller objects, lower contrast against
the background, more clutter and noise and, often, a narrow textured band across the image, in
front of the object, hiding up to 30% of it.

Colour, texture and position are drawn independently of the class, so only the shape tells the
classes apart. ``masks`` holds the object's visible pixels (after occlusion), for checking whether
an explanation points at the object.

Everything is vectorised with numpy over chunks of images (rendered in parallel threads, each
chunk from its own random stream): shapes are signed-distance functions on the pixel grid with a
one-pixel soft edge (analytic anti-aliasing), so 50,000 32x32 images take a few seconds.
"""

from __future__ import annotations

import concurrent.futures
import math
import os

import numpy as np

from msdnet_flax.data._dataset import ArrayDataset
from msdnet_flax.data._shapes import DISTRACTORS, SHAPES, Grid

__all__ = ["CLASS_NAMES", "MEAN", "STD", "generate"]

CLASS_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "plus",
    "star",
    "ring",
    "crescent",
    "l_shape",
    "t_shape",
    "hourglass",
)

# Normalisation constants of ``generate(20_000, seed=0)`` (default difficulty 0..1), on the [0, 1]
# scale; ``tests/test_data.py`` recomputes them. Fixed so train and test share one normalisation.
MEAN: tuple[float, float, float] = (0.5005, 0.4983, 0.4979)
STD: tuple[float, float, float] = (0.2298, 0.2294, 0.2294)

_CHUNK = 512
_GRID = 5
_THREADS = 4
_MAX_DISTRACTORS = 7

assert len(SHAPES) == len(CLASS_NAMES)


def _difficulty_range(difficulty: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(difficulty, (int, float, np.floating, np.integer)):
        lo = hi = float(difficulty)
    else:
        try:
            lo, hi = (float(x) for x in difficulty)
        except (TypeError, ValueError):
            raise TypeError(f"difficulty must be a float or a (low, high) pair of floats, got "
                            f"{difficulty!r}") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"difficulty must satisfy 0 <= low <= high <= 1, got {difficulty!r}")
    return lo, hi


def _lerp(a: float, b: float, t: np.ndarray) -> np.ndarray:
    return (a + (b - a) * t).astype(np.float32)


def _upsample_matrix(size: int, grid: int) -> np.ndarray:
    """(size, grid) bilinear interpolation weights from ``grid`` control points to pixels."""
    t = (np.arange(size) + 0.5) / size * (grid - 1)
    i0 = np.minimum(np.floor(t).astype(int), grid - 2)
    f = t - i0
    m = np.zeros((size, grid), np.float32)
    m[np.arange(size), i0] = 1 - f
    m[np.arange(size), i0 + 1] = f
    return m


def _soft(sdf_px: np.ndarray) -> np.ndarray:
    """Coverage of a pixel from a signed distance in pixels (one-pixel linear edge)."""
    return np.clip(0.5 - sdf_px, 0.0, 1.0)


def _background(rng: np.random.Generator, d: np.ndarray, grid: Grid) -> np.ndarray:
    """(B, 3, H, W) float32 backgrounds on the 0..1 scale.

    A random colour, a linear gradient and low-frequency colour noise, all on a coarse grid of
    control points upsampled bilinearly (which reproduces the gradient exactly), plus stripe
    texture on half of the images.

    Args:
      rng: the chunk's random stream.
      d: (B,) difficulty of each image.
      grid: the chunk's pixel grid.

    Returns:
      The backgrounds.
    """
    b, f32, g, s = d.shape[0], np.float32, _GRID, grid.s
    base = rng.uniform(0.15, 0.85, (b, 3, 1, 1)).astype(f32)
    grad_dir = rng.uniform(0, 2 * np.pi, (b, 1, 1, 1)).astype(f32)
    grad_amp = rng.uniform(-0.25, 0.25, (b, 3, 1, 1)).astype(f32)
    ctrl = (np.arange(g, dtype=f32) / (g - 1) - 0.5)  # control point positions / size
    ramp = ctrl[None, None, None, :] * np.cos(grad_dir) + ctrl[None, None, :, None] * \
        np.sin(grad_dir)  # (B, 1, g, g), in [-0.7, 0.7]
    low = rng.standard_normal((b, 3, g, g), dtype=f32)
    low *= _lerp(0.03, 0.07, d)[:, None, None, None]
    low += base + grad_amp * ramp
    m = _upsample_matrix(grid.size, g)
    img = m @ low @ m.T  # (B, 3, H, W)
    tex_amp = rng.uniform(0, 0.08, b).astype(f32) * (rng.random(b) < 0.5)
    tex_freq = rng.uniform(0.15, 0.45, b).astype(f32) / s
    tex_dir = rng.uniform(0, np.pi, b).astype(f32)
    tex = (grid.xs * (tex_freq * np.cos(tex_dir))[:, None, None]
           + grid.ys * (tex_freq * np.sin(tex_dir))[:, None, None])
    np.sin(tex, out=tex)
    tex *= tex_amp[:, None, None]
    img += tex[:, None]
    return img


def _distractors(rng: np.random.Generator, d: np.ndarray, grid: Grid, img: np.ndarray) -> None:
    """Paint thin lines, thin partial arcs and soft blobs (no class) over ``img``, in place.

    Each pixel shows the most opaque distractor covering it (one colour composite at the end).

    Args:
      rng: the chunk's random stream.
      d: (B,) difficulty of each image.
      grid: the chunk's pixel grid.
      img: (B, 3, H, W) backgrounds.
    """
    b, f32, size = d.shape[0], np.float32, grid.size
    n_distract = np.minimum(np.floor(_lerp(0.5, 4.0, d) + rng.uniform(0, 2.5, b)),
                            _MAX_DISTRACTORS).astype(int)
    palette = rng.uniform(0, 1, (b, _MAX_DISTRACTORS, 3)).astype(f32)
    # Each alpha's float32 bit pattern, low 3 bits replaced by the slot: positive floats order like
    # their int32 bits, so one np.maximum keeps the most opaque slot per pixel (alpha off by <1e-6).
    top = np.zeros((b, size, size), np.int32)
    for k in range(_MAX_DISTRACTORS):
        active = np.flatnonzero(n_distract > k)
        if active.size == 0:
            break
        kind = rng.integers(0, 3, active.size)
        opacity = rng.uniform(0.5, 1.0, active.size).astype(f32)
        for t, coverage in enumerate(DISTRACTORS):
            sel = kind == t
            idx = active[sel]
            if idx.size == 0:
                continue
            alpha = coverage(rng, idx.size, grid)
            np.clip(alpha, 0.0, 1.0, out=alpha)
            alpha *= opacity[sel][:, None, None]
            code = alpha.view(np.int32)
            code &= ~7
            code |= k
            top[idx] = np.maximum(top[idx], code)
    slot = (top & 7).astype(np.intp)
    top &= ~7  # (alpha 0 with a slot in its low bits would be a slow denormal float)
    top_alpha = top.view(f32)
    slot += (np.arange(b) * _MAX_DISTRACTORS)[:, None, None]
    colour = np.empty_like(img)
    for c in range(3):
        colour[:, c] = np.take(palette[:, :, c].ravel(), slot, mode="clip")
    colour -= img
    colour *= top_alpha[:, None]
    img += colour


def _object_colour(rng: np.random.Generator, d: np.ndarray, img: np.ndarray, cx: np.ndarray,
                   cy: np.ndarray) -> np.ndarray:
    """(B, 3) colours at distance ``contrast`` from the background under each object's centre."""
    b, f32, size = d.shape[0], np.float32, img.shape[-1]
    iy = np.clip(cy.astype(int), 0, size - 1)
    ix = np.clip(cx.astype(int), 0, size - 1)
    local = img[np.arange(b), :, iy, ix]  # (B, 3)
    contrast = _lerp(0.7, 0.4, d) * rng.uniform(0.9, 1.1, b).astype(f32)
    direction = rng.standard_normal((b, 3)).astype(f32)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-6
    plus = np.clip(local + contrast[:, None] * direction, 0, 1)
    minus = np.clip(local - contrast[:, None] * direction, 0, 1)
    use_plus = (np.linalg.norm(plus - local, axis=1) >= np.linalg.norm(minus - local, axis=1))
    return np.where(use_plus[:, None], plus, minus)


def _draw_object(rng: np.random.Generator, labels: np.ndarray, d: np.ndarray, grid: Grid,
                 img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paint each image's object (its class's shape, textured) over ``img``, in place.

    Args:
      rng: the chunk's random stream.
      labels: (B,) class of each image.
      d: (B,) difficulty of each image.
      grid: the chunk's pixel grid.
      img: (B, 3, H, W) backgrounds with distractors.

    Returns:
      ``(mask, dx, dy, radius)``: the (B, H, W) object mask, each pixel's offset from the
      object's centre ((B, 1, W) and (B, H, 1)) and the object's radius in pixels.
    """
    b, f32, s, size = labels.shape[0], np.float32, grid.s, grid.size
    radius = (_lerp(12.5, 8.5, d) * rng.uniform(0.85, 1.15, b).astype(f32) * s)
    cx = rng.uniform(radius, size - radius).astype(f32)
    cy = rng.uniform(radius, size - radius).astype(f32)
    theta = rng.uniform(0, 2 * np.pi, b).astype(f32)
    aspect = np.exp(rng.uniform(-0.06, 0.06, b)).astype(f32)
    obj_colour = _object_colour(rng, d, img, cx, cy)
    obj_tex = rng.uniform(0.0, 0.08, b).astype(f32)
    obj_freq = rng.uniform(0.3, 0.9, b).astype(f32) / s
    obj_phase = rng.uniform(0, 2 * np.pi, b).astype(f32)

    cos_t, sin_t = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    dx = grid.xs - cx[:, None, None]
    dy = grid.ys - cy[:, None, None]
    scale_u = (1.0 / (radius * aspect))[:, None, None]
    scale_v = (aspect / radius)[:, None, None]
    # Object coordinates (u, v) = rotate and scale (x - cx, y - cy), as small broadcast factors.
    ux, uy = dx * (cos_t * scale_u), dy * (sin_t * scale_u)
    vx, vy = dx * (-sin_t * scale_v), dy * (cos_t * scale_v)
    sdf = np.empty((b, size, size), f32)
    for c_idx, shape in enumerate(SHAPES):
        sel = np.flatnonzero(labels == c_idx)
        if sel.size == 0:
            continue
        dist = shape(ux[sel] + uy[sel], vx[sel] + vy[sel])
        dist *= radius[sel, None, None]  # approximately in pixels
        sdf[sel] = dist
    alpha = _soft(sdf)
    stripes = obj_tex[:, None, None] * np.sin(
        obj_freq[:, None, None] * (dx * cos_t - dy * sin_t) + obj_phase[:, None, None])
    sub = obj_colour[:, :, None, None] * (1.0 + stripes[:, None]) - img
    img += alpha[:, None] * sub
    return sdf <= 0.0, dx, dy, radius


def _occlude(rng: np.random.Generator, d: np.ndarray, grid: Grid, img: np.ndarray,
             obj_mask: np.ndarray, dx: np.ndarray, dy: np.ndarray, radius: np.ndarray
             ) -> np.ndarray:
    """Paint a narrow textured band across some images, in front of the object, in place.

    The band crosses the object near its centre: it splits the object without removing a whole
    part of its outline, and never hides more than 30% of it.

    Args:
      rng: the chunk's random stream.
      d: (B,) difficulty of each image.
      grid: the chunk's pixel grid.
      img: (B, 3, H, W) images with their objects.
      obj_mask, dx, dy, radius: as returned by :func:`_draw_object`.

    Returns:
      The (B, H, W) mask of the object's visible pixels.
    """
    b, f32, s, size = d.shape[0], np.float32, grid.s, grid.size
    p_occ = np.clip((d - 0.4) / 0.6, 0, 1) * 0.5
    occ = np.flatnonzero(rng.random(b) < p_occ)
    if occ.size == 0:
        return obj_mask
    normal = rng.uniform(0, 2 * np.pi, occ.size).astype(f32)
    offset = rng.uniform(0.0, 0.6, occ.size).astype(f32) * radius[occ]
    half_w = np.maximum(rng.uniform(0.12, 0.2, occ.size).astype(f32) * radius[occ], 0.8 * s)
    dist = (dx[occ] * np.cos(normal)[:, None, None] + dy[occ] * np.sin(normal)[:, None, None]
            - offset[:, None, None])
    band = np.abs(dist) - half_w[:, None, None]
    vis = obj_mask[occ] & (band > 0)
    keep = vis.sum((1, 2)) >= 0.7 * obj_mask[occ].sum((1, 2))
    occ, band, vis = occ[keep], band[keep], vis[keep]
    if occ.size == 0:
        return obj_mask
    occ_alpha = _soft(band)
    colour = rng.uniform(0, 1, (occ.size, 3)).astype(f32)
    noise = np.frombuffer(rng.bytes(occ.size * size * size), np.uint8)
    noise = noise.reshape(occ.size, 1, size, size).astype(f32)
    noise *= 0.4 / 255.0
    noise -= 0.2
    sub = img[occ]
    sub += occ_alpha[:, None] * (colour[:, :, None, None] + noise - sub)
    img[occ] = sub
    visible = obj_mask.copy()
    visible[occ] = vis
    return visible


def _quantise(rng: np.random.Generator, d: np.ndarray, img: np.ndarray,
              out_images: np.ndarray) -> None:
    """Add pixel noise to ``img`` (changed) and write it to ``out_images`` as uint8 NHWC."""
    b, f32, size = d.shape[0], np.float32, img.shape[-1]
    noise_amp = _lerp(0.005, 0.035, d)
    # Uniform noise with standard deviation noise_amp, from random bytes (much faster than
    # rng.random for a million values), on the 0..255 scale; +0.5 rounds in the cast below.
    noise = np.frombuffer(rng.bytes(b * size * size), np.uint8).reshape(b, 1, size, size)
    noise = noise.astype(f32)
    noise *= (noise_amp * (255.0 * math.sqrt(12.0) / 256.0))[:, None, None, None]
    noise += (0.5 - 127.5 * noise_amp * (255.0 * math.sqrt(12.0) / 256.0))[:, None, None, None]
    img *= 255.0
    img += noise
    np.clip(img, 0.0, 255.0, out=img)
    np.copyto(out_images.transpose(0, 3, 1, 2), img, casting="unsafe")  # truncates: +0.5 rounds


def _render_chunk(rng: np.random.Generator, labels: np.ndarray, d: np.ndarray, size: int,
                  out_images: np.ndarray, out_masks: np.ndarray) -> None:
    """Render one chunk into (B, size, size, 3) uint8 ``out_images``, (B, size, size) bool masks.

    Back to front: background, distractors, the object, an occluding band, pixel noise. Every
    stage draws from ``rng`` in this order, so the images depend only on the stream.

    Args:
      rng: the chunk's random stream.
      labels: (B,) class of each image.
      d: (B,) difficulty of each image.
      size: image side.
      out_images: where the images go.
      out_masks: where the visible-object masks go.
    """
    grid = Grid(size)
    img = _background(rng, d, grid)
    _distractors(rng, d, grid, img)
    obj_mask, dx, dy, radius = _draw_object(rng, labels, d, grid, img)
    out_masks[...] = _occlude(rng, d, grid, img, obj_mask, dx, dy, radius)
    _quantise(rng, d, img, out_images)


def generate(n: int, *, seed: int, size: int = 32,
             difficulty: float | tuple[float, float] = (0.0, 1.0)) -> ArrayDataset:
    """Generate ``n`` labelled shape images with ground-truth object masks.

    Deterministic: the same ``(n, seed, size, difficulty)`` gives identical arrays; different
    seeds give independent samples. Labels are balanced (each class ``n // 10`` or one more
    times) in random order.

    Args:
      n: number of images.
      seed: a non-negative integer seed.
      size: image height and width in pixels (>= 16); object sizes scale with it.
      difficulty: a fixed difficulty in [0, 1], or a ``(low, high)`` range sampled uniformly per
        image. Harder means a smaller object, lower contrast, more clutter and more occlusion.

    Returns:
      An ``ArrayDataset`` with ``masks`` (the object's visible pixels) and ``difficulty``, and the
      module's fixed ``MEAN``/``STD`` normalisation.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    lo, hi = _difficulty_range(difficulty)
    n, size = int(n), int(size)
    n_chunks = -(-n // _CHUNK)
    streams = np.random.SeedSequence(int(seed)).spawn(1 + n_chunks)
    head = np.random.default_rng(streams[0])
    labels = head.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int32)
    diff = head.uniform(lo, hi, n).astype(np.float32) if hi > lo \
        else np.full(n, lo, np.float32)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.bool_)

    def render(k: int) -> None:
        sl = slice(k * _CHUNK, min(n, (k + 1) * _CHUNK))
        _render_chunk(np.random.default_rng(streams[1 + k]), labels[sl], diff[sl], size,
                      images[sl], masks[sl])

    # numpy releases the GIL in its array loops: chunks render in parallel, each from its own
    # random stream, so the result does not depend on the thread count or the scheduling.
    workers = max(1, min(_THREADS, os.cpu_count() or 1, n_chunks))
    if workers == 1:
        for k in range(n_chunks):
            render(k)
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(render, range(n_chunks)))
    return ArrayDataset(images=images, labels=labels, class_names=CLASS_NAMES, mean=MEAN,
                        std=STD, masks=masks, difficulty=diff)

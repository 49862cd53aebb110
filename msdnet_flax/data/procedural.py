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
from collections.abc import Callable

import numpy as np

from msdnet_flax.data._dataset import ArrayDataset

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

_SDF = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _box(u: np.ndarray, v: np.ndarray, cu: float, cv: float, hu: float, hv: float) -> np.ndarray:
    """Signed distance (exact inside, Chebyshev outside) to an axis-aligned box."""
    return np.maximum(np.abs(u - cu) - hu, np.abs(v - cv) - hv)


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.sqrt(u * u + v * v) - 0.9


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _box(u, v, 0.0, 0.0, 0.78, 0.78)


_S3 = math.sqrt(3.0) / 2.0


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Equilateral, inradius 0.62 (circumradius 1.24), centred on its centroid.
    return np.maximum(np.maximum(v, -_S3 * u - 0.5 * v), _S3 * u - 0.5 * v) - 0.62


def _plus(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return np.minimum(np.maximum(au - 1.0, av - 0.3), np.maximum(au - 0.3, av - 1.0))


_STAR_OUT, _STAR_IN = 1.15, 0.5
_STAR_SECTOR = 2.0 * math.pi / 5.0
# The edge from the outer vertex (R, 0) to the inner vertex at angle pi/5, as a unit normal n and
# offset c: points with n . p <= c (in the folded sector) are inside.
_A = np.array([_STAR_OUT, 0.0])
_B = _STAR_IN * np.array([math.cos(math.pi / 5), math.sin(math.pi / 5)])
_N = np.array([_B[1] - _A[1], _A[0] - _B[0]])
_N = _N / np.linalg.norm(_N)
_C = float(_N @ _A)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    # Fold the angle into [0, pi/5] using the star's 10-fold dihedral symmetry.
    phi = np.abs(np.mod(phi + 0.5 * _STAR_SECTOR, _STAR_SECTOR) - 0.5 * _STAR_SECTOR)
    return r * (_N[0] * np.cos(phi) + _N[1] * np.sin(phi)) - _C


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.sqrt(u * u + v * v)
    return np.maximum(r - 1.0, 0.52 - r)


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.sqrt(u * u + v * v)
    du = u - 0.5
    return np.maximum(r - 1.0, 0.78 - np.sqrt(du * du + v * v))


def _l_shape(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.minimum(_box(u, v, -0.6, 0.0, 0.25, 0.85), _box(u, v, 0.0, 0.6, 0.85, 0.25))


def _t_shape(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.minimum(_box(u, v, 0.0, -0.65, 0.9, 0.25), _box(u, v, 0.0, 0.1, 0.25, 0.9))


_HG_SLOPE = 0.95
_HG_NORM = 1.0 / math.sqrt(1.0 + _HG_SLOPE**2)


def _hourglass(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Two triangles meeting at a narrow waist: |v| <= 0.95 |u| + 0.1, |u| <= 0.85.
    au = np.abs(u)
    return np.maximum(au - 0.85, (np.abs(v) - _HG_SLOPE * au - 0.1) * _HG_NORM)


_SHAPES: tuple[_SDF, ...] = (_circle, _square, _triangle, _plus, _star, _ring, _crescent,
                             _l_shape, _t_shape, _hourglass)
assert len(_SHAPES) == len(CLASS_NAMES)


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


def _render_chunk(rng: np.random.Generator, labels: np.ndarray, d: np.ndarray, size: int,
                  out_images: np.ndarray, out_masks: np.ndarray) -> None:
    """Render one chunk into (B, size, size, 3) uint8 ``out_images``, (B, size, size) bool masks.

    Args:
      rng: the chunk's random stream.
      labels: (B,) class of each image.
      d: (B,) difficulty of each image.
      size: image side.
      out_images: where the images go.
      out_masks: where the visible-object masks go.
    """
    b = labels.shape[0]
    s = size / 32.0  # pixel quantities below are for 32x32 and scale with the image
    f32 = np.float32
    ys = (np.arange(size, dtype=f32) + 0.5)[None, :, None]  # (1, H, 1)
    xs = (np.arange(size, dtype=f32) + 0.5)[None, None, :]  # (1, 1, W)

    # --- background: a random colour, a linear gradient and low-frequency colour noise, all on a
    # coarse grid of control points upsampled bilinearly (which reproduces the gradient exactly),
    # plus stripe texture on some images; pixel noise comes last. Colours are on the 0..1 scale.
    g = _GRID
    base = rng.uniform(0.15, 0.85, (b, 3, 1, 1)).astype(f32)
    grad_dir = rng.uniform(0, 2 * np.pi, (b, 1, 1, 1)).astype(f32)
    grad_amp = rng.uniform(-0.25, 0.25, (b, 3, 1, 1)).astype(f32)
    ctrl = (np.arange(g, dtype=f32) / (g - 1) - 0.5)  # control point positions / size
    ramp = ctrl[None, None, None, :] * np.cos(grad_dir) + ctrl[None, None, :, None] * \
        np.sin(grad_dir)  # (B, 1, g, g), in [-0.7, 0.7]
    low = rng.standard_normal((b, 3, g, g), dtype=f32)
    low *= _lerp(0.03, 0.07, d)[:, None, None, None]
    low += base + grad_amp * ramp
    m = _upsample_matrix(size, g)
    img = m @ low @ m.T  # (B, 3, H, W)
    # Stripe textures on half of the backgrounds.
    tex_amp = rng.uniform(0, 0.08, b).astype(f32) * (rng.random(b) < 0.5)
    tex_freq = rng.uniform(0.15, 0.45, b).astype(f32) / s
    tex_dir = rng.uniform(0, np.pi, b).astype(f32)
    tex = (xs * (tex_freq * np.cos(tex_dir))[:, None, None]
           + ys * (tex_freq * np.sin(tex_dir))[:, None, None])
    np.sin(tex, out=tex)
    tex *= tex_amp[:, None, None]
    img += tex[:, None]

    # --- distractors (no class): thin lines, thin partial arcs, soft blobs; behind the object.
    # Each pixel shows the most opaque distractor covering it (one colour composite at the end).
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
        for t in range(3):
            sel = kind == t
            idx = active[sel]
            mm = idx.size
            if mm == 0:
                continue
            op = opacity[sel][:, None, None]
            if t == 0:  # a thin line segment from `a`, direction `ang`, soft one-pixel edges
                a = rng.uniform(-4 * s, size + 4 * s, (mm, 2)).astype(f32)
                ang = rng.uniform(0, 2 * np.pi, mm).astype(f32)
                length = rng.uniform(8, 40, (mm, 1, 1)).astype(f32) * s
                half_w = rng.uniform(0.3, 0.7, (mm, 1, 1)).astype(f32) * s
                ex, ey = np.cos(ang)[:, None, None], np.sin(ang)[:, None, None]
                px, py = xs - a[:, 0, None, None], ys - a[:, 1, None, None]
                # Coverage = clip(0.5 - signed distance): min over the sides and both ends.
                alpha = px * ey - py * ex
                np.abs(alpha, out=alpha)
                np.subtract(half_w + 0.5, alpha, out=alpha)
                along = px * ex + (py * ey + 0.5)
                np.minimum(alpha, along, out=alpha)
                np.subtract(length + 1.0, along, out=along)
                np.minimum(alpha, along, out=alpha)
            elif t == 1:  # a thin arc of at most 150 degrees
                c = rng.uniform(0, size, (mm, 2)).astype(f32)
                rad = rng.uniform(3.0, 10.0, (mm, 1, 1)).astype(f32) * s
                mid = rng.uniform(0, 2 * np.pi, mm).astype(f32)
                cos_half = np.cos(np.radians(rng.uniform(30, 75, (mm, 1, 1)))).astype(f32)
                half_w = rng.uniform(0.3, 0.65, (mm, 1, 1)).astype(f32) * s
                dx, dy = xs - c[:, 0, None, None], ys - c[:, 1, None, None]
                r = dx * dx + dy * dy
                np.sqrt(r, out=r)
                alpha = r - rad
                np.abs(alpha, out=alpha)
                np.subtract(half_w + 0.5, alpha, out=alpha)
                # Angular cut: dot with the arc's mid direction >= r cos(half span).
                cut = dx * np.cos(mid)[:, None, None] + (dy * np.sin(mid)[:, None, None] + 0.5)
                r *= cos_half
                cut -= r
                np.minimum(alpha, cut, out=alpha)
            else:  # a soft round blob (smooth bump, no sharp edge)
                c = rng.uniform(0, size, (mm, 2)).astype(f32)
                inv = 1.0 / (rng.uniform(2.0, 4.0, (mm, 1, 1)).astype(f32) * s) ** 2
                dx, dy = xs - c[:, 0, None, None], ys - c[:, 1, None, None]
                alpha = (dx * dx * inv) + (dy * dy * inv - 1.0)
                np.minimum(alpha, 0.0, out=alpha)
                alpha *= alpha  # (1 - r^2 / extent^2)^2 inside, 0 outside
            np.clip(alpha, 0.0, 1.0, out=alpha)
            alpha *= op
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

    # --- the object.
    radius = (_lerp(12.5, 8.5, d) * rng.uniform(0.85, 1.15, b).astype(f32) * s)
    cx = rng.uniform(radius, size - radius).astype(f32)
    cy = rng.uniform(radius, size - radius).astype(f32)
    theta = rng.uniform(0, 2 * np.pi, b).astype(f32)
    aspect = np.exp(rng.uniform(-0.06, 0.06, b)).astype(f32)
    # Colour relative to the background under the object's centre, at distance `contrast`.
    iy = np.clip(cy.astype(int), 0, size - 1)
    ix = np.clip(cx.astype(int), 0, size - 1)
    local = img[np.arange(b), :, iy, ix]  # (B, 3)
    contrast = _lerp(0.7, 0.4, d) * rng.uniform(0.9, 1.1, b).astype(f32)
    direction = rng.standard_normal((b, 3)).astype(f32)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-6
    plus = np.clip(local + contrast[:, None] * direction, 0, 1)
    minus = np.clip(local - contrast[:, None] * direction, 0, 1)
    use_plus = (np.linalg.norm(plus - local, axis=1) >= np.linalg.norm(minus - local, axis=1))
    obj_colour = np.where(use_plus[:, None], plus, minus)
    obj_tex = rng.uniform(0.0, 0.08, b).astype(f32)
    obj_freq = rng.uniform(0.3, 0.9, b).astype(f32) / s
    obj_phase = rng.uniform(0, 2 * np.pi, b).astype(f32)

    cos_t, sin_t = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    dx = xs - cx[:, None, None]
    dy = ys - cy[:, None, None]
    scale_u = (1.0 / (radius * aspect))[:, None, None]
    scale_v = (aspect / radius)[:, None, None]
    # Object coordinates (u, v) = rotate and scale (x - cx, y - cy), as small broadcast factors.
    ux, uy = dx * (cos_t * scale_u), dy * (sin_t * scale_u)
    vx, vy = dx * (-sin_t * scale_v), dy * (cos_t * scale_v)
    sdf = np.empty((b, size, size), f32)
    for c_idx, shape in enumerate(_SHAPES):
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
    obj_mask = sdf <= 0.0

    # --- occlusion: a narrow textured band across the image, in front of the object, crossing
    # it near its centre: it splits the object without removing a whole part of its outline.
    p_occ = np.clip((d - 0.4) / 0.6, 0, 1) * 0.5
    occ = np.flatnonzero(rng.random(b) < p_occ)
    visible = obj_mask
    if occ.size:
        normal = rng.uniform(0, 2 * np.pi, occ.size).astype(f32)
        offset = rng.uniform(0.0, 0.6, occ.size).astype(f32) * radius[occ]
        half_w = np.maximum(rng.uniform(0.12, 0.2, occ.size).astype(f32) * radius[occ], 0.8 * s)
        dist = (dx[occ] * np.cos(normal)[:, None, None] + dy[occ] * np.sin(normal)[:, None, None]
                - offset[:, None, None])
        band = np.abs(dist) - half_w[:, None, None]
        vis = obj_mask[occ] & (band > 0)
        # Never hide more than 30% of the object: drop the band where it would.
        keep = vis.sum((1, 2)) >= 0.7 * obj_mask[occ].sum((1, 2))
        occ, band, vis = occ[keep], band[keep], vis[keep]
        if occ.size:
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

    # --- pixel noise, quantisation.
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
    out_masks[...] = visible


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

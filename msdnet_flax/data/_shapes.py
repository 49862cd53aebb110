"""The procedural data set's geometry: the classes' shapes and the distractors.

A class shape is a signed-distance function of object coordinates ``(u, v)`` (about unit size;
negative inside). A distractor kind draws its own random parameters and gives its coverage of
each pixel. Both are rendered by :mod:`msdnet_flax.data.procedural`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["DISTRACTORS", "SHAPES", "Grid"]

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


SHAPES: tuple[_SDF, ...] = (_circle, _square, _triangle, _plus, _star, _ring, _crescent,
                             _l_shape, _t_shape, _hourglass)


class Grid:
    """The pixel-centre coordinates and the 32x32-relative scale shared by a chunk's stages."""

    def __init__(self, size: int):
        self.size = size
        self.s = size / 32.0  # the pixel quantities drawn are for 32x32 and scale with this
        self.ys = (np.arange(size, dtype=np.float32) + 0.5)[None, :, None]  # (1, H, 1)
        self.xs = (np.arange(size, dtype=np.float32) + 0.5)[None, None, :]  # (1, 1, W)


# Each distractor kind draws its own parameters for ``mm`` images and returns their unclipped
# coverage (mm, H, W): 0.5 minus a signed distance in pixels, or a smooth bump.

def _line(rng: np.random.Generator, mm: int, grid: Grid) -> np.ndarray:
    """A thin line segment from ``a``, direction ``ang``, with soft one-pixel edges."""
    f32, s, size = np.float32, grid.s, grid.size
    a = rng.uniform(-4 * s, size + 4 * s, (mm, 2)).astype(f32)
    ang = rng.uniform(0, 2 * np.pi, mm).astype(f32)
    length = rng.uniform(8, 40, (mm, 1, 1)).astype(f32) * s
    half_w = rng.uniform(0.3, 0.7, (mm, 1, 1)).astype(f32) * s
    ex, ey = np.cos(ang)[:, None, None], np.sin(ang)[:, None, None]
    px, py = grid.xs - a[:, 0, None, None], grid.ys - a[:, 1, None, None]
    # Coverage = clip(0.5 - signed distance): min over the sides and both ends.
    alpha = px * ey - py * ex
    np.abs(alpha, out=alpha)
    np.subtract(half_w + 0.5, alpha, out=alpha)
    along = px * ex + (py * ey + 0.5)
    np.minimum(alpha, along, out=alpha)
    np.subtract(length + 1.0, along, out=along)
    np.minimum(alpha, along, out=alpha)
    return alpha


def _arc(rng: np.random.Generator, mm: int, grid: Grid) -> np.ndarray:
    """A thin arc of at most 150 degrees."""
    f32, s, size = np.float32, grid.s, grid.size
    c = rng.uniform(0, size, (mm, 2)).astype(f32)
    rad = rng.uniform(3.0, 10.0, (mm, 1, 1)).astype(f32) * s
    mid = rng.uniform(0, 2 * np.pi, mm).astype(f32)
    cos_half = np.cos(np.radians(rng.uniform(30, 75, (mm, 1, 1)))).astype(f32)
    half_w = rng.uniform(0.3, 0.65, (mm, 1, 1)).astype(f32) * s
    dx, dy = grid.xs - c[:, 0, None, None], grid.ys - c[:, 1, None, None]
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
    return alpha


def _blob(rng: np.random.Generator, mm: int, grid: Grid) -> np.ndarray:
    """A soft round blob (smooth bump, no sharp edge)."""
    f32, s, size = np.float32, grid.s, grid.size
    c = rng.uniform(0, size, (mm, 2)).astype(f32)
    inv = 1.0 / (rng.uniform(2.0, 4.0, (mm, 1, 1)).astype(f32) * s) ** 2
    dx, dy = grid.xs - c[:, 0, None, None], grid.ys - c[:, 1, None, None]
    alpha = (dx * dx * inv) + (dy * dy * inv - 1.0)
    np.minimum(alpha, 0.0, out=alpha)
    alpha *= alpha  # (1 - r^2 / extent^2)^2 inside, 0 outside
    return alpha


DISTRACTORS = (_line, _arc, _blob)

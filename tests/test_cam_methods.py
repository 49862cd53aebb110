"""The activation-gradient CAM methods and the post-processing, against hand-computed oracles and
against pytorch-grad-cam 1.5.7 itself (its classes' ``get_cam_image`` and its post-processing)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_grad_cam import (
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image

from jaxcam import registry
from jaxcam._arrays import as_jax
from jaxcam.methods import (
    ACTIVATION_GRADIENT_METHODS,
    ACTIVATION_ONLY,
    eigencam,
    eigengradcam,
    gradcam,
    gradcamelementwise,
    gradcamplusplus,
    hirescam,
    layercam,
    xgradcam,
)
from jaxcam.postprocess import minmax_normalize, postprocess, resize_bilinear

PGC_CLASSES: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcamplusplus": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "gradcamelementwise": GradCAMElementWise,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
}
SVD_METHODS = {"eigencam", "eigengradcam"}
# Methods that divide by per-channel activation sums, where float32 summation order matters more.
SUM_DIVIDING_METHODS = {"gradcamplusplus", "xgradcam"}


def to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def random_layer(
    rng: np.random.Generator,
    batch: int = 2,
    h: int = 7,
    w: int = 7,
    c: int = 16,
    *,
    signed: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Activations and gradients shaped like a real conv layer's, NHWC float32.

    Each has one dominant spatial pattern times channel loadings plus noise, as real feature maps
    do; that keeps the first principal component well separated from the second, so that the
    SVD-based maps are well conditioned and comparable across LAPACK builds. Activations are
    post-ReLU unless ``signed``; a tenth of the gradients are exactly zero (dead units), which
    exercises Grad-CAM++'s ``where(grads != 0)``.
    """

    def structured(scale: float) -> np.ndarray:
        pattern = rng.standard_normal((batch, h, w, 1))
        loadings = rng.standard_normal((batch, 1, 1, c))
        return scale * (3.0 * pattern * loadings + rng.standard_normal((batch, h, w, c)))

    activations = structured(1.0)
    if not signed:
        activations = np.maximum(activations, 0.0)
    gradients = structured(0.05) * (rng.random((batch, h, w, c)) > 0.1)
    return activations.astype(np.float32), gradients.astype(np.float32)


def pgc_raw_map(
    name: str, activations: np.ndarray, gradients: np.ndarray, eigen_smooth: bool
) -> np.ndarray:
    """pytorch-grad-cam's raw map from NHWC arrays, through the class's own ``get_cam_image``."""
    layer = torch.nn.Conv2d(1, 1, 1)  # the classes need a model and a layer to hook; both unused
    with PGC_CLASSES[name](model=layer, target_layers=[layer]) as cam:
        return cam.get_cam_image(
            None, layer, None, to_nchw(activations), to_nchw(gradients), eigen_smooth
        )


def pgc_postprocess(raw_layers: list[np.ndarray], out_hw: tuple[int, int]) -> np.ndarray:
    """The four lines of ``BaseCAM.compute_cam_per_layer`` after ``get_cam_image``, then
    ``BaseCAM.aggregate_multi_layers`` (which does not read ``self``)."""
    height, width = out_hw
    per_layer = []
    for cam in raw_layers:
        cam = np.maximum(cam, 0)
        scaled = scale_cam_image(cam, (width, height))
        per_layer.append(scaled[:, None, :])
    return BaseCAM.aggregate_multi_layers(None, per_layer)


def max_diff_up_to_sign(ours: np.ndarray, ref: np.ndarray) -> float:
    """Max abs difference per image, each image's map allowed to be negated."""
    same = np.abs(ours - ref).reshape(len(ref), -1).max(axis=1)
    flipped = np.abs(ours + ref).reshape(len(ref), -1).max(axis=1)
    return float(np.minimum(same, flipped).max())


# --- (a) hand-computed oracles ---------------------------------------------------------------
#
# One image, 2x2 pixels, 2 channels. Channel maps, rows top to bottom:
#   A0 = [[1, 2], [3, 4]]   (sum 10)      G0 = [[1, -1], [2,  2]]   (mean  1)
#   A1 = [[2, -3], [1, 1]]  (sum  1)      G1 = [[0,  1], [-1, -2]]  (mean -0.5)
# A1 has a negative entry so that LayerCAM and Grad-CAM element-wise differ.
A0 = [[1.0, 2.0], [3.0, 4.0]]
A1 = [[2.0, -3.0], [1.0, 1.0]]
G0 = [[1.0, -1.0], [2.0, 2.0]]
G1 = [[0.0, 1.0], [-1.0, -2.0]]
ORACLE_ACTIVATIONS = np.stack([A0, A1], axis=-1)[None].astype(np.float32)  # (1, 2, 2, 2) NHWC
ORACLE_GRADIENTS = np.stack([G0, G1], axis=-1)[None].astype(np.float32)

ORACLE_MAPS = {
    # w = (mean G0, mean G1) = (1, -0.5); cam = A0 - 0.5 A1.
    "gradcam": [[1 - 1, 2 + 1.5], [3 - 0.5, 4 - 0.5]],
    # alpha = g^2 / (2 g^2 + S g^3); only g > 0 count, and g == 0 is masked out.
    # Channel 0, S = 10: g = 1 -> 1/12; g = 2 (twice) -> 4/88 = 1/22.
    #   w0 = 1 * 1/12 + 2 * 1/22 + 2 * 1/22 = 11/132 + 24/132 = 35/132.
    # Channel 1, S = 1: g = 1 -> 1/(2 + 1) = 1/3; g = 0 masked.  w1 = 1/3 = 44/132.
    # cam = (35 A0 + 44 A1) / 132 = [[35 + 88, 70 - 132], [105 + 44, 140 + 44]] / 132.
    "gradcamplusplus": [[123 / 132, -62 / 132], [149 / 132, 184 / 132]],
    # w_c = sum(G_c A_c) / sum(A_c): w0 = (1 - 2 + 6 + 8) / 10 = 1.3, w1 = (0 - 3 - 1 - 2) / 1 = -6.
    # cam = 1.3 A0 - 6 A1.
    "xgradcam": [[1.3 - 12, 2.6 + 18], [3.9 - 6, 5.2 - 6]],
    # G0 A0 = [[1, -2], [6, 8]], G1 A1 = [[0, -3], [-1, -2]]; cam = their sum.
    "hirescam": [[1, -5], [5, 6]],
    # relu(G0 A0) + relu(G1 A1) = [[1, 0], [6, 8]] + 0.
    "gradcamelementwise": [[1, 0], [6, 8]],
    # relu(G0) A0 + relu(G1) A1 = [[1, 0], [6, 8]] + [[0, -3], [0, 0]].
    "layercam": [[1, -3], [6, 8]],
}


@pytest.mark.parametrize("name", sorted(ORACLE_MAPS))
def test_method_matches_hand_computed_oracle(name: str) -> None:
    cam = ACTIVATION_GRADIENT_METHODS[name](ORACLE_ACTIVATIONS, ORACLE_GRADIENTS)
    assert cam.shape == (1, 2, 2) and cam.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(cam)[0], ORACLE_MAPS[name], rtol=1e-5, atol=1e-5)


# For the projections: channel 1 proportional to channel 0 makes the centred pixel matrix rank 1.
# Centred A0 is c = [[-1.5, -0.5], [0.5, 1.5]]; with channels (c, k c) the first right singular
# vector is (1, k) / sqrt(1 + k^2), so the projection is c (1 + k^2) / sqrt(1 + k^2)
# = sqrt(1 + k^2) c, up to sign.
CENTRED_A0 = np.array([[-1.5, -0.5], [0.5, 1.5]])


def test_eigencam_oracle() -> None:
    activations = np.stack([A0, 2 * np.array(A0)], axis=-1)[None]  # k = 2 -> sqrt(5) c
    cam = np.asarray(eigencam(activations, None))
    assert max_diff_up_to_sign(cam, math.sqrt(5) * CENTRED_A0[None]) < 1e-5


def test_eigengradcam_oracle() -> None:
    activations = np.stack([A0, A0], axis=-1)[None]
    gradients = np.stack([np.full((2, 2), 2.0), np.full((2, 2), -1.0)], axis=-1)[None]
    # G A = (2 A0, -A0) = 2 (A0, -A0 / 2): k = -1/2 on 2 c -> 2 sqrt(5/4) c = sqrt(5) c.
    cam = np.asarray(eigengradcam(activations, gradients))
    assert max_diff_up_to_sign(cam, math.sqrt(5) * CENTRED_A0[None]) < 1e-5


def test_eigen_smooth_oracle() -> None:
    # Grad-CAM weights (1, -0.5) on channels (A0, 2 A0) give weighted channels (A0, -A0):
    # k = -1 -> sqrt(2) c, where the channel sum would be all zeros.
    activations = np.stack([A0, 2 * np.array(A0)], axis=-1)[None]
    cam = np.asarray(gradcam(activations, ORACLE_GRADIENTS, eigen_smooth=True))
    assert max_diff_up_to_sign(cam, math.sqrt(2) * CENTRED_A0[None]) < 1e-5
    np.testing.assert_allclose(np.asarray(gradcam(activations, ORACLE_GRADIENTS)), 0, atol=1e-6)


def test_eigencam_zeroes_nans_like_pgc(rng: np.random.Generator) -> None:
    activations, _ = random_layer(rng)
    with_nan = activations.copy()
    with_nan[0, 1, 2, 3] = np.nan
    zeroed = with_nan.copy()
    zeroed[0, 1, 2, 3] = 0.0
    cam = np.asarray(eigencam(with_nan))
    assert np.isfinite(cam).all()
    assert max_diff_up_to_sign(cam, np.asarray(eigencam(zeroed))) < 1e-5


def test_minmax_and_resize_oracles() -> None:
    # (m - 0) / (1e-7 + 4): 1e-7 is far below float32 resolution at 4.
    maps = np.array([[[0.0, 1.0], [2.0, 4.0]]], np.float32)
    np.testing.assert_allclose(minmax_normalize(maps)[0], [[0, 0.25], [0.5, 1]], rtol=1e-6)
    # 2 -> 4 along each axis samples at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1):
    # weights of (a, b) are (1, 0), (0.75, 0.25), (0.25, 0.75), (0, 1).
    expected_rows = [0.0, 0.25, 0.75, 1.0]  # for [[0, 1], [0, 1]] along the columns
    resized = np.asarray(resize_bilinear(np.array([[[0.0, 1.0], [0.0, 1.0]]]), (4, 4)))
    np.testing.assert_allclose(resized[0], np.tile(expected_rows, (4, 1)), atol=1e-7)
    # 4 -> 2 samples at 0.5 and 2.5: averages of neighbours, no antialiasing.
    down = np.asarray(resize_bilinear(np.array([[[0.0, 2.0, 4.0, 8.0]] * 2]), (1, 2)))
    np.testing.assert_allclose(down[0], [[1.0, 6.0]], atol=1e-7)


# --- (b) parity with pytorch-grad-cam's own math ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "eigen_smooth"),
    # The projection methods ignore eigen_smooth, so they run once.
    [(name, False) for name in sorted(PGC_CLASSES)]
    + [(name, True) for name in sorted(set(PGC_CLASSES) - SVD_METHODS)],
)
def test_raw_map_matches_pgc(rng: np.random.Generator, name: str, eigen_smooth: bool) -> None:
    activations, gradients = random_layer(rng)
    ours = np.asarray(
        ACTIVATION_GRADIENT_METHODS[name](activations, gradients, eigen_smooth=eigen_smooth)
    )
    ref = pgc_raw_map(name, activations, gradients, eigen_smooth)
    assert ours.shape == ref.shape == activations.shape[:3]
    scale = float(np.abs(ref).max())
    if name in SVD_METHODS or eigen_smooth:
        assert max_diff_up_to_sign(ours, ref) < 1e-4 * max(1.0, scale)
    elif name in SUM_DIVIDING_METHODS:
        assert np.abs(ours - ref).max() < 1e-3 * scale
    else:
        assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.parametrize("name", ["gradcam", "hirescam", "gradcamelementwise", "layercam"])
def test_raw_map_matches_pgc_on_signed_activations(rng: np.random.Generator, name: str) -> None:
    # A target layer before its ReLU (a BatchNorm output) has negative activations.
    activations, gradients = random_layer(rng, batch=3, h=5, w=6, c=32, signed=True)
    ours = np.asarray(ACTIVATION_GRADIENT_METHODS[name](activations, gradients))
    ref = pgc_raw_map(name, activations, gradients, False)
    assert np.abs(ours - ref).max() < 1e-4


def test_methods_accept_torch_tensors_that_require_grad(rng: np.random.Generator) -> None:
    activations, gradients = random_layer(rng)
    torch_activations = torch.from_numpy(to_nchw(activations)).requires_grad_(True)
    torch_gradients = torch.from_numpy(to_nchw(gradients))
    # The NCHW -> NHWC permute is a non-contiguous view, as an adapter would produce.
    cam = gradcam(torch_activations.permute(0, 2, 3, 1), torch_gradients.permute(0, 2, 3, 1),
                  layout="NHWC")
    np.testing.assert_allclose(cam, gradcam(activations, gradients), atol=1e-6)


def test_registry() -> None:
    original = {
        "gradcam": gradcam,
        "gradcamplusplus": gradcamplusplus,
        "xgradcam": xgradcam,
        "hirescam": hirescam,
        "gradcamelementwise": gradcamelementwise,
        "layercam": layercam,
        "eigencam": eigencam,
        "eigengradcam": eigengradcam,
    }
    assert {k: ACTIVATION_GRADIENT_METHODS[k] for k in original} == original
    assert set(PGC_CLASSES) == set(original)
    # Methods added since (FEM, KPCA-CAM, ...) are tested in tests/test_methods_more.py.
    assert ACTIVATION_ONLY == set(registry.names(kind="activation_gradient",
                                                 uses_gradients=False))
    assert "eigencam" in ACTIVATION_ONLY and not ACTIVATION_ONLY & set(original) - {"eigencam"}
    assert all(callable(fn) and fn.__doc__ for fn in ACTIVATION_GRADIENT_METHODS.values())


# --- (c) post-processing against pytorch-grad-cam's ------------------------------------------


@pytest.mark.parametrize(
    ("in_hw", "out_hw"),
    [
        ((8, 8), (8, 8)),
        ((8, 8), (32, 32)),
        ((7, 7), (224, 224)),
        ((5, 7), (32, 45)),
        ((14, 10), (9, 6)),
    ],
)
def test_resize_matches_cv2(rng: np.random.Generator, in_hw: tuple, out_hw: tuple) -> None:
    maps = rng.standard_normal((3, *in_hw)).astype(np.float32)
    ref = np.stack([cv2.resize(m, out_hw[::-1], interpolation=cv2.INTER_LINEAR) for m in maps])
    ours = np.asarray(resize_bilinear(maps, out_hw))
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5


@pytest.mark.parametrize("out_hw", [(32, 32), (40, 56), (9, 6)])
def test_postprocess_matches_pgc_one_layer(rng: np.random.Generator, out_hw: tuple) -> None:
    raw = rng.standard_normal((3, 7, 7)).astype(np.float32)
    ours = np.asarray(postprocess(raw, out_hw))
    ref = pgc_postprocess([raw], out_hw)
    assert ours.shape == ref.shape == (3, *out_hw) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5


def test_postprocess_matches_pgc_several_layers(rng: np.random.Generator) -> None:
    same_size = rng.standard_normal((3, 2, 6, 5)).astype(np.float32)  # (L, B, h, w)
    np.testing.assert_allclose(
        postprocess(same_size, (32, 32)), pgc_postprocess(list(same_size), (32, 32)), atol=1e-5
    )
    sizes = [(7, 7), (14, 14), (4, 6)]
    layers = [rng.standard_normal((2, *hw)).astype(np.float32) for hw in sizes]
    np.testing.assert_allclose(
        postprocess(layers, (28, 42)), pgc_postprocess(layers, (28, 42)), atol=1e-5
    )


def test_pipeline_matches_pgc_compute_cam_per_layer(rng: np.random.Generator) -> None:
    """Two target layers of different sizes through pgc's real ``compute_cam_per_layer`` and
    ``aggregate_multi_layers`` (hooks bypassed by filling in the captured tensors), which also
    pins down that pgc resizes to (width, height) of a non-square input."""
    first, second = torch.nn.Conv2d(1, 1, 1), torch.nn.Conv2d(1, 1, 1)
    model = torch.nn.Sequential(first, second)
    captured = [random_layer(rng, batch=2, h=7, w=7), random_layer(rng, batch=2, h=10, w=14)]
    input_tensor = torch.zeros(2, 3, 40, 56)
    with LayerCAM(model=model, target_layers=[first, second]) as cam:
        cam.activations_and_grads.activations = [torch.from_numpy(to_nchw(a)) for a, _ in captured]
        cam.activations_and_grads.gradients = [torch.from_numpy(to_nchw(g)) for _, g in captured]
        ref = cam.aggregate_multi_layers(cam.compute_cam_per_layer(input_tensor, None, False))
    ours = postprocess([layercam(a, g) for a, g in captured], (40, 56))
    assert ours.shape == ref.shape == (2, 40, 56)
    assert np.abs(np.asarray(ours) - ref).max() < 1e-5


def test_postprocess_options_give_raw_maps(rng: np.random.Generator) -> None:
    raw = rng.standard_normal((2, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(
        postprocess(raw, (10, 14), relu=False, normalize=False, resize=False), raw
    )
    np.testing.assert_array_equal(postprocess(raw, None, normalize=False), np.maximum(raw, 0))
    np.testing.assert_allclose(
        postprocess(raw, (10, 14), normalize=False), resize_bilinear(np.maximum(raw, 0), (10, 14))
    )
    signed = np.asarray(postprocess(raw, (10, 14), relu=False))
    assert signed.min() == 0.0 and 0.999 < signed.max() <= 1.0
    with pytest.raises(ValueError, match="differ in size"):
        postprocess([raw, raw[:, :4]], (10, 14), resize=False)


# --- (d) degenerate maps, dtypes, transformations --------------------------------------------


@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
def test_constant_maps_give_zeros(value: float) -> None:
    maps = np.full((2, 3, 7, 7), value, np.float32)
    for out in (
        postprocess(maps, (16, 16)),
        postprocess(maps[0], (9, 5), relu=False),
        minmax_normalize(maps),
    ):
        assert not np.isnan(np.asarray(out)).any()
        np.testing.assert_array_equal(out, 0.0)


def test_one_constant_image_does_not_spoil_the_batch(rng: np.random.Generator) -> None:
    raw = rng.standard_normal((3, 7, 7)).astype(np.float32)
    raw[1] = -1.0  # all negative: zero after the ReLU
    out = np.asarray(postprocess(raw, (32, 32)))
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_allclose(out[[0, 2]], pgc_postprocess([raw], (32, 32))[[0, 2]], atol=1e-5)


def extra_inputs(name: str, activations: jax.Array, rng: np.random.Generator) -> dict:
    """What a method reads besides activations and gradients (its registry entry says):
    RandomCAM a key, ShapleyCAM the Hessian-vector product with the activations."""
    method = registry.get(name)
    extra: dict = {}
    if method.uses_key:
        extra["key"] = jax.random.key(int(rng.integers(2**31)))
    if method.uses_hvp:
        extra["hvp"] = jnp.asarray(rng.standard_normal(np.shape(activations)), activations.dtype)
    return extra


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_in_float32_out(rng: np.random.Generator, dtype: jnp.dtype) -> None:
    activations, gradients = random_layer(rng)
    activations, gradients = jnp.asarray(activations, dtype), jnp.asarray(gradients, dtype)
    for name, method in ACTIVATION_GRADIENT_METHODS.items():
        cam = method(activations, gradients, **extra_inputs(name, activations, rng))
        assert cam.dtype == jnp.float32, name
        out = postprocess(cam.astype(dtype), (32, 32))
        assert out.dtype == jnp.float32 and bool(jnp.isfinite(out).all()), name


@pytest.mark.parametrize("name", sorted(ACTIVATION_GRADIENT_METHODS))
def test_methods_jit_and_vmap_agree_with_eager(rng: np.random.Generator, name: str) -> None:
    method: Callable[..., jax.Array] = ACTIVATION_GRADIENT_METHODS[name]
    activations, gradients = random_layer(rng, batch=2, h=5, w=5, c=8)
    extra = extra_inputs(name, activations, rng)
    hvp = extra.pop("hvp", None)

    def call(a: jax.Array, g: jax.Array, h: jax.Array | None) -> jax.Array:
        return method(a, g, **extra, **({} if h is None else {"hvp": h}))

    eager = np.asarray(call(activations, gradients, hvp))
    jitted = np.asarray(jax.jit(call)(activations, gradients, hvp))
    # vmap over a leading axis of 2 groups of 1 image each.
    h = None if hvp is None else hvp[:, None]
    vmapped = np.asarray(jax.vmap(call)(activations[:, None], gradients[:, None], h))[:, 0]
    if "key" in extra:
        # Random weights are drawn per batch: each vmapped group of one image draws its own,
        # exactly as an eager call on that image alone does with the same key.
        eager_groups = np.concatenate([np.asarray(call(activations[i:i + 1], gradients[i:i + 1],
                                                        None)) for i in range(2)])
        np.testing.assert_allclose(vmapped, eager_groups, rtol=1e-5, atol=1e-5)
        vmapped = eager  # the jit comparison below is the one that applies
    if name in SVD_METHODS:
        assert max_diff_up_to_sign(jitted, eager) < 1e-4 * max(1.0, np.abs(eager).max())
        assert max_diff_up_to_sign(vmapped, eager) < 1e-4 * max(1.0, np.abs(eager).max())
    else:
        np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(vmapped, eager, rtol=1e-5, atol=1e-5)


def test_postprocess_jit_and_vmap_agree_with_eager(rng: np.random.Generator) -> None:
    raw = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)  # (L, B, h, w)
    eager = np.asarray(postprocess(raw, (32, 45)))
    jitted = jax.jit(partial(postprocess, out_size=(32, 45)))(raw)
    np.testing.assert_allclose(jitted, eager, atol=1e-6)
    # vmap over the batch axis (axis 1 of (L, B, h, w)): each call sees (L, h, w) as (B, h, w)
    # of one layer, so compare against per-layer processing of a single image instead.
    per_image = jax.vmap(lambda layers: postprocess(layers[:, None], (32, 45))[0], in_axes=1)
    np.testing.assert_allclose(per_image(raw), eager, atol=1e-6)


# --- arrays --------------------------------------------------------------------------------


def test_as_jax_accepts_numpy_torch_and_jax(rng: np.random.Generator) -> None:
    values = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    jax_array = jnp.asarray(values)
    assert as_jax(jax_array) is jax_array
    sources = [
        values,
        values[:, :, ::2],  # strided NumPy view
        torch.from_numpy(values).requires_grad_(True),
        torch.from_numpy(values).permute(0, 2, 3, 1).permute(0, 3, 1, 2),  # transposed layout
        torch.from_numpy(values.copy())[:, :, ::2],  # strided torch view: needs `contiguous`
    ]
    for source in sources:
        converted = as_jax(source)
        assert isinstance(converted, jax.Array)
        expected = source.detach().numpy() if isinstance(source, torch.Tensor) else source
        np.testing.assert_array_equal(converted, expected)
    assert as_jax(torch.ones(3, dtype=torch.bfloat16)).dtype == jnp.bfloat16
    source = torch.from_numpy(values.copy())
    copied = as_jax(source, copy=True)
    source.add_(1.0)
    np.testing.assert_array_equal(copied, values)

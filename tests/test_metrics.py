"""jaxcam.metrics: hand-built oracles with exact values, and parity with pytorch-grad-cam and
torchcam on shared random cases.

The parity tests score the same images with a tiny PyTorch CNN (conv-relu-avgpool-linear, random
weights) and its jax.numpy twin, so both libraries compute the same quantity from the same model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch
from flax import nnx
from pytorch_grad_cam.metrics import road as pgc_road
from pytorch_grad_cam.metrics.cam_mult_image import (
    CamMultImageConfidenceChange,
    DropInConfidence,
    IncreaseInConfidence,
)
from pytorch_grad_cam.metrics.road import (
    NoisyLinearImputer,
    ROADCombined,
    ROADLeastRelevantFirst,
    ROADMostRelevantFirst,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

import jaxcam
from jaxcam import metrics

H, W, C, CLASSES, HIDDEN = 16, 16, 3, 5, 6


def assert_close(actual: object, expected: object, tol: float = 1e-4) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


# ------------------------------------------------------------------------- twin CNN (torch/JAX)


class TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(C, HIDDEN, 3, padding=1)
        self.fc = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def make_twins(rng: np.random.Generator) -> tuple[TorchNet, Callable[[jax.Array], jax.Array]]:
    """A random torch CNN and the JAX function computing the same logits from NHWC images."""
    torch.manual_seed(int(rng.integers(2**31)))
    net = TorchNet().eval()
    kernel = jnp.asarray(net.conv.weight.detach().numpy().transpose(2, 3, 1, 0))  # HWIO
    conv_bias = jnp.asarray(net.conv.bias.detach().numpy())
    fc_w = jnp.asarray(net.fc.weight.detach().numpy().T)
    fc_b = jnp.asarray(net.fc.bias.detach().numpy())

    def logits(x: jax.Array) -> jax.Array:
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), [(1, 1), (1, 1)],
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=jax.lax.Precision.HIGHEST)
        y = jax.nn.relu(y + conv_bias).mean(axis=(1, 2))
        return jnp.dot(y, fc_w, precision=jax.lax.Precision.HIGHEST) + fc_b

    return net, logits


def prob_score_fn(logits: Callable, targets: np.ndarray) -> Callable[[jax.Array], jax.Array]:
    t = jnp.asarray(targets)
    return lambda x: jnp.take_along_axis(jax.nn.softmax(logits(x), -1), t[:, None], 1)[:, 0]


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def shared_case(rng: np.random.Generator, batch: int = 3):
    net, logits = make_twins(rng)
    images = rng.normal(0.0, 1.0, (batch, H, W, C)).astype(np.float32)
    maps = rng.random((batch, H, W)).astype(np.float32)
    targets = rng.integers(0, CLASSES, batch)
    return net, logits, images, maps, targets


class FixedCAM:
    """A torchcam CAM extractor that returns given maps (so torchcam scores our maps)."""

    def __init__(self, model: torch.nn.Module, cams: np.ndarray):
        self.model = model
        self.cams = torch.from_numpy(cams)

    def __call__(self, class_idx=None, scores=None, normalized=True, *, targets=None, **kw):
        return [self.cams]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


# --------------------------------------------------------------- deletion / insertion (oracle)


def region_sum_model(region: np.ndarray) -> Callable[[jax.Array], jax.Array]:
    """Score = sum of the image over a known region (all channels)."""
    r = jnp.asarray(region, jnp.float32)[None, :, :, None]
    return lambda x: jnp.sum(x * r, axis=(1, 2, 3))


def test_deletion_insertion_region_sum_oracle(rng):
    """4x4 one-channel images of constant value v, score = sum over the left two columns."""
    v = rng.uniform(0.5, 2.0, 2).astype(np.float32)
    images = np.broadcast_to(v[:, None, None, None], (2, 4, 4, 1)).copy()
    region = np.zeros((4, 4), bool)
    region[:, :2] = True
    score = region_sum_model(region)
    # Map decreasing in row-major order: step k of 4 removes rows 0..k-1 (2 region pixels each).
    ramp = np.broadcast_to((16 - np.arange(16.0)).reshape(4, 4) / 16, (2, 4, 4)).copy()
    curve = metrics.deletion_curve(score, images, ramp, steps=4)
    assert_close(curve, v[:, None] * np.array([8, 6, 4, 2, 0]), 1e-6)
    assert_close(metrics.auc(curve), 4 * v, 1e-6)  # 0.25 * (4 + 6 + 4 + 2 + 0)
    ins = metrics.insertion_curve(score, images, ramp, steps=4, baseline=0.0)
    assert_close(ins, v[:, None] * np.array([0, 2, 4, 6, 8]), 1e-6)
    assert_close(metrics.auc(ins), 4 * v, 1e-6)
    # Map 1 on the region, 0 elsewhere: ties broken in row-major order, so the region's 8 pixels
    # go first, 4 per step.
    onoff = np.broadcast_to(region.astype(np.float32), (2, 4, 4)).copy()
    curve = metrics.deletion_curve(score, images, onoff, steps=4)
    assert_close(curve, v[:, None] * np.array([8, 4, 0, 0, 0]), 1e-6)
    assert_close(metrics.auc(curve), 2 * v, 1e-6)
    # A baseline value b replaces removed pixels.
    b = float(rng.uniform(0.1, 0.4))
    curve = metrics.deletion_curve(score, images, ramp, steps=4, baseline=b)
    kept = np.array([8, 6, 4, 2, 0])
    assert_close(curve, v[:, None] * kept + b * (8 - kept), 1e-6)
    # steps that do not divide N: counts floor(k * 16 / 3) = 0, 5, 10, 16.
    curve = metrics.deletion_curve(score, images, ramp, steps=3)
    # Removing 5 pixels (row 0 + (1,0)) removes 3 region pixels; 10 pixels: rows 0-1 + (2,0),
    # (2,1): 6 region pixels.
    assert_close(curve, v[:, None] * np.array([8, 5, 2, 0]), 1e-6)
    fractions = metrics.curve_fractions(16, 3)
    assert_close(fractions, np.array([0, 5, 10, 16]) / 16, 1e-7)
    assert_close(metrics.auc(curve, fractions), v * np.trapezoid([8, 5, 2, 0], fractions), 1e-6)


def test_curve_chunking_and_outer_jit(rng):
    net, logits, images, maps, targets = shared_case(rng, batch=2)
    score = prob_score_fn(logits, targets)
    full = metrics.deletion_curve(score, images, maps, steps=8, batch_size=None)
    outer = jax.jit(lambda x, m: metrics.deletion_curve(score, x, m, steps=8, batch_size=3))
    assert_close(outer(images, maps), full, 1e-6)
    assert full.shape == (2, 9)
    assert_close(full[:, 0], score(images), 1e-6)


def test_rise_blur_matches_rise_gkern(rng):
    """RISE: gkern = gaussian_filter(delta, 5) on 11x11; blur = conv2d(x, kern, padding=5)."""
    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    gkern = scipy.ndimage.gaussian_filter(delta, 5)
    assert_close(metrics.rise_blur_kernel(), gkern, 1e-7)
    images = rng.random((2, H, W, C)).astype(np.float32)
    kern = np.zeros((C, C, 11, 11), np.float32)
    for c in range(C):
        kern[c, c] = gkern
    expected = torch.nn.functional.conv2d(nchw(images), torch.from_numpy(kern), padding=5)
    assert_close(metrics.rise_blur(jnp.asarray(images)), expected.numpy().transpose(0, 2, 3, 1))
    # Insertion starts from the blurred image by default and ends at the image.
    _, logits, _, maps, targets = shared_case(rng, batch=2)
    score = prob_score_fn(logits, targets)
    curve = metrics.insertion_curve(score, images, maps, steps=4)
    assert_close(curve[:, 0], score(metrics.rise_blur(jnp.asarray(images))), 1e-6)
    assert_close(curve[:, -1], score(jnp.asarray(images)), 1e-6)


@pytest.mark.parametrize("ties", [False, True])
def test_deletion_insertion_match_torchcam(rng, ties):
    net, logits, images, maps, targets = shared_case(rng)
    if ties:  # few distinct values: the stable tie-breaking must agree too
        maps = np.round(maps * 4) / 4
    steps = 16  # divides H * W = 256: torchcam's counts are the same 0, 16, ..., 256
    score = prob_score_fn(logits, targets)
    dele = metrics.auc(metrics.deletion_curve(score, images, maps, steps=steps))
    ins = metrics.auc(metrics.insertion_curve(score, images, maps, steps=steps, baseline=0.0))
    tc = DeletionInsertionMetric(FixedCAM(net, maps), lambda t: torch.softmax(t, -1),
                                 steps=steps, batch_size=64)
    tc.update(nchw(images), class_idx=[int(t) for t in targets])
    summary = tc.summary()
    assert_close(float(jnp.mean(dele)), summary["deletion_auc"])
    assert_close(float(jnp.mean(ins)), summary["insertion_auc"])


def test_saliency_ranks_stable_ties():
    maps = jnp.array([[[1.0, 2.0], [2.0, 1.0]]])
    assert np.asarray(metrics.saliency_ranks(maps)).tolist() == [[[2, 0], [1, 3]]]


# ------------------------------------------------------------ average drop / confidence change


def test_average_drop_increase_oracle(rng):
    full = np.array([0.5, 0.8, 0.2, 0.4], np.float32)
    masked = np.array([0.25, 0.9, 0.2, 0.1], np.float32)
    drop = metrics.average_drop(full, masked, reduction="none")
    assert_close(drop, [0.25 / (0.5 + 1e-7), 0.0, 0.0, 0.3 / (0.4 + 1e-7)], 1e-6)
    assert_close(metrics.average_drop(full, masked), np.mean(drop), 1e-6)
    assert_close(metrics.increase_in_confidence(full, masked, reduction="none"), [0, 1, 0, 0])
    assert_close(metrics.increase_in_confidence(full, masked), 0.25)
    # masked_scores multiplies the image by its map: with a region-sum score it is exact.
    images = rng.uniform(0.5, 1.0, (2, 4, 4, 2)).astype(np.float32)
    maps = rng.random((2, 4, 4)).astype(np.float32)
    region = rng.random((4, 4)) > 0.5
    expected = np.sum(images * maps[..., None] * region[None, :, :, None], axis=(1, 2, 3))
    assert_close(metrics.masked_scores(region_sum_model(region), images, maps), expected, 1e-5)


def test_average_drop_increase_match_torchcam(rng):
    net, logits, images, maps, targets = shared_case(rng, batch=6)
    score = prob_score_fn(logits, targets)
    full = score(jnp.asarray(images))
    masked = metrics.masked_scores(score, images, maps)
    tc = ClassificationMetric(FixedCAM(net, maps), lambda t: torch.softmax(t, -1))
    tc.update(nchw(images), class_idx=[int(t) for t in targets])
    summary = tc.summary()
    assert_close(metrics.average_drop(full, masked), summary["avg_drop"])
    assert_close(metrics.increase_in_confidence(full, masked), summary["conf_increase"])


def test_confidence_change_matches_pytorch_grad_cam(rng):
    net, logits, images, maps, targets = shared_case(rng, batch=4)
    score = prob_score_fn(logits, targets)
    pgc_targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    change = metrics.confidence_change(score, images, maps)
    assert_close(change, CamMultImageConfidenceChange()(nchw(images), maps, pgc_targets, net))
    assert_close(jax.nn.relu(-change), DropInConfidence()(nchw(images), maps, pgc_targets, net))
    assert_close(change > 0, IncreaseInConfidence()(nchw(images), maps, pgc_targets, net))


# --------------------------------------------------------------------------------------- ROAD


def pgc_impute(images: np.ndarray, keep: np.ndarray, noise: float = 0.0) -> np.ndarray:
    imputer = NoisyLinearImputer(noise=noise)
    out = [imputer(torch.from_numpy(img.transpose(2, 0, 1).copy()),
                   torch.from_numpy(k.astype(np.float32))).numpy().transpose(1, 2, 0)
           for img, k in zip(images, keep, strict=True)]
    return np.stack(out)


def test_imputation_matches_pytorch_grad_cam(rng):
    images = rng.random((3, H, W, C)).astype(np.float32)
    keep = rng.random((3, H, W)) > rng.uniform(0.2, 0.9, (3, 1, 1))
    keep[2] = True
    keep[2, 2:-3, 1:-4] = False  # a large block touching no border
    keep[2, :5, :] = False  # and one along the top border and corners
    ours = metrics.noisy_linear_imputation(images, keep, noise=0.0)
    assert_close(ours, pgc_impute(images, keep))
    assert_close(np.asarray(ours)[keep], images[keep], 0)  # kept pixels untouched


def test_imputation_oracles(rng):
    """Constant images stay constant; a linear ramp's removed interior is rebuilt exactly
    (the symmetric 8-neighbour average of a linear function is its centre value)."""
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    coef = rng.uniform(-0.05, 0.05, (3, 3))
    ramp = (coef[:, None, None, 0] * yy + coef[:, None, None, 1] * xx + coef[:, None, None, 2])
    ramp = np.repeat(ramp[..., None], C, -1).astype(np.float32) + 0.5
    keep = np.ones((3, H, W), bool)
    keep[:, 3:12, 2:9] = False
    assert_close(metrics.noisy_linear_imputation(ramp, keep, noise=0.0), ramp, 1e-5)
    const = np.full((3, H, W, C), rng.uniform(0.2, 0.8), np.float32)
    keep = rng.random((3, H, W)) > 0.7
    assert_close(metrics.noisy_linear_imputation(const, keep, noise=0.0), const, 1e-5)
    # Noise: N(0, noise^2) on removed pixels only, reproducible by key.
    key = jax.random.key(int(rng.integers(2**31)))
    noisy = metrics.noisy_linear_imputation(const, keep, noise=0.05, key=key)
    diff = np.asarray(noisy) - const
    assert np.all(diff[keep] == 0)
    assert abs(diff[~keep].std() - 0.05) < 0.01 and abs(diff[~keep].mean()) < 0.01
    again = metrics.noisy_linear_imputation(const, keep, noise=0.05, key=key)
    assert_close(again, noisy, 0)


def test_road_keep_masks_match_pytorch_grad_cam(rng):
    maps = rng.random((2, H, W)).astype(np.float32)
    maps[1] = np.round(maps[1] * 5) / 5  # ties, and thresholds that land on a value
    percentiles = (10, 20, 40, 50, 80, 90)
    morf = metrics.road_keep_masks(maps, percentiles, most_relevant_first=True)
    lerf = metrics.road_keep_masks(maps, percentiles, most_relevant_first=False)
    for i, p in enumerate(percentiles):
        for b in range(2):
            cam = torch.from_numpy(maps[b])
            expected = (cam < np.percentile(cam.numpy(), p)).numpy()
            assert np.array_equal(np.asarray(morf[i, b]), expected)
            inv = 1 - cam
            expected = (inv < np.percentile(inv.numpy(), p)).numpy()
            assert np.array_equal(np.asarray(lerf[i, b]), expected)


def test_road_scores_match_pytorch_grad_cam(rng, monkeypatch):
    net, logits, images, maps, targets = shared_case(rng)
    score = prob_score_fn(logits, targets)
    pgc_targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    # pytorch-grad-cam builds its imputers with noise 0.01 from the global torch RNG; compare
    # the noise-free imputation.
    monkeypatch.setattr(NoisyLinearImputer.__init__, "__defaults__",
                        (0.0, pgc_road.neighbors_weights))
    percentiles = (20, 50, 90)
    key = jax.random.key(0)
    common = dict(percentiles=percentiles, noise=0.0, key=key)
    morf = metrics.road_morf(score, images, maps, **common)
    lerf = metrics.road_lerf(score, images, maps, **common)
    for i, p in enumerate(percentiles):
        assert_close(morf[:, i], ROADMostRelevantFirst(p)(nchw(images), maps, pgc_targets, net))
        assert_close(lerf[:, i], ROADLeastRelevantFirst(p)(nchw(images), maps, pgc_targets, net))
    combined = metrics.road_combined(score, images, maps, **common)
    expected = ROADCombined(list(percentiles))(nchw(images), maps, pgc_targets, net)
    assert_close(combined, expected)


# ------------------------------------------------------------------------------- localisation


def test_pointing_game_oracle(rng):
    maps = rng.uniform(0.0, 0.5, (5, 8, 8)).astype(np.float32)
    masks = np.zeros((5, 8, 8), bool)
    masks[:, 2:5, 2:5] = True
    maps[0, 3, 3] = 1.0  # max inside
    maps[1, 7, 7] = 1.0  # max outside
    maps[2, 3, 3] = maps[2, 7, 0] = 1.0  # tie: one max location inside -> hit
    maps[3, 0, 0] = maps[3, 7, 7] = 1.0  # tie: both outside -> miss
    maps[4, 3, 3] = 1.0  # empty mask -> miss
    masks[4] = False
    hits = metrics.pointing_game(maps, masks)
    assert np.asarray(hits).tolist() == [True, False, True, False, False]
    # Tolerance: Euclidean distance from the max to the nearest mask pixel.
    maps = rng.uniform(0.0, 0.5, (2, 12, 12)).astype(np.float32)
    masks = np.zeros((2, 12, 12), bool)
    masks[:, 5, 5] = True
    maps[0, 5, 8] = 1.0  # distance 3
    maps[1, 7, 7] = 1.0  # distance sqrt(8) = 2.83
    assert np.asarray(metrics.pointing_game(maps, masks, tolerance=2)).tolist() == [False, False]
    assert np.asarray(metrics.pointing_game(maps, masks, tolerance=2.9)).tolist() == [False, True]
    assert np.asarray(metrics.pointing_game(maps, masks, tolerance=3)).tolist() == [True, True]


def test_energy_pointing_game_oracle(rng):
    a = rng.uniform(0.5, 1.0)
    maps = np.full((3, 6, 8), 0.5 * a, np.float32)
    masks = np.zeros((3, 6, 8), bool)
    masks[:, 1:3, 2:7] = True  # 10 pixels inside, 38 outside
    maps[:, 1:3, 2:7] = a
    maps[1] = 0.0
    maps[1, 1:3, 2:7] = a  # all energy inside
    maps[2] = 0.0  # zero map -> 0, not NaN
    energy = metrics.energy_pointing_game(maps, masks)
    assert_close(energy, [10 / (10 + 0.5 * 38), 1.0, 0.0], 1e-6)


def test_iou_oracle(rng):
    maps = rng.uniform(0.0, 0.4, (3, 10, 10)).astype(np.float32)
    # Selected at 0.5 * max: the 4 x 5 = 20 pixels in [0.9, 1) (0.5 * max >= 0.45 > background).
    maps[:, 1:5, 1:6] = rng.uniform(0.9, 1.0, (3, 4, 5))
    masks = np.zeros((3, 10, 10), bool)
    masks[0, 3:8, 2:8] = True  # 30 px; intersection rows 3-4, cols 2-5 = 8
    masks[1, 1:5, 1:6] = True  # identical
    masks[2, 6:9, 6:9] = True  # disjoint
    assert_close(metrics.iou(maps, masks), [8 / (20 + 30 - 8), 1.0, 0.0], 1e-6)
    empty = metrics.iou(np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), bool))
    assert_close(empty, [1.0])


# --------------------------------------------------------------------------------- similarity


def test_spearman_oracles_and_scipy(rng):
    shape = (3, 12, 14)
    base = np.stack([rng.permutation(12 * 14) for _ in range(3)]).astype(np.float32)
    base = base.reshape(shape)
    assert_close(metrics.spearman_rank_correlation(base, base ** 3 + 2), np.ones(3), 1e-6)
    assert_close(metrics.spearman_rank_correlation(base, -base), -np.ones(3), 1e-6)
    # Random maps with many ties, against scipy.
    a = np.round(rng.random(shape) * 6).astype(np.float32)
    b = np.round(rng.random(shape) * 3 + a * rng.random()).astype(np.float32)
    expected = [scipy.stats.spearmanr(x.ravel(), y.ravel()).statistic
                for x, y in zip(a, b, strict=True)]
    assert_close(metrics.spearman_rank_correlation(a, b), expected)
    assert_close(metrics.average_ranks(a.reshape(3, -1)),
                 np.stack([scipy.stats.rankdata(x.ravel()) for x in a]), 1e-6)
    # A constant map has no rank correlation: 0, not NaN.
    const = np.ones(shape, np.float32)
    assert_close(metrics.spearman_rank_correlation(const, a), np.zeros(3))


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-image's structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1), re-implemented with scipy."""
    a, b = a.astype(np.float64), b.astype(np.float64)

    def filt(x):
        return scipy.ndimage.gaussian_filter(x, sigma=1.5, truncate=3.5)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ua, ub = filt(a), filt(b)
    va, vb, cov = filt(a * a) - ua * ua, filt(b * b) - ub * ub, filt(a * b) - ua * ub
    s = (2 * ua * ub + c1) * (2 * cov + c2) / ((ua ** 2 + ub ** 2 + c1) * (va + vb + c2))
    return float(s[5:-5, 5:-5].mean())


def test_ssim_oracles_and_reference(rng):
    a = rng.random((3, 20, 24)).astype(np.float32)
    assert_close(metrics.ssim(a, a), np.ones(3), 1e-5)
    c1, c2 = rng.uniform(0.1, 0.9, (2, 3, 1, 1))
    k1 = 0.01 ** 2  # the contrast-structure term is C2 / C2 = 1 for constant maps
    const = metrics.ssim(np.broadcast_to(c1, a.shape), np.broadcast_to(c2, a.shape))
    assert_close(const, ((2 * c1 * c2 + k1) / (c1 ** 2 + c2 ** 2 + k1)).ravel(), 1e-5)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
    assert_close(metrics.ssim(a, b), [skimage_ssim(x, y) for x, y in zip(a, b, strict=True)])
    assert_close(metrics.ssim(a, b), metrics.ssim(b, a), 1e-6)
    window = metrics.gaussian_window()
    assert window.shape == (11,) and abs(window.sum() - 1) < 1e-6


# ------------------------------------------------------------------------------ sanity checks


class SmallNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(C, 4, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(4, 6, (3, 3), rngs=rngs)
        self.head = nnx.Linear(6, CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
        return self.head(x.mean(axis=(1, 2)))


def make_small_net(rng: np.random.Generator) -> SmallNet:
    """SmallNet with N(0, 0.5^2) parameters from ``rng`` (no eager initialiser compiles)."""
    model = nnx.eval_shape(lambda: SmallNet(nnx.Rngs(0)))
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param):
            var.set_value(jnp.asarray(rng.normal(0.0, 0.5, var.shape).astype(np.float32)))
    return model


def explain_conv1(model, images, targets):
    return jaxcam.explain(model, images, target_layer="conv1", targets=targets)


def test_cascading_randomization(rng):
    model = make_small_net(rng)
    images = jnp.asarray(rng.normal(size=(2, H, W, C)).astype(np.float32))
    targets = jnp.asarray(rng.integers(0, CLASSES, 2))
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    order = ["head", "conv2", "conv1"]
    result = metrics.cascading_randomization(explain_conv1, model, images,
                                             key=jax.random.key(0), layer_order=order,
                                             targets=targets)
    assert result.steps == ("original", "head", "conv2", "conv1")
    assert result.maps.shape == (4, 2, H, W)
    assert_close(result.maps[0], explain_conv1(model, images, targets), 1e-6)
    assert_close(result.spearman[0], [1, 1], 1e-5)
    assert_close(result.ssim[0], [1, 1], 1e-5)
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    assert jax.tree.all(jax.tree.map(np.array_equal, before, after))  # model untouched
    # Same key, same result; and cumulative from the top: replay with a recording reinit.
    seen: list[tuple[str, ...]] = []

    def plus_one(key, path, value):
        seen.append(path)
        return value + 1.0

    replay = metrics.cascading_randomization(explain_conv1, model, images,
                                             key=jax.random.key(0), layer_order=order[:2],
                                             targets=targets, reinit=plus_one)
    assert sorted(seen) == [("conv2", "bias"), ("conv2", "kernel"), ("head", "bias"),
                            ("head", "kernel")]
    manual = nnx.clone(model)
    for layer in (manual.head, manual.conv2):
        for var in (layer.kernel, layer.bias):
            var.set_value(var.get_value() + 1.0)
    assert_close(replay.maps[2], explain_conv1(manual, images, targets), 1e-5)
    manual.head.kernel.set_value(model.head.kernel.get_value())
    manual.head.bias.set_value(model.head.bias.get_value())
    assert not np.allclose(replay.maps[1], explain_conv1(manual, images, targets))
    again = metrics.cascading_randomization(explain_conv1, model, images,
                                            key=jax.random.key(0), layer_order=order,
                                            targets=targets)
    assert_close(again.maps, result.maps, 0)
    with pytest.raises(ValueError, match="conv1"):
        metrics.cascading_randomization(explain_conv1, model, images, key=jax.random.key(0),
                                        layer_order=["nope"], targets=targets)


def test_default_reinit(rng):
    key = jax.random.key(int(rng.integers(2**31)))
    kernel = metrics.default_reinit(key, ("conv", "kernel"), jnp.zeros((3, 3, 64, 32)))
    assert abs(float(jnp.var(kernel)) * 3 * 3 * 64 - 1) < 0.1  # LeCun: var 1 / fan_in
    bound = 2 / 0.87962566103423978 / (3 * 3 * 64) ** 0.5  # truncated at 2 std of the normal
    assert float(jnp.max(jnp.abs(kernel))) <= bound * (1 + 1e-6)
    big = metrics.default_reinit(key, ("fc", "kernel"), jnp.zeros((300, 400)))  # 2 chunks
    assert abs(float(jnp.var(big)) * 300 - 1) < 0.05 and big.shape == (300, 400)
    other = metrics.default_reinit(key, ("x", "w"), jnp.asarray(rng.normal(3.0, 2.0, 5000)))
    assert abs(float(jnp.mean(other)) - 3) < 0.2 and abs(float(jnp.std(other)) - 2) < 0.2
    assert np.all(np.asarray(metrics.default_reinit(key, ("c", "bias"), jnp.ones(4))) == 0)
    assert np.all(np.asarray(metrics.default_reinit(key, ("bn", "scale"), jnp.zeros(4))) == 1)


def test_label_randomization(rng):
    model = make_small_net(rng)
    images = jnp.asarray(rng.normal(size=(3, H, W, C)).astype(np.float32))
    targets = jnp.asarray(rng.integers(0, CLASSES, 3))
    key = jax.random.key(int(rng.integers(2**31)))
    result = metrics.label_randomization(explain_conv1, model, images, targets, key=key,
                                         num_classes=CLASSES)
    assert np.all(np.asarray(result.random_targets) != np.asarray(targets))
    assert_close(result.maps_random, explain_conv1(model, images, result.random_targets), 1e-6)
    expected = metrics.compare_maps(result.maps, result.maps_random)
    assert_close(result.spearman, expected.spearman, 1e-6)
    assert_close(result.ssim, expected.ssim, 1e-6)
    same = metrics.label_randomization(explain_conv1, model, images, targets,
                                       random_label_model=model)
    assert_close(same.spearman, np.ones(3), 1e-5)
    draws = metrics.random_other_classes(key, jnp.zeros(2000, jnp.int32), 4)
    assert set(np.asarray(draws).tolist()) == {1, 2, 3}

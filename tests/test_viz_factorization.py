"""jaxcam.viz.factorization: pytorch-grad-cam's DFF picture (blend, legend) and concept labels."""

from __future__ import annotations

import cv2
import jax
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from pytorch_grad_cam.utils.image import create_labels_legend as pgc_create_labels_legend
from pytorch_grad_cam.utils.image import show_factorization_on_image as pgc_show_factorization

from jaxcam import viz
from jaxcam.viz.factorization import (
    concept_colors,
    concept_legend,
    concept_lut,
    factorization_batch,
)


@pytest.fixture
def pgc(monkeypatch):
    """pytorch-grad-cam's ``show_factorization_on_image``, runnable and without side effects.

    Its default colours call ``plt.cm.get_cmap``, which matplotlib 3.9 removed: put it back
    for the test. It sets the global ``legend.fontsize`` and zeroes the maps it is given: run it
    in an rc_context on a copy."""
    monkeypatch.setattr(plt.cm, "get_cmap", matplotlib.colormaps.get_cmap, raising=False)

    def run(img, explanations, **kwargs):
        with matplotlib.rc_context():
            return pgc_show_factorization(img, np.array(explanations, copy=True), **kwargs)

    return run


def _inputs(rng: np.random.Generator, k: int, h: int | None = None, w: int | None = None,
            dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    h = int(rng.integers(40, 140)) if h is None else h
    w = int(rng.integers(40, 140)) if w is None else w
    img = rng.random((h, w, 3)).astype(dtype)
    maps = rng.random((k, h, w)).astype(np.float32)
    maps[:, 0, :5] = 0.0  # ties: the first concept wins, at brightness 0
    maps[:, 1, :5] = 0.5  # ties at half brightness
    maps[-1, 2, 0] = 1.0  # full brightness
    return img, maps


def _labels(rng: np.random.Generator, k: int) -> list[str]:
    return [f"concept {i}:{rng.random():.2f}\nother {i}:{rng.random():.2f}" for i in range(k)]


@pytest.mark.parametrize("k", [1, 3, 5, 8])
@pytest.mark.parametrize("dtype, image_weight", [(np.float32, 0.5), (np.float64, 0.3),
                                                 (np.float32, 0.0), (np.float32, 1.0)])
def test_blend_equals_pytorch_grad_cams(rng, pgc, k, dtype, image_weight):
    img, maps = _inputs(rng, k, dtype=dtype)
    before = maps.copy()
    ours = viz.show_factorization_on_image(img, maps, image_weight=image_weight)
    theirs = pgc(img, maps, image_weight=image_weight)
    assert ours.dtype == np.uint8 and ours.shape == img.shape
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(maps, before)  # pytorch-grad-cam's zeroes them; ours does not


@pytest.mark.parametrize("k, h, w", [(2, 224, 224), (5, 96, 131), (7, 64, 64), (4, 300, 120)])
def test_picture_with_legend_equals_pytorch_grad_cams(rng, pgc, k, h, w):
    """The whole picture: the blend, and the legend matplotlib draws beside it."""
    img, maps = _inputs(rng, k, h, w)
    labels = _labels(rng, k)
    fontsize = matplotlib.rcParams["legend.fontsize"]
    ours = viz.show_factorization_on_image(img, maps, image_weight=0.3, concept_labels=labels)
    assert matplotlib.rcParams["legend.fontsize"] == fontsize  # no global change
    theirs = pgc(img, maps, image_weight=0.3, concept_labels=labels)
    assert ours.shape == theirs.shape == (h, 2 * w, 3)
    np.testing.assert_array_equal(ours[:, :w], theirs[:, :w])
    legend_diff = np.abs(ours[:, w:].astype(int) - theirs[:, w:]).max()
    print(f"k={k} {h}x{w}: legend max |difference| {legend_diff} grey levels")
    np.testing.assert_array_equal(ours[:, w:], theirs[:, w:])


def test_own_colors_equal_pytorch_grad_cams(rng, pgc):
    k = 4
    img, maps = _inputs(rng, k)
    colors = [rng.random(3), rng.random(4), (1.0, 0.0, 0.0), np.array([0.2, 0.4, 0.6, 1.0])]
    labels = _labels(rng, k)
    ours = viz.show_factorization_on_image(img, maps, colors, 0.6, labels)
    theirs = pgc(img, maps, colors=colors, image_weight=0.6, concept_labels=labels)
    np.testing.assert_array_equal(ours, theirs)


def test_default_colors_are_gist_rainbow_steps():
    for k in range(1, 20):
        cmap = matplotlib.colormaps["gist_rainbow"]
        expected = [cmap(i) for i in np.arange(0, 1, 1.0 / k)]
        np.testing.assert_array_equal(concept_colors(k), expected)
    assert concept_colors(4).shape == (4, 4)


def test_legend_has_one_swatch_per_concept_in_its_colour(rng):
    k, h, w = 5, 224, 224
    colors = concept_colors(k)
    # At figure.dpi 100, five two-line labels overflow the panel (in pytorch-grad-cam too).
    with matplotlib.rc_context({"figure.dpi": 72}):
        panel = concept_legend(_labels(rng, k), colors, h, w)
    assert panel.shape == (h, w, 3) and panel.dtype == np.uint8
    rows = []
    for c in np.round(colors[:, :3] * 255):  # Agg rounds the line's colour
        hit = np.all(np.abs(panel - c) <= 1, axis=-1)
        assert hit.sum() >= 20, f"no swatch of colour {c}"
        ys = np.nonzero(hit)[0]
        assert ys.max() - ys.min() < h // k  # one short band, not spread over the panel
        rows.append(ys.mean())
    assert rows == sorted(rows)  # first concept on top
    # Text: dark pixels beside the swatches (labels are drawn in black).
    assert np.sum(panel.max(axis=-1) < 80) > 100


@pytest.mark.parametrize("k, h, w", [(3, 224, 224), (5, 57, 83), (1, 31, 40)])
def test_batch_on_device_within_one_grey_level(rng, pgc, k, h, w):
    images = np.stack([_inputs(rng, k, h, w)[0] for _ in range(2)])
    maps = np.stack([_inputs(rng, k, h, w)[1] for _ in range(2)])
    got = factorization_batch(images, maps, image_weight=0.3)
    jitted = jax.jit(lambda i, m: factorization_batch(i, m, image_weight=0.3))(images, maps)
    assert got.dtype == jitted.dtype == jax.numpy.uint8 and got.shape == images.shape
    for i in range(2):
        theirs = pgc(images[i], maps[i], image_weight=0.3)
        for name, ours in (("eager", got), ("under jit", jitted)):
            diff = np.abs(np.asarray(ours[i]).astype(int) - theirs)
            print(f"{h}x{w} {name}: {np.mean(diff == 0):.5f} of values equal, max |difference| "
                  f"{diff.max()}")
            assert diff.max() <= 1


def test_concept_lut_is_the_hsv_round_trip():
    colors = concept_colors(6)
    lut = concept_lut(colors)
    assert lut.shape == (6, 256, 3) and lut.dtype == np.uint8
    np.testing.assert_array_equal(lut[:, 0], 0)  # brightness 0 is black
    for i, c in enumerate(colors):
        hsv = cv2.cvtColor(np.uint8(c[:3] * 255)[None, None], cv2.COLOR_RGB2HSV)
        values = np.uint8([0, 1, 100, 254, 255])
        hsv = np.repeat(hsv, len(values), axis=1)
        hsv[0, :, 2] = values
        # OpenCV's scalar code (5 pixels) rounds a little differently from its vectorised code.
        diff = np.abs(lut[i, values].astype(int) - cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0])
        assert diff.max() <= 1


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_labels_equal_pytorch_grad_cams(rng, top_k):
    k, n = int(rng.integers(1, 7)), int(rng.integers(3, 40))
    scores = rng.random((k, n))
    names = [f"class {j}" if j % 3 else f"class {j}, alias, third, fourth" for j in range(n)]
    theirs = pgc_create_labels_legend(scores, dict(enumerate(names)), top_k=top_k)
    assert viz.create_labels_legend(scores, names, top_k) == theirs
    assert viz.create_labels_legend(scores, dict(enumerate(names)), top_k) == theirs
    assert viz.create_labels_legend(jax.numpy.asarray(scores, jax.numpy.float32), names,
                                    top_k) == pgc_create_labels_legend(
        scores.astype(np.float32), dict(enumerate(names)), top_k=top_k)
    assert all(s.count("\n") == top_k - 1 for s in theirs)
    best = int(np.argmax(scores[0]))
    assert theirs[0].startswith(names[best].split(",")[0])


def _bad_calls(rng):
    img, maps = _inputs(rng, 3, 32, 40)
    labels = _labels(rng, 3)
    nan_maps = maps.copy()
    nan_maps[1, 2, 3] = np.nan
    inf_img = img.copy()
    inf_img[0, 0, 0] = np.inf
    show = viz.show_factorization_on_image
    labels_of = viz.create_labels_legend
    scores = rng.random((3, 10))
    names = [str(i) for i in range(10)]
    return [
        (lambda: show(img[..., 0], maps), r"\(H, W, 3\).*got shape \(32, 40\)"),
        (lambda: show(img, maps[None]), r"\(k, H, W\) = \(k, 32, 40\).*index the batch axis"),
        (lambda: show(img, maps[:, :31]), r"\(k, 32, 40\).*got \(3, 31, 40\)"),
        (lambda: show(img, maps, concept_labels=labels[:2]), r"one label per concept \(3\).* 2"),
        (lambda: show(img, maps, concept_labels="abc"), r"one label per concept.*single string"),
        (lambda: show(img, maps, colors=[(1, 0, 0)] * 2), r"3 RGB or RGBA colours.*got 2 colours"),
        (lambda: show(img, maps, colors=[(255, 0, 0)] * 3),
         r"\[0, 1\].*colour 0 is \[255.0, 0.0, 0.0\].*divide 0..255"),
        (lambda: show(img, nan_maps), r"explanations must be finite; 1 of its 3840"),
        (lambda: show(inf_img, maps), r"img must be finite"),
        (lambda: show(img * 255, maps), r"img must be in the range \[0, 1\].*divide"),
        (lambda: show(np.uint8(img * 255), maps), r"img must be float.*uint8.*divide by 255"),
        (lambda: show(img, maps * 3), r"explanations must be in \[0, 1\].*minmax_normalize"),
        (lambda: show(img, maps - 0.5), r"explanations must be in \[0, 1\]"),
        (lambda: show(img, maps, image_weight=1.5), r"image_weight.*\[0, 1\].*1.5"),
        (lambda: factorization_batch(img, maps), r"images must be \(B, H, W, 3\)"),
        (lambda: factorization_batch(img[None], maps), r"\(B, k, H, W\) = \(1, k, 32, 40\)"),
        (lambda: labels_of(scores[0], names), r"\(k, num_classes\).*shape \(10,\)"),
        (lambda: labels_of(scores, names[:9]), r"name the 10 classes.*got 9 names"),
        (lambda: labels_of(scores, {0: "a"}), r"no name for 9 of the 10 classes.*first is 1"),
        (lambda: labels_of(scores, names, 11), r"top_k must be an int in 1..10.*11"),
        (lambda: labels_of(scores, names, 0), r"top_k must be an int in 1..10"),
        (lambda: labels_of(scores * np.nan, names), r"concept_scores must be finite"),
        (lambda: concept_colors(0), r"positive int"),
    ]


def test_bad_input_is_a_clear_error(rng):
    for call, message in _bad_calls(rng):
        with pytest.raises(ValueError, match=message):
            call()

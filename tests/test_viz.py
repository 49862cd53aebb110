"""jaxcam.viz: pytorch-grad-cam's overlay pixel for pixel, the batched overlay, grids, gallery."""

from __future__ import annotations

import html
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest
from pytorch_grad_cam.utils.image import show_cam_on_image as pgc_show_cam_on_image

from jaxcam import viz


def _inputs(rng: np.random.Generator, b: int = 3, h: int = 17, w: int = 23,
            dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    images = rng.random((b, h, w, 3)).astype(dtype)
    masks = rng.random((b, h, w)).astype(np.float32)
    masks[0, 0, 0], masks[0, 1, 1] = 0.0, 1.0  # both ends of the colour table
    return images, masks


@pytest.mark.parametrize("image_weight", [0.0, 0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("use_rgb", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_show_cam_on_image_equals_pytorch_grad_cam(rng, image_weight, use_rgb, dtype):
    images, masks = _inputs(rng, dtype=dtype)
    for img, mask in zip(images, masks, strict=True):
        ours = viz.show_cam_on_image(img, mask, use_rgb=use_rgb, image_weight=image_weight)
        theirs = pgc_show_cam_on_image(img, mask, use_rgb=use_rgb, image_weight=image_weight)
        assert ours.dtype == np.uint8 and ours.shape == img.shape
        np.testing.assert_array_equal(ours, theirs)


def test_show_cam_on_image_other_colormap(rng):
    images, masks = _inputs(rng)
    ours = viz.show_cam_on_image(images[0], masks[0], True, cv2.COLORMAP_VIRIDIS, 0.4)
    theirs = pgc_show_cam_on_image(images[0], masks[0], True, cv2.COLORMAP_VIRIDIS, 0.4)
    np.testing.assert_array_equal(ours, theirs)


def test_show_cam_on_image_rejects_what_pytorch_grad_cam_rejects(rng):
    images, masks = _inputs(rng)
    for args in [(images[0] * 255, masks[0]), (images[0], masks[0], False, cv2.COLORMAP_JET, 1.5),
                 (images[0], masks[0], False, cv2.COLORMAP_JET, -0.1)]:
        with pytest.raises(Exception):  # noqa: B017 - pgc raises a bare Exception
            pgc_show_cam_on_image(*args)
        with pytest.raises(ValueError, match="range"):
            viz.show_cam_on_image(*args)


def test_colormap_lut_is_opencvs():
    lut = viz.colormap_lut(cv2.COLORMAP_JET, rgb=False)
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(lut[values], cv2.applyColorMap(values, cv2.COLORMAP_JET))
    np.testing.assert_array_equal(viz.colormap_lut(cv2.COLORMAP_JET, rgb=True), lut[:, ::-1])


@pytest.mark.parametrize("use_rgb", [True, False])
@pytest.mark.parametrize("image_weight", [0.5, 0.25])
def test_overlay_batch_equals_per_image_cv2_path(rng, use_rgb, image_weight):
    images, masks = _inputs(rng, b=8, h=33, w=47)
    out = viz.overlay_batch(images, masks, image_weight=image_weight, use_rgb=use_rgb)
    assert isinstance(out, jax.Array) and out.dtype == np.uint8 and out.shape == images.shape
    expected = np.stack([pgc_show_cam_on_image(i, m, use_rgb=use_rgb, image_weight=image_weight)
                         for i, m in zip(images, masks, strict=True)])
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_overlay_batch_jits_and_vmaps(rng):
    images, masks = _inputs(rng, b=2)
    expected = np.asarray(viz.overlay_batch(images, masks))
    jitted = jax.jit(lambda i, m: viz.overlay_batch(i, m))(images, masks)
    np.testing.assert_array_equal(np.asarray(jitted), expected)
    per = jax.vmap(lambda i, m: viz.overlay_batch(i[None], m[None])[0])(images, masks)
    np.testing.assert_array_equal(np.asarray(per), expected)
    with pytest.raises(ValueError, match="masks"):
        viz.overlay_batch(images, masks[:, :-1])


def test_exit_grid_layout_tiles_and_marks(rng):
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    masks = rng.random((3, 32, 32)).astype(np.float32)
    names = ["circle", "square", "a_very_long_class_name_that_needs_shortening"]
    grid = viz.exit_grid(img, masks, pred=[0, 2, 1], conf=[0.9, 0.5, 0.2],
                         correct=[True, False, None], class_names=names, scale=4,
                         true_label=0, title="x.png (gradcam)")
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[1] >= 4 * 128 and grid.shape[0] >= 128
    # The second tile is exit 1's overlay, upscaled x4 by nearest neighbour; find it.
    tile = viz.show_cam_on_image(img.astype(np.float32) / 255, masks[0], use_rgb=True)
    big = cv2.resize(tile, (128, 128), interpolation=cv2.INTER_NEAREST)
    hits = [(y, x) for y in range(grid.shape[0] - 127) for x in range(130, 150)
            if np.array_equal(grid[y:y + 128, x:x + 128], big)]
    assert len(hits) == 1
    y, x = hits[0]
    assert tuple(grid[y - 1, x + 64]) == (0, 150, 0)  # green frame: exit 1 is right
    assert tuple(grid[y - 1, x + 64 + 2 * (128 + 6)]) == (255, 255, 255)  # unknown: no frame
    red = np.all(grid == (210, 0, 0), axis=-1)
    assert red[:, x + 128 + 6:x + 2 * (128 + 6)].sum() > 100  # exit 2: red frame and cross
    rows = viz.exit_grid(img, masks, pred=[0, 2, 1], conf=[0.9, 0.5, 0.2], class_names=names,
                         scale=None, extra_rows=[("hirescam", masks[::-1]), ("layercam", masks)])
    assert rows.shape[0] > 2 * grid.shape[0] - 40 and rows.shape[1] == grid.shape[1]
    with pytest.raises(ValueError, match="one entry per exit"):
        viz.exit_grid(img, masks, pred=[0], conf=[0.5], class_names=names)


def test_write_gallery_escapes_and_links_relatively(tmp_path: Path, rng):
    grid = (rng.random((20, 40, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a b_exits.png"), grid)
    entries = [{"name": "a b <1>", "grid": "a b_exits.png", "source": "/in/a b.png",
                "links": {"overlay": "a b_cam.png"},
                "rows": [{"exit": 1, "prediction": "circle", "confidence": 0.25,
                          "correct": True}, {"exit": 2, "prediction": "x&y", "correct": False}]}]
    path = viz.write_gallery(tmp_path, entries, {"method": "gradcam"},
                             errors=[("bad.png", "empty file (0 bytes)")], warning="untrained")
    text = path.read_text()
    assert path == tmp_path / "index.html"
    assert 'src="a%20b_exits.png"' in text and 'href="a%20b_cam.png"' in text
    assert html.escape("a b <1>") in text and "x&amp;y" in text and "<script" not in text
    assert "http" not in text.replace('name="viewport"', "")
    assert "bad.png" in text and "empty file" in text and "untrained" in text
    assert "&#10003;" in text and "&#10007;" in text and "0.250" in text

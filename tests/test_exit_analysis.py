"""jaxcam.studies.exit_analysis: the exit analysis on a tiny random MSD-Net and 32 procedural
images."""

from __future__ import annotations

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxcam
from jaxcam.metrics import (
    auc,
    curve_fractions,
    deletion_curve,
    insertion_curve,
    spearman_rank_correlation,
)
from jaxcam.studies.exit_analysis import (
    METRICS,
    analyze_exits,
    bootstrap_counts,
    bootstrap_means,
    compute,
    map_metrics,
    rank_agreement,
    summarise,
    write_report,
)
from msdnet_flax import MSDNet
from msdnet_flax.data import generate, normalize
from msdnet_flax.model.config import MSDNetConfig

N_IMAGES = 32


@pytest.fixture(scope="module")
def model() -> MSDNet:
    m = MSDNet(MSDNetConfig(data="cifar", num_classes=10, n_blocks=2, n_channels=4, base=1,
                            step=1, growth_rate=2), rngs=nnx.Rngs(0))
    m.eval()
    return m


@pytest.fixture(scope="module")
def data():
    return generate(N_IMAGES, seed=12345), generate(16, seed=12346)


@pytest.fixture(scope="module")
def report(model, data) -> dict:
    test, val = data
    return analyze_exits(model, test, batch_size=16, n_boot=200, key=jax.random.key(0),
                         val_dataset=val, faithfulness_images=16, scorecam_images=16, steps=8)


def _stats(report: dict):
    """Every summary of the report, with where it is."""
    yield "accuracy", report["accuracy"]
    for method, info in report["methods"].items():
        for metric, stats in info["per_exit"].items():
            yield f"{method}/{metric}", stats
        for which in ("next", "last"):
            yield f"{method}/agreement/{which}", info["agreement"][which]
    for kind, grouping in report["groupings"].items():
        for g in grouping["groups"]:
            yield f"{kind}/{g['label']}/accuracy", g["accuracy"]
            for method, values in g["methods"].items():
                for metric in ("pointing", "energy"):
                    yield f"{kind}/{g['label']}/{method}/{metric}", values[metric]


def test_report_sections_ranges_and_intervals(report):
    k = report["n_exits"]
    assert k == 2
    assert set(report["methods"]) == {"gradcam", "gradcamplusplus", "layercam", "scorecam"}
    assert set(report["groupings"]) == {"stop_exit", "difficulty"}
    for info in report["methods"].values():
        assert set(info["per_exit"]) == set(METRICS)
        assert len(info["agreement"]["next"]) == len(info["agreement"]["last"]) == k - 1
        assert np.asarray(info["agreement"]["matrix"]).shape == (k, k)
    assert report["methods"]["scorecam"]["n_images"] == 16
    assert report["methods"]["gradcam"]["n_faithfulness"] == 16
    assert any("ScoreCAM" in note for note in report["notes"])
    lower = {"agreement": -1.0}
    for where, stats in _stats(report):
        assert len(stats) in (k, k - 1), where
        for s in stats:
            if s["n"] == 0:
                assert s["mean"] is None
                continue
            lo_bound = next((v for key, v in lower.items() if key in where), 0.0)
            assert all(math.isfinite(s[f]) for f in ("mean", "lo", "hi")), where
            assert lo_bound - 1e-6 <= s["lo"] <= s["mean"] + 1e-9, (where, s)
            assert s["mean"] - 1e-9 <= s["hi"] <= 1 + 1e-6, (where, s)
    json.dumps(report, allow_nan=False)


def test_groupings_cover_every_image_once(report):
    for grouping in report["groupings"].values():
        assignment = np.asarray(grouping["assignment"])
        assert assignment.shape == (N_IMAGES,)
        n_groups = len(grouping["labels"])
        assert assignment.min() >= 0 and assignment.max() < n_groups
        counts = np.bincount(assignment, minlength=n_groups)
        assert counts.tolist() == grouping["counts"] == [g["count"] for g in grouping["groups"]]
        assert sum(grouping["counts"]) == N_IMAGES
    stop = report["groupings"]["stop_exit"]
    assert len(stop["counts"]) == report["n_exits"] and stop["thresholds"][-1] is None


def test_difficulty_groups_follow_the_data(report, data):
    grouping = report["groupings"]["difficulty"]
    d = data[0].difficulty
    edges = grouping["edges"]
    for g, members in enumerate(np.asarray(grouping["assignment"]) == g for g in range(3)):
        assert np.all(d[members] >= edges[g] - 1e-6) and np.all(d[members] <= edges[g + 1] + 1e-6)


def test_report_files_and_links(report, tmp_path):
    paths = write_report([report, report], ["split a", "split b"], tmp_path / "out",
                         {"model": "tiny random"})
    out = tmp_path / "out"
    for name in ("report.json", "report.html", "summary.md"):
        assert (out / name).stat().st_size > 0
    assert paths["figures"] and all(p.exists() and p.suffix == ".png" for p in paths["figures"])
    html = (out / "report.html").read_text()
    refs = re.findall(r"(?:src|href)='([^']+)'", html)
    assert refs and all((out / r).is_file() for r in refs), refs
    assert {p.name for p in paths["figures"]} <= set(refs)
    loaded = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in loaded["splits"]] == ["split a", "split b"]
    summary = (out / "summary.md").read_text()
    assert "gradcam" in summary and "exit 1" in summary


def test_maps_equal_to_masks_point_and_hold_all_energy(data):
    masks = data[0].masks
    values = map_metrics(jnp.stack([masks, masks]).astype(jnp.float32), masks)
    assert np.all(np.asarray(values["pointing"]) == 1.0)
    np.testing.assert_allclose(np.asarray(values["energy"]), 1.0, atol=1e-6)
    area = np.asarray(values["area_half_max"])
    np.testing.assert_allclose(area[0], masks.mean(axis=(1, 2)), atol=1e-6)
    # A mask as a map is flat on the object: its entropy is log(object pixels) / log(H W).
    expected = np.log(masks.sum(axis=(1, 2))) / np.log(masks[0].size)
    np.testing.assert_allclose(np.asarray(values["entropy"])[0], expected, atol=1e-5)


def test_bootstrap_is_vectorised_resampling():
    rng = np.random.default_rng(0)
    values = rng.random((3, 50))
    counts = bootstrap_counts(jax.random.key(1), 50, 400)
    assert counts.shape == (400, 50) and np.all(counts.sum(1) == 50)
    mean, ci = bootstrap_means(values, counts)
    direct = (counts @ values.T) / 50  # each resample's mean, rows of values as columns
    np.testing.assert_allclose(mean, values.mean(1))
    np.testing.assert_allclose(ci, np.percentile(direct, [2.5, 97.5], axis=0).T, atol=1e-12)
    constant = summarise(np.full((1, 20), 0.3), jax.random.key(2), 100)[0]
    assert constant["lo"] <= constant["mean"] <= constant["hi"]
    assert constant["hi"] - constant["lo"] < 1e-12 and constant["mean"] == pytest.approx(0.3)


def test_exit_scoring_matches_the_library_metrics(model, data):
    test = data[0]
    x = normalize(test.images[:16], test.mean, test.std)  # the shapes analyze_exits compiled
    t = jnp.broadcast_to(jnp.asarray(test.labels[:16]), (2, 16))
    scorer = compute.ExitScorer(model)
    maps, _ = compute.gradient_maps(model, x, t, "gradcam")
    deletion, insertion = compute.faithfulness(scorer, x, maps, t, steps=8)
    k = 1

    def prob(images):
        return jnp.take_along_axis(jax.nn.softmax(model(images)[k], -1), t[k][:, None], 1)[:, 0]

    fractions = curve_fractions(32 * 32, 8)
    np.testing.assert_allclose(deletion[k], auc(deletion_curve(prob, x, maps[k], steps=8),
                                                fractions), atol=1e-5)
    np.testing.assert_allclose(insertion[k], auc(insertion_curve(prob, x, maps[k], steps=8),
                                                 fractions), atol=1e-5)
    score = compute.scorecam_maps(scorer, x, t)
    ref = jaxcam.explain(model, x, method="scorecam", target_layer=model.exit_feature_path(k),
                         output_index=k, targets=t[k])
    np.testing.assert_allclose(score[k], ref, atol=1e-5)
    agree = rank_agreement(maps)
    np.testing.assert_allclose(agree[0, 1], spearman_rank_correlation(maps[0], maps[1]),
                               atol=1e-5)


def test_cli_parses_difficulty_pairs_and_documents_the_defaults(capsys):
    from jaxcam.cli import build_parser, main
    from jaxcam.cli.analyze import parse_splits as _splits
    from jaxcam.studies.exit_analysis import core

    args = build_parser().parse_args(["analyze-exits", "--difficulty", "0", "0.4", "0.6", "1"])
    assert _splits(args.difficulty) == [(0.0, 0.4), (0.6, 1.0)]
    with pytest.raises(ValueError):
        _splits([0.0, 0.4, 0.6])
    with pytest.raises(SystemExit):
        main(["analyze-exits", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag, value in (("--scorecam-images", core.DEFAULT_SCORECAM_IMAGES),
                        ("--faithfulness-images", core.DEFAULT_FAITHFULNESS_IMAGES),
                        ("--steps", core.DEFAULT_STEPS)):
        assert help_text.split(flag)[-1].split(")")[0].split("default ")[1].startswith(
            str(value)), flag

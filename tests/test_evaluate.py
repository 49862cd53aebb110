"""Anytime and budgeted evaluation: exact edge cases, exit counts, kalviny's loop, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from flax import nnx

from msdnet_flax import MSDNet, MSDNetConfig
from msdnet_flax.checkpoint import save_checkpoint
from msdnet_flax.data import generate, normalize
from msdnet_flax.evaluation.core import (
    DEFAULT_P,
    anytime,
    apply_thresholds,
    budgeted,
    exit_accuracy,
    exit_fractions,
    find_thresholds,
    main,
    predict,
)
from msdnet_flax.model.cost import cost
from msdnet_flax.training.config import TrainConfig

TINY = MSDNetConfig(data="cifar", num_classes=10, n_blocks=2, n_channels=8, base=1, step=1,
                    growth_rate=6)
FLOPS = [1_000_003, 2_500_009, 4_000_037, 7_100_101]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _random_case(rng: np.random.Generator, k: int = 4, n: int = 500, c: int = 10):
    logits = rng.normal(size=(k, n, c)) * rng.uniform(0.5, 3.0, size=(k, 1, 1))
    labels = rng.integers(0, c, size=n)
    probs = _softmax(logits)
    return logits, labels, probs.max(-1), probs.argmax(-1) == labels[None]


def test_infinite_thresholds_reproduce_single_exits(rng):
    logits, labels, conf, correct = _random_case(rng)
    acc = exit_accuracy(logits, labels)
    last = apply_thresholds(conf, correct, np.array([np.inf] * 3 + [0.5]), FLOPS)
    assert last["accuracy"] == acc[-1] and last["flops"] == FLOPS[-1]
    assert last["exit_counts"] == [0, 0, 0, 500]
    first = apply_thresholds(conf, correct, np.full(4, -np.inf), FLOPS)
    assert first["accuracy"] == acc[0] and first["flops"] == FLOPS[0]
    assert first["exit_counts"] == [500, 0, 0, 0]


@pytest.mark.parametrize("p", [0.3, 1.0, 1.7])
def test_exit_counts_follow_the_fractions(rng, p):
    k, n = 4, 1000
    conf = np.stack([rng.permutation(n) for _ in range(k)]) / n + 0.0005  # distinct values
    q = exit_fractions(p, k)
    np.testing.assert_allclose(q.sum(), 1.0)
    np.testing.assert_allclose(q[1:] / q[:-1], p)
    t = find_thresholds(conf, q)
    counts = apply_thresholds(conf, np.ones_like(conf, bool), t, FLOPS)["exit_counts"]
    expected = [math.floor(n * qk + 1e-9) for qk in q[:-1]]
    assert counts == expected + [n - sum(expected)]
    assert t[-1] == -np.inf


def _kalviny(val_probs, val_labels, test_probs, test_labels, p, flops):
    """kalviny's adaptive_inference.py, sample by sample (the reference)."""
    k_exits, n, _ = val_probs.shape
    max_preds, argmax_preds = val_probs.max(2), val_probs.argmax(2)
    sorted_idx = np.argsort(-max_preds, axis=1, kind="stable")
    filtered = np.zeros(n)
    t = np.full(k_exits, 1e8)
    q = p ** np.arange(1, k_exits + 1)
    q = q / q.sum()
    for k in range(k_exits - 1):
        count, out_n = 0, math.floor(n * q[k] + 1e-9)
        for i in range(n):
            ori = sorted_idx[k][i]
            if filtered[ori] == 0:
                count += 1
                if count == out_n:
                    t[k] = max_preds[k][ori]
                    break
        filtered += max_preds[k] >= t[k]
    t[-1] = -1e8
    max_preds, argmax_preds = test_probs.max(2), test_probs.argmax(2)
    acc, exp_flops = 0, 0.0
    for i in range(test_probs.shape[1]):
        for k in range(k_exits):
            if max_preds[k][i] >= t[k]:
                acc += int(argmax_preds[k][i] == test_labels[i])
                exp_flops += flops[k]
                break
    m = test_probs.shape[1]
    return t, acc / m, exp_flops / m


def test_budgeted_matches_kalviny_loop(rng):
    val_logits, val_labels, _, _ = _random_case(rng, k=3, n=300)
    test_logits, test_labels, _, _ = _random_case(rng, k=3, n=200)
    flops = FLOPS[:3]
    ps = [0.05, 0.5, 1.0, 1.5, 1.95]
    rows = budgeted(val_logits, val_labels, test_logits, test_labels, flops, ps=ps)
    for p, row in zip(ps, rows, strict=True):
        t, acc, fl = _kalviny(_softmax(val_logits), val_labels, _softmax(test_logits),
                              test_labels, p, flops)
        ours = np.where(np.isinf(row["thresholds"]), np.sign(row["thresholds"]) * 1e8,
                        row["thresholds"])
        np.testing.assert_allclose(ours, t, rtol=1e-12)
        assert row["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert row["flops"] == pytest.approx(fl, rel=1e-12)
        assert sum(row["exit_counts"]) == 200


def test_budgeted_default_grid(rng):
    val = _random_case(rng, k=4, n=400)
    test = _random_case(rng, k=4, n=400)
    rows = budgeted(val[0], val[1], test[0], test[1], FLOPS)
    assert [r["p"] for r in rows] == pytest.approx(list(DEFAULT_P))
    assert len(rows) == 39 and DEFAULT_P[0] == pytest.approx(0.05)
    assert all(FLOPS[0] <= r["flops"] <= FLOPS[-1] for r in rows)
    assert rows[0]["flops"] < rows[-1]["flops"]  # small p: most samples leave early


def test_predict_and_anytime(rng):
    model = MSDNet(TINY, rngs=nnx.Rngs(int(rng.integers(1 << 30))))
    data = generate(37, seed=int(rng.integers(1 << 30)))
    logits = predict(model, data, 32)
    assert logits.shape == (TINY.n_blocks, 37, TINY.num_classes)
    model.eval()
    direct = np.stack(nnx.jit(lambda m, x: m(x))(model, normalize(data.images, data.mean,
                                                                   data.std)))
    np.testing.assert_allclose(logits, direct, rtol=1e-4, atol=1e-5)
    rows = anytime(logits, data.labels, TINY)
    assert [r["flops"] for r in rows] == [c.flops for c in cost(TINY)]
    np.testing.assert_array_equal([r["accuracy"] for r in rows],
                                  exit_accuracy(logits, data.labels))


def test_command_line_on_a_checkpoint(tmp_path, capsys):
    model = MSDNet(TINY, rngs=nnx.Rngs(0))
    ref = generate(8, seed=0)
    cfg = TrainConfig(model=TINY, n_train=64, n_val=48, n_test=40, out_dir=str(tmp_path))
    save_checkpoint(tmp_path / "checkpoints", model, step=7, epoch=1, mean=ref.mean,
                    std=ref.std, class_names=ref.class_names, train_config=cfg)
    result = main([str(tmp_path), "--batch-size", "32"])
    out = capsys.readouterr().out
    assert "anytime prediction" in out and "budgeted batch classification" in out
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["step"] == 7 and saved["n_test"] == 40 and saved["n_thresholds"] == 48
    assert len(saved["anytime"]) == TINY.n_blocks and len(saved["budgeted"]) == 39
    assert result["anytime"] == saved["anytime"]
    for name in ("anytime.png", "budgeted.png"):
        assert (tmp_path / "eval" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

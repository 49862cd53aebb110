"""The one-shot ``explain``/``explain_exits`` reuse a model's split, and never its stale weights.

``jaxcam.adapters._split_cache`` keeps, per NNX model object, the hashed structure and the
model's own Variables; every call re-reads their values and re-checks the structure. Each test
changes the model in one way a user does (weights in place, ``nnx.update``, a replaced
submodule, an added attribute, train/eval) and checks the one-shot maps against a freshly built
:class:`jaxcam.ExitExplainer` / :class:`jaxcam.Explainer` on the changed model (the reference:
it splits the model from scratch), and that they differ from the maps before the change.
"""

from __future__ import annotations

import gc

import jax
import numpy as np
import pytest
from flax import nnx

import jaxcam
from jaxcam.adapters import _split_cache
from jaxcam.adapters.nnx import split_model
from msdnet_flax.model.config import MSDNetConfig
from msdnet_flax.model.msdnet import MSDNet

TINY = MSDNetConfig(data="cifar", num_classes=10, n_blocks=3, n_channels=4, base=1, step=1,
                    growth_rate=2)


@pytest.fixture
def seed() -> int:
    s = int(np.random.default_rng().integers(2**31))
    print(f"seed {s}")
    return s


def _model(seed: int) -> MSDNet:
    model = MSDNet(TINY, rngs=nnx.Rngs(seed))
    model.eval()
    return model


def _images(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 32, 32, 3)).astype(np.float32)


def _reference(model: MSDNet, x: np.ndarray) -> np.ndarray:
    """All exits' maps from an explainer built now: a split from scratch."""
    _split_cache.clear()
    return np.asarray(jaxcam.ExitExplainer(model)(x))


def _perturb(seed: int, leaf: jax.Array) -> jax.Array:
    noise = np.random.default_rng(seed).standard_normal(leaf.shape).astype(np.float32)
    return leaf + 0.5 * jax.numpy.asarray(noise) * (1 + jax.numpy.abs(leaf))


def test_second_call_reuses_the_structure_and_reads_current_weights(seed):
    model, x = _model(seed), _images(seed + 1)
    frozen1, leaves1 = split_model(model)
    frozen2, leaves2 = split_model(model)
    assert frozen2 is frozen1  # hashed once
    g, state = nnx.split(model)
    expected = jax.tree.leaves(state)
    assert len(leaves2) == len(expected) and all(a is b for a, b in zip(leaves2, expected,
                                                                           strict=True))
    first = np.asarray(jaxcam.explain_exits(model, x))
    np.testing.assert_array_equal(first, _reference(model, x))


def test_weights_changed_in_place_are_seen(seed):
    model, x = _model(seed), _images(seed + 1)
    before = np.asarray(jaxcam.explain_exits(model, x))
    # As an optimiser step does: every parameter's value replaced, the Variables kept.
    for i, var in enumerate(jax.tree.leaves(nnx.state(model, nnx.Param),
                                            is_leaf=lambda v: isinstance(v, nnx.Variable))):
        var[...] = _perturb(seed + i, var[...])
    after = np.asarray(jaxcam.explain_exits(model, x))
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_array_equal(after, _reference(model, x))


def test_nnx_update_is_seen(seed):
    model, x = _model(seed), _images(seed + 1)
    before = np.asarray(jaxcam.explain_exits(model, x))
    other = _model(seed + 7)
    nnx.update(model, nnx.state(other))
    after = np.asarray(jaxcam.explain_exits(model, x))
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_array_equal(after, _reference(other, x))


def test_replaced_submodule_is_seen(seed):
    model, x = _model(seed), _images(seed + 1)
    frozen1, _ = split_model(model)
    before = np.asarray(jaxcam.explain_exits(model, x))
    # A new classifier of the same structure: the old Variables are no longer the model's.
    model.classifier[-1] = _model(seed + 3).classifier[-1]
    after = np.asarray(jaxcam.explain_exits(model, x))
    assert np.abs(after[-1] - before[-1]).max() > 1e-3
    np.testing.assert_array_equal(after[:-1], before[:-1])
    np.testing.assert_array_equal(after, _reference(model, x))
    _split_cache.clear()
    assert split_model(model)[0] == frozen1  # same structure: the compilation is shared


def test_structural_change_gives_a_new_structure(seed):
    model = _model(seed)
    frozen1, _ = split_model(model)
    model.train()  # BatchNorm's use_running_average: part of the graph definition
    frozen2, _ = split_model(model)
    assert frozen2 is not frozen1 and frozen2 != frozen1
    model.eval()
    assert split_model(model)[0] == frozen1
    model.extra = nnx.Param(jax.numpy.ones(3))  # a new variable: one more leaf
    frozen3, leaves3 = split_model(model)
    assert len(leaves3) == len(jax.tree.leaves(nnx.state(model)))
    assert frozen3 != frozen1


def test_layer_explain_one_shot_sees_new_weights(seed):
    model, x = _model(seed), _images(seed + 1)
    layer = model.exit_feature_path(TINY.n_blocks - 1)
    kw = {"target_layer": layer, "output_index": TINY.n_blocks - 1}
    before = np.asarray(jaxcam.explain(model, x, **kw))
    nnx.update(model, nnx.state(_model(seed + 5)))
    after = np.asarray(jaxcam.explain(model, x, **kw))
    _split_cache.clear()
    fresh = np.asarray(jaxcam.Explainer(model, **kw)(x))
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_array_equal(after, fresh)


def test_cache_does_not_keep_models_alive(seed):
    model = _model(seed)
    split_model(model)
    assert model in _split_cache._cache
    n = len(_split_cache._cache)
    del model
    gc.collect()
    assert len(_split_cache._cache) == n - 1

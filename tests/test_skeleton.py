"""``jaxcam.extend.skeleton.abstract_split``: the graph and shapes ``nnx.eval_shape`` with a real
``nnx.Rngs`` gives, for both model packages, without falling back to it."""

from __future__ import annotations

import jax
import pytest
from flax import nnx

from efficientnet_flax import EfficientNetLite0
from jaxcam.extend import skeleton
from msdnet_flax import MSDNet, MSDNetConfig


def _builds() -> dict:
    return {
        "efficientnet-lite0": lambda rngs: EfficientNetLite0(1000, rngs=rngs),
        "msdnet": lambda rngs: MSDNet(MSDNetConfig(), rngs=rngs),
    }


@pytest.mark.parametrize("name", sorted(_builds()))
def test_abstract_split_is_eval_shape_without_the_rng_counter(name, monkeypatch):
    build = _builds()[name]
    graph_ref, state_ref = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))

    def no_fallback(*_: object, **__: object) -> None:
        raise AssertionError("abstract_split fell back to nnx.Rngs")

    # The fast path must work for our models: a fallback would be as slow as before.
    monkeypatch.setattr(skeleton.nnx, "Rngs", no_fallback)
    graph, state = skeleton.abstract_split(build)
    assert graph == graph_ref
    assert jax.tree.structure(state) == jax.tree.structure(state_ref)
    shapes = jax.tree.map(lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype), state, state_ref)
    assert all(jax.tree.leaves(shapes))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(state))


def test_a_module_wanting_more_of_its_rngs_falls_back():
    class Noisy(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.linear = nnx.Linear(3, 4, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs.fork())

    graph, state = skeleton.abstract_split(lambda rngs: Noisy(rngs))
    graph_ref, _ = nnx.split(nnx.eval_shape(lambda: Noisy(nnx.Rngs(0))))
    assert graph == graph_ref

"""The method registry: a layer CAM method registered from this file reaches every entry point.

The method is a tiny pure function (the channel mean of activations times gradients), checked
against a hand-written reference through ``jaxcam.explain``, ``jaxcam.explain_exits`` (a small
MSD-Net), the pytorch-grad-cam-style classes of :mod:`jaxcam.compat` and ``jaxcam methods``.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxcam
from jaxcam import registry
from jaxcam.postprocess import postprocess
from jaxcam.registry import Method
from msdnet_flax import MSDNet, MSDNetConfig

NAME = "meanproductcam"
SIZE = 16
N_CLASSES = 5


def mean_product_cam(activations: jax.Array, gradients: jax.Array, *,
                     eigen_smooth: bool = False, scale: float = 1.0) -> jax.Array:
    """The channel mean of activations times gradients (scaled)."""
    del eigen_smooth
    return scale * jnp.mean(activations * gradients, axis=-1)


METHOD = Method(name=NAME, kind="activation_gradient", fn=mean_product_cam,
                summary="channel mean of activations times gradients (a test's method)",
                paper="this test file", multi_exit=True, class_name="MeanProductCAM",
                options=("scale",))


@pytest.fixture
def method() -> Iterator[Method]:
    """The test method, registered for one test and unregistered after it."""
    with registry.registered(METHOD) as m:
        yield m
    assert NAME not in jaxcam.METHODS


class Net(nnx.Module):
    """conv (stride 2) -> ReLU -> features -> mean -> dense."""

    def __init__(self, rngs: nnx.Rngs):
        self.features = nnx.Conv(3, 6, (3, 3), strides=2, rngs=rngs)
        self.head = nnx.Linear(6, N_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(jnp.mean(jax.nn.relu(self.features(x)), axis=(1, 2)))


def reference(model: Net, x: np.ndarray, classes: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The method by hand: the conv's output and the gradient of the class logits w.r.t. it."""
    acts = model.features(jnp.asarray(x))

    def score(a: jax.Array) -> jax.Array:
        logits = model.head(jnp.mean(jax.nn.relu(a), axis=(1, 2)))
        return jnp.sum(logits[jnp.arange(len(classes)), classes])

    grads = jax.grad(score)(acts)
    raw = scale * np.mean(np.asarray(acts) * np.asarray(grads), axis=-1)
    return np.asarray(postprocess(raw, (SIZE, SIZE)))


@pytest.fixture
def data() -> tuple[Net, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, SIZE, SIZE, 3)).astype(np.float32)
    return Net(nnx.Rngs(0)), x, np.array([0, 3, 1])


def test_registered_method_is_listed_everywhere(method):
    assert NAME in jaxcam.METHODS and NAME in jaxcam.EXIT_METHODS
    assert registry.get("Mean-Product_CAM") is method
    assert registry.all_methods()[-1] is method
    assert NAME in registry.names(kind="activation_gradient", multi_exit=True)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Method(name=NAME, kind="input", fn=mean_product_cam, summary="",
                                 paper=""))


def test_explain_runs_a_registered_method(method, data):
    model, x, classes = data
    got = jaxcam.explain(model, x, target_layer="features", targets=classes, method=NAME)
    np.testing.assert_allclose(np.asarray(got), reference(model, x, classes), atol=1e-5)
    scaled = jaxcam.explain(model, x, target_layer="features", targets=classes, method=NAME,
                            normalize=False, resize=False, scale=-2.0)
    raw = jaxcam.explain(model, x, target_layer="features", targets=classes, method=NAME,
                         normalize=False, resize=False, relu=False)
    np.testing.assert_allclose(np.asarray(scaled), np.maximum(-2.0 * np.asarray(raw), 0.0),
                               atol=1e-5)
    with pytest.raises(TypeError, match="unknown option.*bad.*scale"):
        jaxcam.explain(model, x, target_layer="features", method=NAME, bad=1)


def test_pgc_style_classes_run_a_registered_method(method, data):
    model, x, classes = data
    expected = reference(model, x, classes)
    cls = jaxcam.compat.cam_class(NAME)
    assert cls.__name__ == "MeanProductCAM" and jaxcam.compat.MeanProductCAM is cls
    with cls(model, target_layers=["features"]) as cam:
        got = cam(x, targets=[jaxcam.ClassifierOutputTarget(int(c)) for c in classes])
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)
    base = jaxcam.BaseCAM(model, target_layers="features", method=NAME)
    np.testing.assert_allclose(np.asarray(base(x, targets=classes)), expected, atol=1e-5)


def test_explain_exits_runs_a_registered_method(method):
    config = MSDNetConfig(data="cifar", num_classes=10, n_blocks=3, n_channels=4, base=1,
                          step=1, growth_rate=2)
    model = MSDNet(config, rngs=nnx.Rngs(0))
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    targets = np.array([[1, 2], [3, 4], [5, 6]])
    maps = jaxcam.explain_exits(model, x, targets=targets, method=NAME)
    assert maps.shape == (3, 2, 32, 32)
    for k in range(3):
        one = jaxcam.explain(model, x, target_layer=model.exit_feature_path(k), output_index=k,
                             targets=targets[k], method=NAME)
        np.testing.assert_allclose(np.asarray(maps[k]), np.asarray(one), atol=1e-5)


def test_jaxcam_methods_lists_a_registered_method(method, capsys):
    from jaxcam import cli

    assert cli.main(["methods"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if NAME in line]
    assert len(lines) == 1 and "a test's method" in lines[0]


def test_unregistered_method_is_gone(data):
    model, x, _ = data
    with registry.registered(METHOD):
        pass
    assert NAME not in jaxcam.METHODS
    with pytest.raises(ValueError, match=f"unknown method '{NAME}'"):
        jaxcam.explain(model, x, target_layer="features", method=NAME)
    with pytest.raises(ValueError, match="unknown method"):
        registry.unregister(NAME)


def test_method_records_are_checked():
    with pytest.raises(ValueError, match="kind"):
        Method(name="x", kind="other", fn=mean_product_cam, summary="", paper="")
    with pytest.raises(ValueError, match="lower case"):
        Method(name="MyCAM", kind="input", fn=mean_product_cam, summary="", paper="")
    with pytest.raises(ValueError, match="multi_exit"):
        Method(name="x", kind="input", fn=mean_product_cam, summary="", paper="",
               multi_exit=True)
    with pytest.raises(TypeError, match="unknown Method attribute"):
        registry.names(colour="red")


def test_builtin_methods_have_summaries_and_papers():
    for m in registry.all_methods():
        assert m.summary and m.paper, m.name
    assert registry.names(uses_gradients=False, kind="activation_gradient") == (
        "eigencam", "fem", "kpcacam", "randomcam")
    assert set(registry.names(needs_layer=False)) == {
        "saliency", "guidedbackprop", "smoothgrad", "integratedgradients", "fullgrad"}

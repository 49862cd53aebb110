"""PyTorch models through torchax and Keras 3 models on JAX, explained without surgery.

* torchvision's ResNet-18 (random weights, eval) run as JAX through torchax: jaxcam's Grad-CAM,
  HiResCAM and LayerCAM at ``layer3`` and ``layer4`` (by dotted name and as module objects, one
  at a time and both at once) against pytorch-grad-cam 1.5.7 on the same torch model, 2 images
  of 96x96 px (NCHW, PyTorch's layout, as pytorch-grad-cam takes them).
* Keras's ResNet50 (``weights=None``, 96x96 input, 10 classes) at ``conv4_block6_out`` and
  ``conv5_block3_out`` against a hand-written ``jax.grad`` Grad-CAM (and LayerCAM / HiResCAM) on
  the model split into two Keras sub-models at the layer.
* The torchax import shim (:mod:`jaxcam.adapters._torchax_compat`), ``Explainer.update`` with
  new weights (no recompilation), layer objects as ``target_layers`` (PyTorch, Keras, NNX), and
  the errors for unknown layers, foreign layer objects, images in the wrong layout and a Keras on
  another backend.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is first imported

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from _compiles import COMPILE_EVENTS, compilations  # noqa: F401
from _seeds import fresh_seed
from flax import nnx  # noqa: E402
from pytorch_grad_cam import GradCAM, HiResCAM, LayerCAM  # noqa: E402
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

import jaxcam  # noqa: E402
from jaxcam.adapters._torchax_compat import MISSING_OPS, import_torchax  # noqa: E402

# Keras's get_weights/set_weights call np.array(variable) the NumPy 1 way.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PGC = {"gradcam": GradCAM, "hirescam": HiResCAM, "layercam": LayerCAM}
JAXCAM = {"gradcam": jaxcam.GradCAM, "hirescam": jaxcam.HiResCAM, "layercam": jaxcam.LayerCAM}
SIZE, BATCH, CLASSES = 96, 2, 10
TOL = 1e-4


def _seed() -> int:
    return fresh_seed("weights")




def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (an import that must be the first of its process)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


# ---------------------------------------------------------------------------------------------
# 1. torchax with torch 2.14: the import shim
# ---------------------------------------------------------------------------------------------

def test_plain_torchax_import_fails_with_this_torch():
    """Why the shim exists: torchax 0.0.13 indexes operators torch 2.14 no longer has."""
    result = _run("import torchax")
    assert result.returncode != 0
    assert "AttributeError" in result.stderr and "has no overload name" in result.stderr, (
        result.stderr[-2000:])


def test_torchax_shim_imports_restores_torch_and_records_only_missing_ops():
    result = _run("""
        import torch, torch._ops as ops
        before = (ops.OpOverloadPacket.__getattr__, ops._OpNamespace.__getattr__)
        from jaxcam.adapters._torchax_compat import MISSING_OPS, import_torchax
        torchax = import_torchax()
        assert (ops.OpOverloadPacket.__getattr__, ops._OpNamespace.__getattr__) == before
        assert "torchax.ops.jaten" in __import__("sys").modules  # the lowerings are registered
        print("\\n".join(MISSING_OPS))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    names = result.stdout.split()
    assert "aten.prod.dim_Dimname" in names and "aten.cholesky" in names, names
    assert len(names) == len(set(names))
    for name in names:  # every placeholder stands for an operator this torch really lacks
        namespace, op, *overload = name.split(".")
        packet = getattr(getattr(torch.ops, namespace), op, None)
        assert packet is None or (overload and not hasattr(packet, overload[0])), name
    # In this process the shim ran too (imported by the fixtures or here): same names.
    import_torchax()
    assert set(MISSING_OPS) == set(names)


def test_missing_op_placeholder_is_inert():
    from jaxcam.adapters._torchax_compat import MissingOp

    op = MissingOp("aten.qr")
    assert {op: 1}[op] == 1  # hashable: torchax keys its tables by operators
    with pytest.raises(NotImplementedError, match="aten.qr.default does not exist in torch"):
        op.default(torch.zeros(2, 2))


def test_torchax_runs_resnet18_like_torch(resnet, rng):
    torchax = import_torchax()
    model, _ = resnet
    weights, fn = torchax.extract_jax(model)
    x = rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(fn(weights, (jnp.asarray(x),))), expected, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# 2. torchvision ResNet-18 against pytorch-grad-cam
# ---------------------------------------------------------------------------------------------

def _resnet18(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=CLASSES).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def resnet():
    seed = _seed()
    return _resnet18(seed), seed


def _images(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32)


def pgc_maps(method: str, model: torch.nn.Module, layers: list, x: np.ndarray,
             classes: list[int]) -> np.ndarray:
    # The context releases pytorch-grad-cam's hooks, which must not fire in jaxcam's traces.
    with PGC[method](model=model, target_layers=layers) as cam:
        return cam(input_tensor=torch.from_numpy(x),
                   targets=[ClassifierOutputTarget(int(c)) for c in classes])


@pytest.mark.parametrize("method", sorted(PGC))
def test_resnet18_maps_equal_pytorch_grad_cam(resnet, rng, method):
    model, _ = resnet
    x, classes = _images(rng), [int(c) for c in rng.integers(0, CLASSES, BATCH)]
    cases = {"layer3 (object)": ([model.layer3], JAXCAM[method](model, [model.layer3])),
             "layer4 (name)": ([model.layer4], JAXCAM[method](model, "layer4")),
             "layer3 + layer4": ([model.layer3, model.layer4],
                                 JAXCAM[method](model, target_layers=[model.layer3,
                                                                      model.layer4]))}
    for name, (layers, cam) in cases.items():
        got = np.asarray(cam(x, classes))
        expected = pgc_maps(method, model, layers, x, classes)
        assert got.shape == (BATCH, SIZE, SIZE), name
        print(f"{method} at {name}: max |jaxcam - pytorch-grad-cam| = "
              f"{np.abs(got - expected).max():.2e}")
        np.testing.assert_allclose(got, expected, atol=TOL, err_msg=f"{method} at {name}")


def test_resnet18_inner_layer_by_dotted_name_and_top_class(resnet, rng):
    model, _ = resnet
    x = _images(rng)
    with torch.no_grad():
        top = model(torch.from_numpy(x)).argmax(-1).tolist()
    got = jaxcam.explain(model, x, target_layer="layer4.0.conv2")  # targets: the top class
    expected = pgc_maps("gradcam", model, [model.layer4[0].conv2], x, top)
    np.testing.assert_allclose(np.asarray(got), expected, atol=TOL)
    with compilations() as seen:  # explain again, new images: the compiled function is reused
        jaxcam.explain(model, _images(rng), target_layer="layer4.0.conv2").block_until_ready()
    assert seen == [], seen


class _ChannelsLastInput(torch.nn.Module):
    """A PyTorch model fed NHWC images: it permutes them for its channels-first body."""

    def __init__(self, body: torch.nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.permute(0, 3, 1, 2))


def test_torch_model_fed_nhwc_images_with_layout_option(resnet, rng):
    model, _ = resnet
    x, classes = _images(rng), [1, 2]
    nchw = jaxcam.explain(model, x, target_layer="layer3", targets=classes)
    wrapped = _ChannelsLastInput(model)
    nhwc = jaxcam.explain(wrapped, np.transpose(x, (0, 2, 3, 1)), target_layer="body.layer3",
                          targets=classes, layout="NHWC",
                          reshape_transform=jaxcam.reshape.channels_first())
    assert nhwc.shape == (BATCH, SIZE, SIZE)
    np.testing.assert_allclose(np.asarray(nhwc), np.asarray(nchw), atol=1e-5)


def test_resnet18_explainer_update_takes_new_weights_without_recompiling(resnet, rng):
    model, seed = resnet
    x, classes = _images(rng), [int(c) for c in rng.integers(0, CLASSES, BATCH)]
    explainer = jaxcam.Explainer(model, target_layer=[model.layer3, model.layer4])
    before = np.asarray(explainer(x, classes))
    other = _resnet18(seed + 1)
    with compilations() as seen:
        explainer.update(other)
        after = np.asarray(explainer(x, classes))
        explainer.update(variables=model.state_dict())
        again = np.asarray(explainer(x, classes))
    assert seen == [], seen
    np.testing.assert_allclose(after, pgc_maps("gradcam", other, [other.layer3, other.layer4],
                                               x, classes), atol=TOL)
    np.testing.assert_allclose(again, before, atol=1e-6)
    assert np.abs(after - before).max() > 0.05  # the new weights were used
    with pytest.raises(ValueError, match="build a new explainer"):
        explainer.update(torchvision.models.resnet34(num_classes=CLASSES))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        explainer.update(np.zeros(3))


def test_resnet18_in_training_mode_is_explained_in_eval_mode(resnet, rng):
    model, _ = resnet
    x, classes = _images(rng), [4, 5]
    expected = np.asarray(jaxcam.explain(model, x, target_layer="layer3", targets=classes))
    model.train()
    try:
        got = np.asarray(jaxcam.explain(model, x, target_layer="layer3", targets=classes))
        assert model.training and model.layer3[0].bn1.training  # its own flags restored
    finally:
        model.eval()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_torch_bad_layers_and_images(resnet, rng):
    model, _ = resnet
    x = _images(rng)
    with pytest.raises(ValueError, match=r"(?s)'layer5' does not exist.*layer3\n.*layer4"):
        jaxcam.explain(model, x, target_layer="layer5")
    foreign = torchvision.models.resnet18()
    with pytest.raises(ValueError, match="not a submodule of this ResNet"):
        jaxcam.GradCAM(model, target_layers=[foreign.layer3])(x)
    with pytest.raises(ValueError, match="no spatial map"):
        jaxcam.explain(model, x, target_layer="fc")
    with pytest.raises(ValueError, match="look NHWC"):
        jaxcam.explain(model, np.transpose(x, (0, 2, 3, 1)), target_layer="layer3")


# ---------------------------------------------------------------------------------------------
# 3. Keras ResNet50 against a hand-written jax.grad reference
# ---------------------------------------------------------------------------------------------

KERAS_LAYERS = ("conv4_block6_out", "conv5_block3_out")


@pytest.fixture(scope="module")
def kmodel():
    keras.utils.set_random_seed(_seed() % 2**31)
    return keras.applications.ResNet50(weights=None, input_shape=(SIZE, SIZE, 3),
                                       classes=CLASSES)


def keras_reference(model, layer_names, method, x, classes):
    """pytorch-grad-cam's recipe by hand: the model split into two Keras sub-models at each
    layer, ``jax.grad`` of the summed target logits with respect to the layer's output, the
    method's weighting, then pytorch-grad-cam's own scaling and multi-layer aggregation."""
    per_layer = []
    for name in layer_names:
        layer = model.get_layer(name)
        features = keras.Model(model.input, layer.output)
        head = keras.Model(layer.output, model.output)
        a = features(x, training=False)

        def score(t, head=head):
            return jnp.sum(head(t, training=False)[jnp.arange(len(classes)),
                                                   jnp.asarray(classes)])

        g = jax.grad(score)(a)
        a, g = np.asarray(a, np.float64), np.asarray(g, np.float64)
        if method == "gradcam":
            cam = np.einsum("bhwc,bc->bhw", a, g.mean(axis=(1, 2)))
        elif method == "hirescam":
            cam = (a * g).sum(-1)
        else:  # layercam
            cam = (a * np.maximum(g, 0)).sum(-1)
        per_layer.append(scale_cam_image(np.maximum(cam, 0), (x.shape[2], x.shape[1]))[:, None])
    # pytorch-grad-cam aggregates even one layer: ReLU, mean, min-max again.
    return scale_cam_image(np.mean(np.maximum(np.concatenate(per_layer, 1), 0), axis=1))


def _keras_images(rng):
    return rng.standard_normal((BATCH, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize("layer", KERAS_LAYERS)
def test_keras_resnet50_gradcam_at_a_named_layer(kmodel, rng, layer):
    x, classes = _keras_images(rng), [int(c) for c in rng.integers(0, CLASSES, BATCH)]
    got = np.asarray(jaxcam.explain(kmodel, x, target_layer=layer, targets=classes))
    assert got.shape == (BATCH, SIZE, SIZE)
    expected = keras_reference(kmodel, [layer], "gradcam", x, classes)
    print(f"keras gradcam at {layer}: max |jaxcam - reference| = "
          f"{np.abs(got - expected).max():.2e}")
    np.testing.assert_allclose(got, expected, atol=TOL)


@pytest.mark.parametrize("method", sorted(JAXCAM))
def test_keras_resnet50_two_layer_objects_at_once(kmodel, rng, method):
    x, classes = _keras_images(rng), [int(c) for c in rng.integers(0, CLASSES, BATCH)]
    layers = [kmodel.get_layer(name) for name in KERAS_LAYERS]
    got = np.asarray(JAXCAM[method](kmodel, target_layers=layers)(x, classes))
    assert got.shape == (BATCH, SIZE, SIZE)
    expected = keras_reference(kmodel, KERAS_LAYERS, method, x, classes)
    print(f"keras {method} at both layers: max |jaxcam - reference| = "
          f"{np.abs(got - expected).max():.2e}")
    np.testing.assert_allclose(got, expected, atol=TOL)
    for layer in layers:  # the taps are gone: the layers call their own class's call again
        assert "call" not in vars(layer)


def test_keras_explainer_update_takes_new_weights_without_recompiling(kmodel, rng):
    x, classes = _keras_images(rng), [int(c) for c in rng.integers(0, CLASSES, BATCH)]
    layer = KERAS_LAYERS[0]
    explainer = jaxcam.Explainer(kmodel, target_layer=layer)
    before = np.asarray(explainer(x, classes))
    # Raw maps too: a normalised map can be all zero for both weights (every weighted channel
    # sum negative under the ReLU), which would not show whether the new weights were used.
    raw = jaxcam.Explainer(kmodel, target_layer=layer, relu=False, normalize=False)
    raw_before = np.asarray(raw(x, classes))
    old = kmodel.get_weights()
    # New weights: trainable ones rescaled; BatchNorm's moving variance kept positive.
    new = [w * rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in old]
    try:
        kmodel.set_weights(new)
        np.testing.assert_allclose(np.asarray(explainer(x, classes)), before, atol=1e-6)
        with compilations() as seen:
            explainer.update(kmodel)  # the same model, "trained further"
            after = np.asarray(explainer(x, classes))
            raw.update(kmodel)
            raw_after = np.asarray(raw(x, classes))
        expected = keras_reference(kmodel, [layer], "gradcam", x, classes)
    finally:
        kmodel.set_weights(old)
    assert seen == [], seen
    np.testing.assert_allclose(after, expected, atol=TOL)
    assert np.abs(raw_after - raw_before).max() > 1e-2 * np.abs(raw_before).max() > 0
    values = ([v.value for v in kmodel.trainable_variables],
              [v.value for v in kmodel.non_trainable_variables])
    with compilations() as seen:
        explainer.update(variables=values)
        np.testing.assert_allclose(np.asarray(explainer(x, classes)), before, atol=1e-6)
    assert seen == [], seen
    with pytest.raises(ValueError, match="build a new explainer"):
        explainer.update(variables=(values[0][:-1], values[1]))


def test_keras_bad_layers(kmodel, rng):
    x = _keras_images(rng)
    with pytest.raises(ValueError, match=r"(?s)'conv9_block1_out' does not exist.*"
                                         r"conv4_block6_out"):
        jaxcam.explain(kmodel, x, target_layer="conv9_block1_out")
    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="not a layer of this model"):
        jaxcam.GradCAM(kmodel, target_layers=[other.layers[0]])(x)


def test_keras_on_another_backend_is_a_clear_error():
    result = _run("""
        import keras, numpy as np, jaxcam
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="c"),
                                  keras.layers.GlobalAveragePooling2D()])
        try:
            jaxcam.explain(model, np.ones((1, 8, 8, 3), np.float32), target_layer="c")
        except RuntimeError as err:
            print(err)
    """, KERAS_BACKEND="torch")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'torch' backend" in result.stdout and "KERAS_BACKEND=jax" in result.stdout


# ---------------------------------------------------------------------------------------------
# 4. NNX submodules as target_layers
# ---------------------------------------------------------------------------------------------

class _NnxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.stem = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.blocks = nnx.List([nnx.Conv(8, 8, (3, 3), strides=2, rngs=rngs) for _ in range(2)])
        self.head = nnx.Linear(8, CLASSES, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.stem(x))
        for block in self.blocks:
            x = nnx.relu(block(x))
        return self.head(x.mean(axis=(1, 2)))


def test_nnx_submodules_as_target_layers(rng):
    model = _NnxCNN(nnx.Rngs(int(rng.integers(2**31))))
    x = rng.standard_normal((BATCH, 16, 16, 3)).astype(np.float32)
    by_object = jaxcam.GradCAM(model, target_layers=[model.stem, model.blocks[1]])(x, [1, 2])
    by_name = jaxcam.explain(model, x, target_layer=["stem", "blocks/1"], targets=[1, 2])
    np.testing.assert_array_equal(np.asarray(by_object), np.asarray(by_name))
    with pytest.raises(ValueError, match="not a submodule"):
        jaxcam.GradCAM(model, target_layers=[nnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0))])(x)

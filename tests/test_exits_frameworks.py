"""``explain_exits`` / ``ExitExplainer`` on multi-exit PyTorch (through torchax) and Keras 3 models.

The model: three stages (conv, BatchNorm with non-trivial statistics, ReLU; strides 1, 2, 2) with
a classifier head after each (conv, ReLU, global average pooling, linear); each stage's output
feeds its head *and* the next stage, so a wrong gradient (later exits leaking into an earlier
exit's) would show. Random weights, random images fresh each run (the seeds are printed).

* PyTorch: every exit's Grad-CAM / HiResCAM / LayerCAM from one ``jaxcam.explain_exits`` call
  (heads named ``classifiers.k``) against pytorch-grad-cam 1.5.7 run per exit on a wrapper
  returning exit k's logits, at ``stages[k]`` (whose output is head k's input), 1e-4; the logits
  against the torch forward; heads given as module objects, as the ``ModuleList``, as a
  ``(first, last)`` pair, or a subset; per-exit and top-class targets; the reference is shown to
  catch a leak (the map of exit k plus the last exit's score differs); Eigen-CAM (no backward
  pass) equals ``jaxcam.explain`` at the head's input layer; Finer-CAM (each exit's top class
  against its most similar classes) and ShapleyCAM (the ReST target) against
  pytorch-grad-cam's per exit.
* Keras 3 (functional API): the same maps against a hand-written ``jax.grad`` Grad-CAM on the
  model split by hand into a feature sub-model and a head sub-model per exit, 1e-4; one head is
  two plain layers named as a ``(first, last)`` pair.
* ``ExitExplainer.update`` with new weights (PyTorch and Keras) does not recompile.
* The errors: no heads, indices, unknown or foreign heads, a head named twice, a head whose
  input is no map, a head that runs twice or never, names for a numbered model, targets for
  another number of exits.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is first imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from _compiles import compilations  # noqa: E402
from _seeds import fresh_seed
from pytorch_grad_cam import GradCAM, HiResCAM, LayerCAM  # noqa: E402
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

import jaxcam  # noqa: E402

# Keras's get_weights/set_weights call np.array(variable) the NumPy 1 way.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PGC = {"gradcam": GradCAM, "hirescam": HiResCAM, "layercam": LayerCAM}
METHODS = sorted(PGC)
SIZE, BATCH, CLASSES = 32, 3, 7
CHANNELS = (8, 16, 24)
STRIDES = (1, 2, 2)
HEADS = ["classifiers.0", "classifiers.1", "classifiers.2"]
TOL = 1e-4


def _seed() -> int:
    return fresh_seed("weights", bits=31)


# ---------------------------------------------------------------------------------------------
# PyTorch


class TorchExits(torch.nn.Module):
    """Three stages, a classifier after each; the forward returns every exit's logits."""

    def __init__(self):
        super().__init__()
        ins = (3, *CHANNELS[:-1])
        self.stages = torch.nn.ModuleList([
            torch.nn.Sequential(torch.nn.Conv2d(i, o, 3, s, 1), torch.nn.BatchNorm2d(o),
                                torch.nn.ReLU())
            for i, o, s in zip(ins, CHANNELS, STRIDES, strict=True)])
        self.classifiers = torch.nn.ModuleList([
            torch.nn.Sequential(torch.nn.Conv2d(c, 16, 3, 1, 1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(16, CLASSES))
            for c in CHANNELS])

    def forward(self, x):
        logits = []
        for stage, head in zip(self.stages, self.classifiers, strict=True):
            x = stage(x)
            logits.append(head(x))
        return logits


def torch_exits(seed: int) -> TorchExits:
    torch.manual_seed(seed)
    model = TorchExits().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


class ExitOf(torch.nn.Module):
    """pytorch-grad-cam's view of one exit: a model whose output is exit k's logits (plus, for
    ``plus``, another exit's: the leak the reference must catch)."""

    def __init__(self, model: TorchExits, k: int, plus: int | None = None):
        super().__init__()
        self.model, self.k, self.plus = model, k, plus

    def forward(self, x):
        logits = self.model(x)
        return logits[self.k] if self.plus is None else logits[self.k] + logits[self.plus]


def pgc_exit_maps(method: str, model: TorchExits, x: np.ndarray, classes, k: int,
                  plus: int | None = None) -> np.ndarray:
    """pytorch-grad-cam at ``stages[k]`` (head k's input) for exit k's logits."""
    targets = None if classes is None else [ClassifierOutputTarget(int(c)) for c in classes]
    with PGC[method](model=ExitOf(model, k, plus), target_layers=[model.stages[k]]) as cam:
        return cam(input_tensor=torch.from_numpy(x), targets=targets)


@pytest.fixture(scope="module")
def tmodel():
    seed = _seed()
    return torch_exits(seed), seed


def _images_nchw(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
def test_torch_exits_equal_pytorch_grad_cam_per_exit(tmodel, rng, method):
    model, _ = tmodel
    x = _images_nchw(rng)
    classes = rng.integers(0, CLASSES, (3, BATCH))  # (K, B): each exit its own targets
    maps, logits = jaxcam.explain_exits(model, x, exits=HEADS, targets=classes, method=method,
                                        return_logits=True)
    assert maps.shape == (3, BATCH, SIZE, SIZE) and logits.shape == (3, BATCH, CLASSES)
    with torch.no_grad():
        expected_logits = [t.numpy() for t in model(torch.from_numpy(x))]
    for k in range(3):
        np.testing.assert_allclose(np.asarray(logits[k]), expected_logits[k], atol=TOL)
        expected = pgc_exit_maps(method, model, x, classes[k], k)
        err = np.abs(np.asarray(maps[k]) - expected).max()
        print(f"{method} exit {k}: max |jaxcam - pytorch-grad-cam| = {err:.2e}")
        np.testing.assert_allclose(np.asarray(maps[k]), expected, atol=TOL,
                                   err_msg=f"{method}, exit {k}")
    if method == "gradcam":  # the reference tells a leak apart: exit 0 plus exit 2's score
        leaked = pgc_exit_maps(method, model, x, classes[0], 0, plus=2)
        assert np.abs(np.asarray(maps[0]) - leaked).max() > 1e-2


@pytest.mark.parametrize("method", ["finercam", "shapleycam"])
def test_torch_exits_finercam_and_shapleycam_equal_pytorch_grad_cam_per_exit(tmodel, rng,
                                                                              method):
    """Finer-CAM with each exit's own top class against its most similar classes, and
    ShapleyCAM with the (curved) ReST target, every exit from one explain_exits call."""
    from pytorch_grad_cam import FinerCAM, ShapleyCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST as PgcReST

    from jaxcam.targets import ClassifierOutputReST

    model, _ = tmodel
    x = _images_nchw(rng)
    category = int(rng.integers(0, CLASSES))
    targets = None if method == "finercam" else ClassifierOutputReST(category)
    maps = jaxcam.explain_exits(model, x, exits=HEADS, targets=targets, method=method)
    compared = 0
    for k in range(3):
        cls = FinerCAM if method == "finercam" else ShapleyCAM
        pgc_targets = None if method == "finercam" else [PgcReST(category)] * BATCH
        with cls(ExitOf(model, k), [model.stages[k]]) as cam:
            expected = cam(torch.from_numpy(x), pgc_targets)
        err = np.abs(np.asarray(maps[k]) - expected).max()
        print(f"{method} exit {k}: max |jaxcam - pytorch-grad-cam| = {err:.2e}")
        np.testing.assert_allclose(np.asarray(maps[k]), expected, atol=TOL,
                                   err_msg=f"{method}, exit {k}")
        compared += bool(expected.max() > 0)  # a ReLU may zero an exit's maps: nothing checked
    assert compared, "every exit's reference maps were all zero"
    # Raw maps (a ReLU may zero both): not plain Grad-CAM under another name.
    raw = dict(exits=HEADS, targets=targets, relu=False, normalize=False)
    ours = np.asarray(jaxcam.explain_exits(model, x, method=method, **raw))
    plain = np.asarray(jaxcam.explain_exits(model, x, **raw))
    assert np.abs(ours - plain).max() > 1e-3 * np.abs(plain).max(), "not plain Grad-CAM"


def test_torch_heads_as_objects_module_list_pairs_and_subsets(tmodel, rng):
    model, _ = tmodel
    x = _images_nchw(rng)
    by_name = np.asarray(jaxcam.explain_exits(model, x, exits=HEADS))  # each exit's top class
    for k in range(3):  # pytorch-grad-cam's targets=None: the top class of the exit's logits
        np.testing.assert_allclose(by_name[k], pgc_exit_maps("gradcam", model, x, None, k),
                                   atol=TOL)
    as_objects = jaxcam.explain_exits(model, x, exits=list(model.classifiers))
    as_module_list = jaxcam.explain_exits(model, x, exits=model.classifiers)
    # Exit 2's head as its first and last modules; exit 1's path '/'-separated.
    mixed = jaxcam.explain_exits(model, x, exits=[model.classifiers[0], "classifiers/1",
                                                  ("classifiers.2.0", "classifiers.2.4")])
    for got in (as_objects, as_module_list, mixed):
        np.testing.assert_allclose(np.asarray(got), by_name, atol=1e-6)
    subset = jaxcam.explain_exits(model, x, exits=["classifiers.2", "classifiers.0"])
    np.testing.assert_allclose(np.asarray(subset), by_name[[2, 0]], atol=1e-6)
    # A method without gradients (no backward pass): the layer's own Eigen-CAM.
    eigen = jaxcam.explain_exits(model, x, exits=HEADS, method="eigencam")
    at_layer = jaxcam.explain(model, x, target_layer="stages.2", method="eigencam")
    np.testing.assert_allclose(np.asarray(eigen[2]), np.asarray(at_layer), atol=1e-5)


def test_torch_exit_explainer_update_takes_new_weights_without_recompiling(tmodel, rng):
    model, seed = tmodel
    x = _images_nchw(rng)
    classes = rng.integers(0, CLASSES, BATCH)  # one class for every exit
    explainer = jaxcam.ExitExplainer(model, exits=HEADS, method="layercam")
    assert explainer.exits == (0, 1, 2)
    before = np.asarray(explainer(x, classes))
    other = torch_exits(seed + 1)
    with compilations() as seen:
        explainer.update(other)
        after = np.asarray(explainer(x, classes))
        explainer.update(variables=model.state_dict())
        again = np.asarray(explainer(x, classes))
    assert seen == [], seen
    for k in range(3):
        np.testing.assert_allclose(after[k], pgc_exit_maps("layercam", other, x, classes, k),
                                   atol=TOL)
    np.testing.assert_allclose(again, before, atol=1e-6)
    assert np.abs(after - before).max() > 0.05  # the new weights were used
    with pytest.raises(ValueError, match="build a new explainer"):
        explainer.update(torch.nn.Linear(2, 2))


class SharedHead(torch.nn.Module):
    """One head applied after both stages (so it runs twice), and a module never called."""

    def __init__(self):
        super().__init__()
        self.stages = torch.nn.ModuleList([torch.nn.Conv2d(3, 8, 3, 1, 1),
                                           torch.nn.Conv2d(8, 8, 3, 2, 1)])
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                        torch.nn.Linear(8, CLASSES))
        self.unused = torch.nn.Linear(8, CLASSES)

    def forward(self, x):
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(self.head(x))
        return out


def test_torch_bad_exits_are_clear_errors(tmodel, rng):
    model, _ = tmodel
    x = _images_nchw(rng)
    with pytest.raises(ValueError, match=r"(?s)needs its exits: name each exit's classifier "
                                         r"head.*classifiers\.0"):
        jaxcam.explain_exits(model, x)
    with pytest.raises(TypeError, match=r"exits\[0\] is an index: on a PyTorch model the exits "
                                        r"are named, not numbered"):
        jaxcam.ExitExplainer(model, exits=[0, 1, 2])
    with pytest.raises(ValueError, match=r"(?s)exits\[1\] = 'classifier\.1' is not a module of "
                                         r"this TorchExits.*\n  classifiers\.1\n"):
        jaxcam.ExitExplainer(model, exits=["classifiers.0", "classifier.1"])
    with pytest.raises(ValueError, match="not a submodule of this TorchExits"):
        jaxcam.ExitExplainer(model, exits=[torch_exits(0).classifiers[0]])
    with pytest.raises(ValueError, match=r"exits\[2\] names head 'classifiers\.0' again"):
        jaxcam.ExitExplainer(model, exits=["classifiers.0", "classifiers.1", "classifiers.0"])
    with pytest.raises(TypeError, match="exits must be a list"):
        jaxcam.ExitExplainer(model, exits="classifiers.0")
    with pytest.raises(ValueError, match="exits is empty"):
        jaxcam.ExitExplainer(model, exits=[])
    # The final Linear's input is pooled: no map. The message names the fix.
    with pytest.raises(ValueError, match=r"exit 0 \(head 'classifiers\.0\.4'\) takes \(3, 16\), "
                                         r"not a \(B, C, h, w\) feature map.*whose input is the "
                                         r"feature map"):
        jaxcam.explain_exits(model, x, exits=["classifiers.0.4"])
    with pytest.raises(ValueError, match=r"per-exit targets have shape \(2, 3\); expected "
                                         r"\(3, 3\) for 3 exits"):
        jaxcam.explain_exits(model, x, exits=HEADS, targets=np.zeros((2, BATCH), int))
    with pytest.raises(ValueError, match="look NHWC"):
        jaxcam.explain_exits(model, np.transpose(x, (0, 2, 3, 1)), exits=HEADS)
    shared = SharedHead().eval()
    with pytest.raises(RuntimeError, match=r"exit 0 \(head 'head'\) runs more than once"):
        jaxcam.explain_exits(shared, x, exits=["head"])
    with pytest.raises(ValueError, match=r"exit 1 \(head 'unused'\) is not called"):
        jaxcam.explain_exits(shared, x, exits=["stages.1", "unused"])


class NumberedExits:
    """A MultiExitModel (exit_features / classify): its exits are indices, not names."""

    num_exits = 2

    def exit_features(self, x):
        return [x, 2 * x]

    def classify(self, k, f):
        return jnp.mean(f, axis=(1, 2))


def test_numbered_model_refuses_named_exits(rng):
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    with pytest.raises(TypeError, match=r"exits are numbered .* exits=\[0, 2\]"):
        jaxcam.explain_exits(NumberedExits(), x, exits=["classifiers.0"])
    assert jaxcam.explain_exits(NumberedExits(), x, exits=[np.int64(1)]).shape == (1, 2, 8, 8)
    with pytest.raises(TypeError, match="torch.nn.Module or keras.Model with exits="):
        jaxcam.explain_exits(object(), x)


# ---------------------------------------------------------------------------------------------
# Keras 3


def keras_exits(seed: int) -> keras.Model:
    """The same network in the functional API; heads 0 and 1 are Sequential blocks, head 2 two
    plain layers ('pool2' -> 'logits2', named as a pair). Built with zero initialisers (Keras's
    random ones compile a JAX program per shape: seconds), then given NumPy random weights."""
    layers = keras.layers
    zeros = {"kernel_initializer": "zeros"}
    inputs = keras.Input((SIZE, SIZE, 3))
    x, outputs = inputs, []
    for k, (c, s) in enumerate(zip(CHANNELS, STRIDES, strict=True)):
        x = layers.Conv2D(c, 3, strides=s, padding="same", name=f"conv{k}", **zeros)(x)
        x = layers.BatchNormalization(name=f"bn{k}")(x)
        x = layers.ReLU(name=f"stage{k}")(x)
        if k < 2:
            head = keras.Sequential([
                layers.Conv2D(16, 3, padding="same", activation="relu", **zeros),
                layers.GlobalAveragePooling2D(), layers.Dense(CLASSES, **zeros)], name=f"head{k}")
            outputs.append(head(x))
        else:
            pooled = layers.GlobalAveragePooling2D(name="pool2")(x)
            outputs.append(layers.Dense(CLASSES, name="logits2", **zeros)(pooled))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        if w.ndim > 1:  # kernels: He-scaled normal
            fan_in = int(np.prod(w.shape[:-1]))
            weights.append(rng.normal(0, np.sqrt(2 / fan_in), w.shape).astype(np.float32))
        else:  # biases, BatchNorm's gamma, beta and statistics, all non-trivial
            weights.append(rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if np.all(w == 1)
                           else rng.uniform(-0.2, 0.2, w.shape).astype(np.float32))
    model.set_weights(weights)
    return model


KERAS_HEADS = ["head0", "head1", ("pool2", "logits2")]


@pytest.fixture(scope="module")
def kmodel():
    return keras_exits(_seed())


def keras_reference(model: keras.Model, method: str, x: np.ndarray, classes: np.ndarray,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exit k by hand: the model split into a feature sub-model (input -> 'stage{k}') and a head
    sub-model ('stage{k}' -> exit k's logits), ``jax.grad`` of the summed target logits with
    respect to the features, the method's weighting; the raw map and the map after
    pytorch-grad-cam's own post-processing (``scale_cam_image`` and its layer aggregation)."""
    stage = model.get_layer(f"stage{k}").output
    features = keras.Model(model.input, stage)
    head = keras.Model(stage, model.outputs[k])
    a = features(x, training=False)
    rows = jnp.arange(len(classes))
    g = jax.grad(lambda t: jnp.sum(head(t, training=False)[rows, jnp.asarray(classes)]))(a)
    a, g = np.asarray(a, np.float64), np.asarray(g, np.float64)
    if method == "gradcam":
        raw = np.einsum("bhwc,bc->bhw", a, g.mean(axis=(1, 2)))
    elif method == "hirescam":
        raw = (a * g).sum(-1)
    else:  # layercam
        raw = (a * np.maximum(g, 0)).sum(-1)
    scaled = scale_cam_image(np.maximum(raw, 0), (x.shape[2], x.shape[1]))
    # pytorch-grad-cam then aggregates even one layer: ReLU, mean, min-max again.
    return raw, scale_cam_image(np.maximum(scaled, 0))


def _images_nhwc(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((BATCH, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
def test_keras_exits_equal_a_hand_written_jax_grad_cam(kmodel, rng, method):
    x = _images_nhwc(rng)
    classes = rng.integers(0, CLASSES, (3, BATCH))
    explainer = jaxcam.ExitExplainer(kmodel, exits=KERAS_HEADS, method=method)
    maps, logits = explainer(x, classes, return_logits=True)
    # The raw map (no ReLU, scaling or resize) of the two-layer head: one size, one exit.
    raw = jaxcam.explain_exits(kmodel, x, exits=KERAS_HEADS[2:], targets=classes[2:],
                               method=method, relu=False, normalize=False, resize=False)[0]
    expected_logits = kmodel(x, training=False)
    for k in range(3):
        np.testing.assert_allclose(np.asarray(logits[k]), np.asarray(expected_logits[k]),
                                   atol=TOL)
        ref_raw, ref = keras_reference(kmodel, method, x, classes[k], k)
        if k == 2:
            scale = np.abs(ref_raw).max()
            assert raw.shape == ref_raw.shape == (BATCH, 8, 8) and scale > 1e-6
            np.testing.assert_allclose(np.asarray(raw) / scale, ref_raw / scale, atol=TOL)
        print(f"{method} exit {k}: max |jaxcam - reference| = "
              f"{np.abs(np.asarray(maps[k]) - ref).max():.2e}")
        np.testing.assert_allclose(np.asarray(maps[k]), ref, atol=TOL,
                                   err_msg=f"{method}, exit {k}")


def test_keras_exit_explainer_update_takes_new_weights_without_recompiling(kmodel, rng):
    x = _images_nhwc(rng)
    classes = rng.integers(0, CLASSES, BATCH)
    head_layers = [kmodel.get_layer("head0"), kmodel.get_layer("head1"),
                   (kmodel.get_layer("pool2"), kmodel.get_layer("logits2"))]
    explainer = jaxcam.ExitExplainer(kmodel, exits=head_layers)
    before = np.asarray(explainer(x, classes))
    old = kmodel.get_weights()
    new = [w * rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in old]
    try:
        kmodel.set_weights(new)
        with compilations() as seen:
            explainer.update(kmodel)  # the same model, "trained further"
            after = np.asarray(explainer(x, classes))
        expected = [keras_reference(kmodel, "gradcam", x, classes, k)[1] for k in range(3)]
    finally:
        kmodel.set_weights(old)
    assert seen == [], seen
    for k in range(3):
        np.testing.assert_allclose(after[k], expected[k], atol=TOL)
    assert np.abs(after - before).max() > 0.05
    for layer in kmodel.layers:  # the wrapped calls are gone
        assert "call" not in vars(layer)


def test_keras_bad_exits_are_clear_errors(kmodel, rng):
    x = _images_nhwc(rng)
    with pytest.raises(ValueError, match=r"(?s)exits\[1\] = 'head9' is not a layer of this "
                                         r"Functional.*\n  head1\n"):
        jaxcam.ExitExplainer(kmodel, exits=["head0", "head9"])
    with pytest.raises(TypeError, match=r"exits\[0\] is an index: on a Keras model"):
        jaxcam.ExitExplainer(kmodel, exits=[0])
    with pytest.raises(ValueError, match=r"needs its exits.*exits=\['head0', 'head1', \.\.\.\]"):
        jaxcam.ExitExplainer(kmodel)
    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="not a layer of this model"):
        jaxcam.ExitExplainer(kmodel, exits=[other.layers[0]])
    with pytest.raises(ValueError, match=r"exit 0 \(head 'logits2'\) takes \(3, 24\), not a "
                                         r"\(B, h, w, C\) feature map"):
        jaxcam.explain_exits(kmodel, x, exits=["logits2"])
    with pytest.raises(ValueError, match=r"resize=False the exits' maps keep their own sizes, "
                                         r"here 16x16, 32x32"):
        jaxcam.explain_exits(kmodel, x, exits=KERAS_HEADS[:2], resize=False)

"""The public API: ``jaxcam.explain``, ``jaxcam.explain_exits`` and the pgc-style classes.

One tiny CNN is written three ways over the same weights -- a Flax NNX module, a Flax Linen module
with its variables, and a pair of plain functions -- and checked against a Grad-CAM computed by
hand in this file. A tiny MSD-Net (and its PyTorch twin) covers the multi-exit API, its single
backward pass through the heads, and ``aug_smooth`` against pytorch-grad-cam.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import COMPILE_EVENTS, compilations  # noqa: F401
from _msd_twins import as_float64
from _seeds import fresh_seed
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcam
from jaxcam import methods
from jaxcam.postprocess import postprocess, resize_bilinear
from msdnet_flax import MSDNetConfig
from msdnet_flax.testing import ExitModel, make_twins, module_at, nchw

# ---------------------------------------------------------------------------------------------
# The tiny CNN: stem (16x16x6) -> body/conv1 (stride 2, 8x8x8) -> body/conv2 (8x8x8) -> mean ->
# head (5 classes). Each block is conv + bias + ReLU; the tapped layer is a block's output.
# ---------------------------------------------------------------------------------------------

N_CLASSES = 5
SIZE = 16
BATCH = 4
LAYER = "body/conv2"
CONVS = {"stem": (3, 6, 1), "conv1": (6, 8, 2), "conv2": (8, 8, 1)}  # in, out, stride


def make_weights(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    weights = {name: (rng.normal(0, 0.4, (3, 3, cin, cout)).astype(np.float32),
                      rng.normal(0, 0.1, cout).astype(np.float32))
               for name, (cin, cout, _) in CONVS.items()}
    weights["head"] = (rng.normal(0, 0.4, (8, N_CLASSES)).astype(np.float32),
                       rng.normal(0, 0.1, N_CLASSES).astype(np.float32))
    return weights


def conv_relu(x, kernel_bias, stride):
    kernel, bias = kernel_bias
    y = jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y + bias)


def function_pair(w):
    """(features_fn, head_fn) over the weights; features_fn ends at body/conv2."""

    def stem(x):
        return conv_relu(x, w["stem"], 1)

    def body(s):
        return conv_relu(conv_relu(s, w["conv1"], 2), w["conv2"], 1)

    def head(f):
        return jnp.mean(f, axis=(1, 2)) @ w["head"][0] + w["head"][1]

    return stem, body, head


class NnxBlock(nnx.Module):
    def __init__(self, cin, cout, stride, kernel_bias, rngs):
        self.conv = nnx.Conv(cin, cout, (3, 3), strides=stride, rngs=rngs)
        self.conv.kernel[...] = jnp.asarray(kernel_bias[0])
        self.conv.bias[...] = jnp.asarray(kernel_bias[1])

    def __call__(self, x):
        return jax.nn.relu(self.conv(x))


class NnxBody(nnx.Module):
    def __init__(self, w, rngs):
        self.conv1 = NnxBlock(*CONVS["conv1"], w["conv1"], rngs)
        self.conv2 = NnxBlock(*CONVS["conv2"], w["conv2"], rngs)

    def __call__(self, x):
        return self.conv2(self.conv1(x))


class NnxCNN(nnx.Module):
    def __init__(self, w, rngs):
        self.stem = NnxBlock(*CONVS["stem"], w["stem"], rngs)
        self.body = NnxBody(w, rngs)
        self.head = nnx.Linear(8, N_CLASSES, rngs=rngs)
        self.head.kernel[...] = jnp.asarray(w["head"][0])
        self.head.bias[...] = jnp.asarray(w["head"][1])

    def __call__(self, x):
        return self.head(jnp.mean(self.body(self.stem(x)), axis=(1, 2)))


class LinenBlock(nn.Module):
    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        return jax.nn.relu(nn.Conv(self.features, (3, 3), strides=self.stride, name="conv")(x))


class LinenBody(nn.Module):
    def setup(self):
        self.conv1 = LinenBlock(8, 2)
        self.conv2 = LinenBlock(8)

    def __call__(self, x):
        return self.conv2(self.conv1(x))


class LinenCNN(nn.Module):
    def setup(self):
        self.stem = LinenBlock(6)
        self.body = LinenBody()
        self.head = nn.Dense(N_CLASSES)

    def __call__(self, x):
        return self.head(jnp.mean(self.body(self.stem(x)), axis=(1, 2)))


def linen_variables(w):
    def block(name):
        return {"conv": {"kernel": jnp.asarray(w[name][0]), "bias": jnp.asarray(w[name][1])}}

    return {"params": {"stem": block("stem"),
                       "body": {"conv1": block("conv1"), "conv2": block("conv2")},
                       "head": {"kernel": jnp.asarray(w["head"][0]),
                                "bias": jnp.asarray(w["head"][1])}}}


@pytest.fixture(scope="module")
def cnn():
    """The same random weights as an NNX module, a Linen module + variables, and functions."""
    w = make_weights(np.random.default_rng(fresh_seed("cnn")))
    stem, body, head = function_pair(w)
    return {
        "weights": w,
        "nnx": NnxCNN(w, nnx.Rngs(0)),
        "linen": LinenCNN(),
        "variables": linen_variables(w),
        "pair": (lambda x: body(stem(x)), head),
        "stem": stem,
        "body": body,
        "head": head,
    }


def images(rng, batch=BATCH, dtype=np.float32):
    return rng.standard_normal((batch, SIZE, SIZE, 3)).astype(dtype)


def classes_of(rng, batch=BATCH):
    return rng.integers(0, N_CLASSES, size=batch)


def minmax(m):
    shifted = m - m.min(axis=(1, 2), keepdims=True)
    return shifted / (1e-7 + shifted.max(axis=(1, 2), keepdims=True))


def acts_and_grads(cnn, x, classes, layer):
    """The tapped layer's activations and d(score)/d(activations), by hand."""
    stem, body, head = cnn["stem"], cnn["body"], cnn["head"]
    rows = jnp.arange(len(classes))

    if layer == "stem":
        acts = stem(x)
        rest = lambda a: head(body(a))  # noqa: E731
    else:
        acts = body(stem(x))
        rest = head
    grads = jax.grad(lambda a: jnp.sum(rest(a)[rows, classes]))(acts)
    return acts, grads


def hand_raw_gradcam(cnn, x, classes, layer=LAYER):
    acts, grads = acts_and_grads(cnn, x, classes, layer)
    weights = jnp.mean(grads, axis=(1, 2), keepdims=True)
    return np.asarray(jnp.sum(weights * acts, axis=-1))


def hand_gradcam(cnn, x, classes):
    """Grad-CAM by hand: ReLU, min-max, resize, then (one layer) min-max again, as pgc does."""
    cam = minmax(np.maximum(hand_raw_gradcam(cnn, x, classes), 0.0))
    return minmax(np.asarray(resize_bilinear(cam, (SIZE, SIZE))))


# ---------------------------------------------------------------------------------------------
# 1. Model kinds
# ---------------------------------------------------------------------------------------------


def test_nnx_linen_and_function_pair_equal_a_hand_gradcam(cnn, rng):
    x, classes = images(rng), classes_of(rng)
    expected = hand_gradcam(cnn, x, classes)
    assert expected.max() > 0.9, "the hand maps should not all be zero"

    got = {
        "nnx str": jaxcam.explain(cnn["nnx"], x, target_layer=LAYER, targets=classes),
        "nnx tuple": jaxcam.explain(cnn["nnx"], x, target_layer=("body", "conv2"),
                                    targets=classes),
        "linen str": jaxcam.explain(cnn["linen"], x, target_layer=LAYER, targets=classes,
                                    variables=cnn["variables"]),
        "linen tuple": jaxcam.explain(cnn["linen"], x, target_layer=("body", "conv2"),
                                      targets=classes, variables=cnn["variables"]),
        "functions": jaxcam.explain(cnn["pair"], x, targets=classes, method="gradcam"),
    }
    for name, maps in got.items():
        assert maps.shape == (BATCH, SIZE, SIZE) and maps.dtype == jnp.float32, name
        np.testing.assert_allclose(np.asarray(maps), expected, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("kind", ["nnx", "linen"])
def test_two_target_layers_aggregate_like_postprocess(cnn, rng, kind):
    x, classes = images(rng), classes_of(rng)
    raw_stem = hand_raw_gradcam(cnn, x, classes, layer="stem")  # 16x16
    raw_body = hand_raw_gradcam(cnn, x, classes, layer=LAYER)  # 8x8
    expected = np.asarray(postprocess([raw_stem, raw_body], (SIZE, SIZE)))
    variables = cnn["variables"] if kind == "linen" else None
    got = jaxcam.explain(cnn[kind], x, target_layer=["stem", ("body", "conv2")],
                         targets=classes, variables=variables)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)
    # Not just one of the two layers.
    single = jaxcam.explain(cnn[kind], x, target_layer=LAYER, targets=classes,
                            variables=variables)
    assert np.abs(np.asarray(single) - expected).max() > 1e-3
    # A layer listed twice counts once (pgc averages two equal maps: the same result).
    twice = jaxcam.explain(cnn[kind], x, target_layer=[LAYER, ("body", "conv2")],
                           targets=classes, variables=variables)
    np.testing.assert_array_equal(np.asarray(twice), np.asarray(single))


# ---------------------------------------------------------------------------------------------
# 2. Targets
# ---------------------------------------------------------------------------------------------


def test_target_forms_agree(cnn, rng):
    model, x = cnn["nnx"], images(rng)
    classes = classes_of(rng)

    def run(targets):
        return np.asarray(jaxcam.explain(model, x, target_layer=LAYER, targets=targets))

    by_array = run(classes)
    np.testing.assert_allclose(by_array, hand_gradcam(cnn, x, classes), atol=1e-5)
    np.testing.assert_array_equal(run(jnp.asarray(classes, jnp.int32)), by_array)
    np.testing.assert_array_equal(run(list(classes)), by_array)
    np.testing.assert_array_equal(
        run([jaxcam.ClassifierOutputTarget(int(c)) for c in classes]), by_array)
    rows = jnp.arange(BATCH)
    np.testing.assert_allclose(run(lambda out: out[rows, classes]), by_array, atol=1e-6)

    top = np.asarray(jnp.argmax(model(x), axis=-1))
    np.testing.assert_array_equal(run(None), run(top))

    three = run(np.full(BATCH, 3))
    for scalar in (3, np.int64(3), np.array(3), jnp.int32(3)):
        np.testing.assert_array_equal(run(scalar), three, err_msg=repr(scalar))


def test_per_image_targets_equal_one_image_at_a_time(cnn, rng):
    model, x, classes = cnn["nnx"], images(rng), classes_of(rng)
    batch = jaxcam.explain(model, x, target_layer=LAYER, targets=classes)
    for i in range(BATCH):
        one = jaxcam.explain(model, x[i:i + 1], target_layer=LAYER, targets=classes[i:i + 1])
        np.testing.assert_allclose(np.asarray(one[0]), np.asarray(batch[i]), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 3. Invariances
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_jit_and_eager_agree(cnn, rng, method):
    model, x, classes = cnn["nnx"], images(rng), classes_of(rng)
    jitted = jaxcam.explain(model, x, target_layer=LAYER, targets=classes, method=method)
    with jax.disable_jit():
        eager = jaxcam.explain(model, x, target_layer=LAYER, targets=classes, method=method)
    np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), atol=1e-5)


def test_explain_under_vmap_and_jit_equals_a_loop(cnn, rng):
    """explain skips its host-side checks under an outer transformation, so it vmaps and jits."""
    model = cnn["nnx"]
    xs = rng.standard_normal((3, BATCH, SIZE, SIZE, 3)).astype(np.float32)
    cs = rng.integers(0, N_CLASSES, size=(3, BATCH))

    def one_batch(x, c):
        return jaxcam.explain(model, x, target_layer=LAYER, targets=c)

    loop = np.stack([np.asarray(one_batch(x, c)) for x, c in zip(xs, cs, strict=True)])
    np.testing.assert_allclose(np.asarray(jax.vmap(one_batch)(xs, cs)), loop, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(one_batch)(xs[0], cs[0])), loop[0],
                               atol=1e-5)


def test_sharded_batch_equals_unsharded(cnn, rng):
    devices = jax.devices()
    assert len(devices) == 8, "conftest.py gives JAX 8 CPU devices"
    x, classes = images(rng, batch=16), classes_of(rng, batch=16)
    sharding = NamedSharding(Mesh(np.array(devices), ("data",)), P("data"))
    x_sharded = jax.device_put(x, sharding)
    assert len(x_sharded.sharding.device_set) == 8
    plain = jaxcam.explain(cnn["nnx"], x, target_layer=LAYER, targets=classes)
    sharded = jaxcam.explain(cnn["nnx"], x_sharded, target_layer=LAYER, targets=classes)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(plain), atol=1e-5)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_score_method_chunk_sizes_agree(cnn, rng, method):
    x, classes = images(rng), classes_of(rng)
    n_channels = CONVS["conv2"][1]
    maps = {size: np.asarray(jaxcam.explain(cnn["nnx"], x, target_layer=LAYER, targets=classes,
                                            method=method, batch_size=size))
            for size in (1, 5, n_channels, None)}
    for size, m in maps.items():
        np.testing.assert_allclose(m, maps[None], atol=1e-5, err_msg=f"batch_size={size}")


# ---------------------------------------------------------------------------------------------
# 4. No recompilation
# ---------------------------------------------------------------------------------------------



def test_explain_does_not_recompile_for_new_data_or_weights(cnn, rng):
    kinds = [(cnn["nnx"], {"target_layer": LAYER}),
             (cnn["linen"], {"target_layer": LAYER, "variables": cnn["variables"]}),
             (cnn["pair"], {})]
    for model, kwargs in kinds:  # warm up
        jaxcam.explain(model, images(rng), targets=classes_of(rng), **kwargs)
    with compilations() as seen:
        for model, kwargs in kinds:
            maps = jaxcam.explain(model, images(rng), targets=classes_of(rng), **kwargs)
            maps.block_until_ready()
        # A new model of the same structure: its weights are arguments, not constants.
        other = make_weights(rng)
        jaxcam.explain(NnxCNN(other, nnx.Rngs(1)), images(rng), target_layer=LAYER,
                       targets=classes_of(rng))
        jaxcam.explain(LinenCNN(), images(rng), target_layer=LAYER, targets=classes_of(rng),
                       variables=linen_variables(other))
    assert seen == []
    with compilations() as seen:  # the listener does see a compilation: a new image size
        jaxcam.explain(cnn["nnx"], images(rng)[:, :8, :8], target_layer=LAYER)
    assert any("backend_compile" in name for name in seen)


# ---------------------------------------------------------------------------------------------
# 5. Multi-exit networks
# ---------------------------------------------------------------------------------------------

TINY_MSD = MSDNetConfig(data="cifar", num_classes=10, n_blocks=4, n_channels=4, base=1, step=1,
                        growth_rate=2)
K = TINY_MSD.n_blocks


@pytest.fixture(scope="module")
def msd():
    """A tiny MSD-Net (random weights and BatchNorm) in PyTorch and Flax."""
    return make_twins(TINY_MSD, np.random.default_rng(fresh_seed("msd")))


def msd_images(rng, batch=2):
    return rng.standard_normal((batch, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("targets", ["none", "int", "per_exit"])
def test_explain_exits_equals_one_explain_per_exit(msd, rng, targets):
    _, model = msd
    x = msd_images(rng)
    per_exit = rng.integers(0, 10, size=(K, 2))
    given = {"none": None, "int": 7, "per_exit": per_exit}[targets]
    maps, logits = jaxcam.explain_exits(model, x, targets=given, return_logits=True)
    assert maps.shape == (K, 2, 32, 32) and maps.dtype == jnp.float32
    model.eval()
    for k, exit_logits in enumerate(model(x)):
        np.testing.assert_allclose(np.asarray(logits[k]), np.asarray(exit_logits), atol=1e-5)
        exit_targets = per_exit[k] if targets == "per_exit" else given
        one = jaxcam.explain(model, x, target_layer=model.exit_feature_path(k), output_index=k,
                             targets=exit_targets)
        np.testing.assert_allclose(np.asarray(maps[k]), np.asarray(one), atol=1e-5,
                                   err_msg=f"exit {k}")


@pytest.mark.parametrize("method, options", [
    ("finercam", {}), ("finercam", {"alpha": 0.6, "comparison_categories": (1, 3)}),
    ("shapleycam", {})])
def test_explain_exits_score_and_hvp_methods_equal_one_explain_per_exit(msd, rng, method,
                                                                         options):
    """Finer-CAM (each exit's target against that exit's most similar classes) and ShapleyCAM
    (each exit's own Hessian-vector product, from one forward-over-reverse pass: the Hessian is
    block diagonal over the exits) through explain_exits, against explain at each exit's
    classifier input, which tests/test_methods_more.py checks against pytorch-grad-cam."""
    from jaxcam.targets import ClassifierOutputReST

    _, model = msd
    x = msd_images(rng)
    per_exit = rng.integers(0, 10, size=(K, 2))
    # A logit of a ReLU head has a zero Hessian almost everywhere (ShapleyCAM is Grad-CAM
    # there); the ReST target's softmax is curved.
    rest = ClassifierOutputReST(int(rng.integers(0, 10)))
    for given in (None, per_exit) if method == "finercam" else (None, rest):
        raw = dict(relu=False, normalize=False)  # raw maps: a ReLU may zero a whole map
        maps = jaxcam.explain_exits(model, x, method=method, targets=given, **raw, **options)
        assert maps.shape == (K, 2, 32, 32)
        for k in range(K):
            exit_targets = given[k] if isinstance(given, np.ndarray) else given
            one = jaxcam.explain(model, x, target_layer=model.exit_feature_path(k),
                                 output_index=k, method=method, targets=exit_targets, **raw,
                                 **options)
            scale = np.abs(np.asarray(one)).max()
            assert scale > 0
            np.testing.assert_allclose(np.asarray(maps[k]), np.asarray(one), atol=1e-5 * scale,
                                       err_msg=f"{method} exit {k}")
        if given is None and method == "shapleycam":
            continue
        # Not Grad-CAM under another name: the comparison classes / the Hessian term matter.
        plain = jaxcam.explain_exits(model, x, targets=given, **raw)
        assert np.abs(np.asarray(maps) - np.asarray(plain)).max() > 1e-3 * np.abs(
            np.asarray(plain)).max()


def test_explain_exits_under_vmap_equals_a_loop(msd, rng):
    _, model = msd
    xs = rng.standard_normal((2, 2, 32, 32, 3)).astype(np.float32)
    cs = rng.integers(0, 10, size=(2, K, 2))

    def one_batch(x, c):
        return jaxcam.explain_exits(model, x, targets=c)

    loop = np.stack([np.asarray(one_batch(x, c)) for x, c in zip(xs, cs, strict=True)])
    np.testing.assert_allclose(np.asarray(jax.vmap(one_batch)(xs, cs)), loop, atol=1e-5)
    # Nested lists are (K, B) classes too.
    np.testing.assert_array_equal(np.asarray(one_batch(xs[0], cs[0].tolist())), loop[0])


def test_explain_exits_selects_exits(msd, rng):
    _, model = msd
    x = msd_images(rng)
    per_exit = rng.integers(0, 10, size=(K, 2))
    everything = jaxcam.explain_exits(model, x, targets=per_exit)
    some = jaxcam.explain_exits(model, x, targets=per_exit[[1, 3]], exits=[1, 3])
    assert some.shape == (2, 2, 32, 32)
    np.testing.assert_allclose(np.asarray(some), np.asarray(everything)[[1, 3]], atol=1e-6)


def count_primitive(jaxpr, name: str) -> int:
    """Equations of primitive ``name`` in a jaxpr, including nested ones (jit, custom_jvp...)."""
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn.primitive.name == name
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += count_primitive(sub, name)
    return total


@pytest.mark.parametrize("exits", [tuple(range(K)), (1, 3)])
def test_explain_exits_backpropagates_through_the_heads_only(msd, rng, exits):
    """Each exit head is two 3x3/2 convolutions; the backward pass (w.r.t. the head inputs only,
    never the weights) adds one convolution per head convolution, and none for the backbone."""
    _, model = msd
    x = msd_images(rng)
    backbone = jax.make_jaxpr(jaxcam.adapters.merge_eval(*nnx.split(model)).exit_features)(x)
    backbone_convs = count_primitive(backbone.jaxpr, "conv_general_dilated")
    assert backbone_convs > 20

    def core(method):
        return jax.make_jaxpr(lambda im: jaxcam.explain_exits(
            model, im, method=method, exits=exits, check_finite=False))(x)

    convs = count_primitive(core("gradcam").jaxpr, "conv_general_dilated")
    assert convs == backbone_convs + 2 * len(exits) + 2 * len(exits)
    # Eigen-CAM reads activations only: no backward pass at all.
    convs = count_primitive(core("eigencam").jaxpr, "conv_general_dilated")
    assert convs == backbone_convs + 2 * len(exits)


def test_explain_exits_does_not_recompile(msd, rng):
    twin, model = msd
    jaxcam.explain_exits(model, msd_images(rng), targets=rng.integers(0, 10, size=(K, 2)))
    with compilations() as seen:
        jaxcam.explain_exits(model, msd_images(rng), targets=rng.integers(0, 10, size=(K, 2)))
        jaxcam.explain_exits(model, msd_images(rng), targets=rng.integers(0, 10, size=2))
        # The same architecture with other weights.
        _, other = make_twins(TINY_MSD, rng)
        jaxcam.explain_exits(other, msd_images(rng), targets=3).block_until_ready()
    assert seen == []
    with compilations() as seen:  # the listener does see a compilation: a new batch size
        jaxcam.explain_exits(model, msd_images(rng, batch=3), targets=3)
    assert any("backend_compile" in name for name in seen)


# ---------------------------------------------------------------------------------------------
# 6. Methods
# ---------------------------------------------------------------------------------------------

# Fewer samples / steps than the defaults keep compilation short; the code paths are the same.
CHEAP = {"smoothgrad": {"n_samples": 4}, "integratedgradients": {"steps": 8}}


@pytest.mark.parametrize("method", jaxcam.METHODS)
def test_every_method_gives_float32_maps_in_unit_range(cnn, rng, method):
    x, classes = images(rng), classes_of(rng)
    maps = np.asarray(jaxcam.explain(cnn["nnx"], x, target_layer=LAYER, targets=classes,
                                     method=method, **CHEAP.get(method, {})))
    assert maps.shape == (BATCH, SIZE, SIZE)
    assert maps.dtype == np.float32
    assert not np.isnan(maps).any()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert maps.max() > 0.9  # normalised per image, and not every map is zero


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("method", ["gradcam", "eigengradcam", "scorecam", "ablationcam",
                                    "integratedgradients"])
def test_half_precision_images_give_float32_maps(cnn, rng, method, dtype):
    x = jnp.asarray(images(rng), dtype)
    maps = jaxcam.explain(cnn["nnx"], x, target_layer=LAYER, targets=classes_of(rng),
                          method=method, **CHEAP.get(method, {}))
    assert maps.dtype == jnp.float32 and maps.shape == (BATCH, SIZE, SIZE)
    maps = np.asarray(maps)
    assert not np.isnan(maps).any() and maps.min() >= 0.0 and maps.max() <= 1.0


def test_raw_maps_without_postprocessing(cnn, rng):
    x, classes = images(rng), classes_of(rng)
    raw = jaxcam.explain(cnn["nnx"], x, target_layer=LAYER, targets=classes, relu=False,
                         normalize=False, resize=False)
    assert raw.shape == (BATCH, 8, 8) and raw.dtype == jnp.float32
    expected = hand_raw_gradcam(cnn, x, classes)
    np.testing.assert_allclose(np.asarray(raw), expected, atol=1e-5 * np.abs(expected).max())
    assert (expected < 0).any(), "raw maps keep negative evidence"


# FEM, KPCA-CAM and RandomCAM read no gradients either (their maps come from the activations).
ZERO_GRADIENT_METHODS = [m for m in jaxcam.METHODS
                         if m not in ("eigencam", "scorecam", "ablationcam", "fem", "kpcacam",
                                      "randomcam")]


@pytest.mark.parametrize("method", ZERO_GRADIENT_METHODS)
def test_zero_gradient_gives_zero_maps_not_nan(cnn, rng, method):
    """A constant target has zero gradient: every gradient-based map is all zeros, not 0/0.

    (Eigen-CAM and Score-CAM do not use the gradient; Ablation-CAM divides by the score itself,
    as pytorch-grad-cam does, so a score of exactly 0 gives NaN there as it does in pgc.)"""
    maps = jaxcam.explain(cnn["nnx"], images(rng), target_layer=LAYER,
                          targets=lambda out: jnp.zeros(out.shape[0]), method=method,
                          **CHEAP.get(method, {}))
    np.testing.assert_array_equal(np.asarray(maps), np.zeros((BATCH, SIZE, SIZE)))


def test_aug_smooth_matches_pytorch_grad_cam(msd, rng):
    """In float64: aug_smooth takes 6 Grad-CAMs per image at a classifier's input, where one
    ReLU input within float32 rounding of zero can move a map by a large fraction (the gradient
    jumps there), and float32 puts one within reach every few hundred images."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    twin, model = as_float64(*msd)
    exit_index = 1
    layer = model.exit_feature_path(exit_index)
    x = msd_images(rng).astype(np.float64)
    classes = rng.integers(0, 10, size=2)
    with GradCAM(model=ExitModel(twin, exit_index),
                 target_layers=[module_at(twin, layer)]) as cam:
        ref = cam(input_tensor=nchw(x).double(),
                  targets=[ClassifierOutputTarget(int(c)) for c in classes], aug_smooth=True)
    with jax.enable_x64(True):
        got = jaxcam.explain(model, x, target_layer=layer, output_index=exit_index,
                             targets=classes, aug_smooth=True)
        # Raw maps: a class may score below zero at every pixel, and then the ReLU zeroes both.
        raw = dict(target_layer=layer, output_index=exit_index, targets=classes, relu=False,
                   normalize=False)
        raw_aug = np.asarray(jaxcam.explain(model, x, aug_smooth=True, **raw))
        raw_plain = np.asarray(jaxcam.explain(model, x, **raw))
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4, rtol=0)
    assert np.abs(raw_aug - raw_plain).max() > 1e-2 * np.abs(raw_plain).max(), \
        "aug_smooth should change the maps"


def test_eigen_smooth_equals_method_function_and_postprocess(cnn, rng):
    """Eigen-smoothing projects on the first principal component, whose sign SVD picks freely;
    the sign is read off the raw maps, then the final maps must match exactly that choice."""
    x, classes = images(rng), classes_of(rng)
    acts, grads = acts_and_grads(cnn, x, classes, LAYER)
    raw_hand = np.asarray(methods.gradcam(acts, grads, eigen_smooth=True))
    raw = np.asarray(jaxcam.explain(cnn["nnx"], x, target_layer=LAYER, targets=classes,
                                    eigen_smooth=True, relu=False, normalize=False,
                                    resize=False))
    signs = np.sign(np.sum(raw * raw_hand, axis=(1, 2)))[:, None, None]
    # The first singular vector moves by about (rounding) / (s1 - s2) (Davis-Kahan): the jitted
    # and the eager projection round differently, so an image whose first two singular values
    # lie close gets a tolerance widened by s1 / (s1 - s2) (seen: 2.4e-6 against 1.6e-6).
    weighted = np.asarray(jnp.mean(grads, axis=(1, 2), keepdims=True) * acts, np.float64)
    pixels = weighted.reshape(len(x), -1, weighted.shape[-1])
    s = np.linalg.svd(pixels - pixels.mean(axis=1, keepdims=True), compute_uv=False)
    spread = np.maximum(1.0, s[:, 0] / np.maximum(s[:, 0] - s[:, 1], 1e-12 * s[:, 0]))
    print(f"s1 / (s1 - s2) per image: {np.round(spread, 2)}")
    assert np.median(spread) < 1e3, "random weights gave degenerate spectra: the check is void"
    final = jaxcam.explain(cnn["nnx"], x, target_layer=LAYER, targets=classes,
                           eigen_smooth=True)
    expected = np.asarray(postprocess(signs * raw_hand, (SIZE, SIZE)))
    for i in range(len(x)):
        np.testing.assert_allclose(raw[i], signs[i] * raw_hand[i],
                                   atol=1e-5 * spread[i] * np.abs(raw_hand[i]).max())
        # Min-max normalisation divides by each map's range, which magnifies the same rounding.
        np.testing.assert_allclose(np.asarray(final[i]), expected[i], atol=1e-4 * spread[i])
    plain = jaxcam.explain(cnn["nnx"], x, target_layer=LAYER, targets=classes)
    assert np.abs(np.asarray(plain) - np.asarray(final)).max() > 1e-2


# ---------------------------------------------------------------------------------------------
# 7. The pytorch-grad-cam-style classes
# ---------------------------------------------------------------------------------------------

CAM_CLASSES = [obj for obj in (getattr(jaxcam, name) for name in jaxcam.__all__)
               if isinstance(obj, type) and issubclass(obj, jaxcam.BaseCAM)
               and obj is not jaxcam.BaseCAM]


def test_every_cam_class_is_exported():
    assert len(CAM_CLASSES) == 10
    assert {cls.method for cls in CAM_CLASSES} <= set(jaxcam.METHODS)


@pytest.mark.parametrize("cls", CAM_CLASSES, ids=lambda c: c.__name__)
def test_cam_class_equals_explain(cnn, rng, cls):
    x, classes = images(rng), classes_of(rng)
    targets = [jaxcam.ClassifierOutputTarget(int(c)) for c in classes]
    with cls(model=cnn["nnx"], target_layers=[LAYER]) as cam:
        got = cam(input_tensor=x, targets=targets)
    expected = jaxcam.explain(cnn["nnx"], x, target_layer=LAYER, targets=classes,
                              method=cls.method)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_cam_class_passes_options(cnn, rng):
    x, classes = images(rng), classes_of(rng)
    cam = jaxcam.GradCAM(cnn["linen"], target_layers=[("body", "conv2"), "stem"],
                         variables=cnn["variables"])
    np.testing.assert_array_equal(
        np.asarray(cam(x, targets=classes, eigen_smooth=True)),
        np.asarray(jaxcam.explain(cnn["linen"], x, target_layer=[LAYER, "stem"],
                                  targets=classes, variables=cnn["variables"],
                                  eigen_smooth=True)))
    score = jaxcam.ScoreCAM(cnn["nnx"], target_layers=LAYER, batch_size=3)
    np.testing.assert_allclose(
        np.asarray(score(x, targets=classes)),
        np.asarray(jaxcam.explain(cnn["nnx"], x, target_layer=LAYER, targets=classes,
                                  method="scorecam")), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 8. Bad input
# ---------------------------------------------------------------------------------------------


def test_unknown_layer_lists_the_layers(cnn, rng):
    x = images(rng)
    with pytest.raises(ValueError, match="does not exist") as nnx_error:
        jaxcam.explain(cnn["nnx"], x, target_layer="body/conv9")
    assert "body/conv2" in str(nnx_error.value) and "stem" in str(nnx_error.value)
    with pytest.raises(ValueError, match="does not exist") as linen_error:
        jaxcam.explain(cnn["linen"], x, target_layer=("body", "conv9"),
                       variables=cnn["variables"])
    assert "body/conv2" in str(linen_error.value)


def test_bad_images(cnn, rng):
    model, x = cnn["nnx"], images(rng)
    with pytest.raises(ValueError, match="rank 4.*add a batch axis"):
        jaxcam.explain(model, x[0], target_layer=LAYER)
    with pytest.raises(ValueError, match="rank 4"):
        jaxcam.explain(model, x[None], target_layer=LAYER)
    with pytest.raises(ValueError, match="empty batch"):
        jaxcam.explain(model, x[:0], target_layer=LAYER)
    with pytest.raises(TypeError, match="floating point"):
        jaxcam.explain(model, (x * 50).astype(np.int32), target_layer=LAYER)
    with pytest.raises(TypeError, match="floating point"):
        jaxcam.explain(model, np.zeros((2, SIZE, SIZE, 3), np.uint8), target_layer=LAYER)
    nan_image = x.copy()
    nan_image[1, 3, 5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        jaxcam.explain(model, nan_image, target_layer=LAYER, targets=classes_of(rng))
    inf_image = x.copy()
    inf_image[0, 0, 0, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        jaxcam.explain(model, inf_image, target_layer=LAYER, targets=classes_of(rng))


def test_bad_targets(cnn, rng):
    model, x = cnn["nnx"], images(rng)
    with pytest.raises(ValueError, match=f"target class {N_CLASSES} is out of range.*"
                                         f"{N_CLASSES} classes"):
        jaxcam.explain(model, x, target_layer=LAYER, targets=N_CLASSES)
    with pytest.raises(ValueError, match="target class 9 is out of range"):
        jaxcam.explain(model, x, target_layer=LAYER, targets=np.array([0, 1, 9, 2]))
    with pytest.raises(ValueError, match="target class -1"):
        jaxcam.explain(model, x, target_layer=LAYER, targets=np.array([0, -1, 1, 2]))
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        jaxcam.explain(model, x, target_layer=LAYER, targets=np.array([0, 1]))
    with pytest.raises(TypeError, match="targets must be"):
        jaxcam.explain(model, x, target_layer=LAYER, targets=np.array([0.5, 1, 2, 3]))


def test_bad_method_and_model(cnn, rng):
    x = images(rng)
    with pytest.raises(ValueError, match="unknown method 'gradcam2'") as error:
        jaxcam.explain(cnn["nnx"], x, target_layer=LAYER, method="gradcam2")
    assert all(name in str(error.value) for name in jaxcam.METHODS)
    with pytest.raises(ValueError, match="variables"):
        jaxcam.explain(cnn["linen"], x, target_layer=LAYER)
    for method in ("gradcam", "scorecam", "guidedgradcam"):
        with pytest.raises(ValueError, match="needs target_layer"):
            jaxcam.explain(cnn["nnx"], x, method=method)
    with pytest.raises(ValueError, match="empty list"):
        jaxcam.explain(cnn["nnx"], x, target_layer=[])
    with pytest.raises(TypeError, match="cannot explain a"):
        jaxcam.explain(object(), x, target_layer=LAYER)


def test_bad_explain_exits_calls(cnn, msd, rng):
    _, model = msd
    x = msd_images(rng)
    with pytest.raises(TypeError, match="exit_features"):
        jaxcam.explain_exits(cnn["nnx"], images(rng))
    with pytest.raises(ValueError, match=r"out of range.*0\.\.3"):
        jaxcam.explain_exits(model, x, exits=[1, K])
    with pytest.raises(ValueError, match="out of range"):
        jaxcam.explain_exits(model, x, exits=[-1])
    with pytest.raises(ValueError, match=r"targets have shape \(3, 2\); expected \(4, 2\)"):
        jaxcam.explain_exits(model, x, targets=np.zeros((3, 2), int))
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        jaxcam.explain_exits(model, x, exits=[0, 2], targets=np.zeros((K, 2), int))
    with pytest.raises(ValueError, match=r"per-exit targets have shape \(4, 3\)"):
        jaxcam.explain_exits(model, x, targets=np.zeros((K, 3), int))
    with pytest.raises(ValueError, match="target class 10 is out of range"):
        jaxcam.explain_exits(model, x, targets=np.full((K, 2), 10))
    with pytest.raises(ValueError, match="explain_exits supports"):
        jaxcam.explain_exits(model, x, method="scorecam")


# ---------------------------------------------------------------------------------------------
# 9. Prepared explainers: split once, compile once, never wait for the device on host inputs
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def count_splits(monkeypatch):
    """Counts nnx.split calls (the per-call cost the explainer objects exist to avoid), from an
    empty one-shot split cache (models of earlier tests may be in it)."""
    from jaxcam.adapters import _split_cache

    _split_cache.clear()
    calls = []
    split = nnx.split

    def counting(*args, **kwargs):
        calls.append(1)
        return split(*args, **kwargs)

    monkeypatch.setattr(nnx, "split", counting)
    return calls


def test_exit_explainer_splits_and_compiles_once(msd, rng, count_splits):
    _, model = msd
    explainer = jaxcam.ExitExplainer(model)
    assert len(count_splits) == 1 and explainer.exits == tuple(range(K))
    explainer(msd_images(rng), 3).block_until_ready()  # compiles its own function
    # New data, and targets of another form but the same kind (classes): nothing to retrace.
    calls = [(msd_images(rng), rng.integers(0, 10, size=(K, 2))), (msd_images(rng), [4, 7])]
    with compilations() as seen:
        got = [explainer(x, t, return_logits=True) for x, t in calls]
        jax.block_until_ready(got)
    assert seen == [] and len(count_splits) == 1
    for (x, t), (maps, logits) in zip(calls, got, strict=True):
        ref_maps, ref_logits = jaxcam.explain_exits(model, x, targets=t, return_logits=True)
        np.testing.assert_allclose(np.asarray(maps), np.asarray(ref_maps), atol=1e-6)
        np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=1e-6)


def test_exit_explainer_keeps_its_weights_until_updated(msd, rng):
    _, model = msd
    _, other = make_twins(TINY_MSD, rng)
    mine = nnx.clone(model)
    explainer = jaxcam.ExitExplainer(mine)
    x = msd_images(rng)
    before = np.asarray(explainer(x, 2))
    nnx.update(mine, nnx.state(other))  # training in place, as an optimizer does
    np.testing.assert_array_equal(np.asarray(explainer(x, 2)), before)
    with compilations() as seen:
        explainer.update(mine)
        after = np.asarray(explainer(x, 2))
    assert seen == []
    np.testing.assert_allclose(after, np.asarray(jaxcam.explain_exits(other, x, targets=2)),
                               atol=1e-6)
    assert np.abs(after - before).max() > 1e-2
    explainer.update(nnx.state(model))  # a state works too
    np.testing.assert_allclose(np.asarray(explainer(x, 2)), before, atol=1e-6)


def test_explainer_splits_and_compiles_once_for_every_model_kind(cnn, rng, count_splits):
    kinds = {"nnx": (cnn["nnx"], {"target_layer": LAYER}),
             "nnx split": (nnx.split(cnn["nnx"]), {"target_layer": LAYER}),
             "linen": (cnn["linen"], {"target_layer": LAYER, "variables": cnn["variables"]}),
             "functions": (cnn["pair"], {})}
    count_splits.clear()
    explainers = {name: jaxcam.Explainer(model, **kw) for name, (model, kw) in kinds.items()}
    assert len(count_splits) == 1  # the NNX module; the pair was split by the caller
    for explainer in explainers.values():
        explainer(images(rng), classes_of(rng)).block_until_ready()
    x, classes = images(rng), classes_of(rng)
    with compilations() as seen:
        got = {name: explainer(x, classes) for name, explainer in explainers.items()}
        jax.block_until_ready(got)
    assert seen == [] and len(count_splits) == 1
    expected = hand_gradcam(cnn, x, classes)
    for name, maps in got.items():
        np.testing.assert_allclose(np.asarray(maps), expected, atol=1e-5, err_msg=name)


def test_explainer_update(cnn, rng):
    other = make_weights(rng)
    explainer = jaxcam.Explainer(cnn["nnx"], target_layer=LAYER)
    x, classes = images(rng), classes_of(rng)
    explainer.update(NnxCNN(other, nnx.Rngs(1)))
    stem, body, head = function_pair(other)
    expected = hand_gradcam({"stem": stem, "body": body, "head": head}, x, classes)
    np.testing.assert_allclose(np.asarray(explainer(x, classes)), expected, atol=1e-5)
    linen = jaxcam.Explainer(cnn["linen"], target_layer=LAYER, variables=cnn["variables"])
    linen.update(variables=linen_variables(other))
    np.testing.assert_allclose(np.asarray(linen(x, classes)), expected, atol=1e-5)
    _, msd_model = make_twins(TINY_MSD, rng)
    with pytest.raises(ValueError, match="structure.*build a new explainer"):
        explainer.update(msd_model)
    with pytest.raises(TypeError, match="takes the model"):
        explainer.update(variables=cnn["variables"])
    with pytest.raises(TypeError, match="holds no weights"):
        jaxcam.Explainer(cnn["pair"]).update(cnn["nnx"])


def test_host_inputs_never_wait_for_the_device(cnn, msd, rng, monkeypatch):
    """NumPy images and classes are checked on the host: a call returns without reading any
    device value, and bad values still raise clear errors."""
    import jaxcam._checks as checks

    exit_explainer = jaxcam.ExitExplainer(msd[1])
    explainer = jaxcam.Explainer(cnn["nnx"], target_layer=LAYER)
    x_msd, x = msd_images(rng), images(rng)
    nan_msd, nan = x_msd.copy(), x.copy()
    nan_msd[1, 2, 3, 0] = np.nan
    nan[0, 1, 2, 1] = np.inf
    for run, good, bad, n_classes in ((exit_explainer, x_msd, nan_msd, 10),
                                      (explainer, x, nan, N_CLASSES)):
        expected = run(good, 1)  # jax.Array images: one device read, for the NaN check
        with pytest.raises(ValueError, match="NaN or infinite"):
            run(jnp.asarray(bad), 1)

        def waited(flag):
            raise AssertionError("the call waited for the device")

        monkeypatch.setattr(checks, "read_device_flag", waited)
        np.testing.assert_array_equal(np.asarray(run(good, 1)), np.asarray(expected))
        with pytest.raises(ValueError, match="NaN or infinite"):
            run(bad, 1)
        with pytest.raises(ValueError, match=f"target class {n_classes} is out of range"):
            run(good, n_classes)
        run.check_finite = False  # device images: fully asynchronous when asked
        np.testing.assert_array_equal(np.asarray(run(jnp.asarray(good), 1)),
                                      np.asarray(expected))
        with pytest.raises(AssertionError, match="waited"):
            run.check_finite = True
            run(jnp.asarray(good), 1)
        monkeypatch.undo()

"""A ResNet-18 in each JAX framework -- Flax Linen, Equinox, Haiku -- explained at two named layers.

Each model is built the way that framework's users build it (the Flax-examples ResNet with its
``train`` flag and BatchNorm; an Equinox ResNet-18 taking one CHW image per call, with an
``eqx.nn.State``; Haiku's own ``hk.nets.ResNet18`` under ``hk.transform_with_state``), with
random weights and random BatchNorm statistics, and explained through jaxcam's entry points.
The reference is a Grad-CAM / HiResCAM / LayerCAM written here: the forward split by hand at the
layer (functional Flax code over the variables; the Equinox model's own blocks; Haiku's own
submodules called in order), ``jax.grad`` of the class scores with respect to the feature map,
and pytorch-grad-cam's post-processing (ReLU, min-max, bilinear resize, mean over layers,
min-max). Images are 64 px and batches of 2 to keep the CPU time sane; the depth is ResNet-18's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import equinox as eqx
import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import COMPILE_EVENTS, compilations  # noqa: F401

import jaxcam
from jaxcam.postprocess import resize_bilinear

SIZE = 64
BATCH = 2
N_CLASSES = 10
METHODS = ("gradcam", "hirescam", "layercam")
TOL = 1e-4


# ---------------------------------------------------------------------------------------------
# The reference: maps from a hand-split forward
# ---------------------------------------------------------------------------------------------


def minmax(m: np.ndarray) -> np.ndarray:
    m = m - m.min(axis=(-2, -1), keepdims=True)
    return m / (1e-7 + m.max(axis=(-2, -1), keepdims=True))


def raw_maps(below: Callable, above: Callable, x: Any, classes: np.ndarray
             ) -> dict[str, np.ndarray]:
    """Raw (B, h, w) maps of each method: ``below(x)`` is the (B, h, w, C) feature map and
    ``above`` maps it to the logits."""
    acts = below(x)
    grads = jax.grad(lambda a: jnp.sum(above(a)[jnp.arange(len(classes)), classes]))(acts)
    acts, grads = np.asarray(acts, np.float64), np.asarray(grads, np.float64)
    return {"gradcam": np.einsum("bhwc,bc->bhw", acts, grads.mean(axis=(1, 2))),
            "hirescam": (grads * acts).sum(-1),
            "layercam": (np.maximum(grads, 0) * acts).sum(-1)}


def expected_maps(raws: list[np.ndarray]) -> np.ndarray:
    """pytorch-grad-cam's post-processing of one or several layers' raw maps."""
    layers = [np.asarray(resize_bilinear(minmax(np.maximum(r, 0)).astype(np.float32),
                                         (SIZE, SIZE))) for r in raws]
    return minmax(np.maximum(np.stack(layers), 0).mean(axis=0))


def check_maps(got: Any, expected: np.ndarray, what: str, signal: bool = True) -> None:
    """``got`` equals ``expected``; with ``signal``, the reference must not be all zero (a
    LayerCAM map is never negative; a Grad-CAM or HiResCAM map of a random network may be, for
    every image, and is then zero after the ReLU: compared all the same)."""
    got = np.asarray(got)
    assert got.shape == (BATCH, SIZE, SIZE), what
    if signal:
        assert expected.max() > 0.9, f"{what}: the reference maps should not all be zero"
    np.testing.assert_allclose(got, expected, atol=TOL, err_msg=what)




def nhwc_images(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32)


def classes_of(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, N_CLASSES, BATCH)


def check_all_methods(explain: Callable[..., Any], refs: dict[str, dict[str, np.ndarray]],
                      layers: tuple[str, str]) -> None:
    """Every method at each layer, and Grad-CAM at both layers at once."""
    for layer in layers:
        for method in METHODS:
            check_maps(explain(layer, method), expected_maps([refs[layer][method]]),
                       f"{method} at {layer}", signal=method == "layercam")
    check_maps(explain(list(layers), "layercam"),
               expected_maps([refs[layer]["layercam"] for layer in layers]),
               f"layercam at {layers}")


# ---------------------------------------------------------------------------------------------
# Flax Linen: the Flax examples' ResNet (examples/imagenet/models.py), train flag and BatchNorm
# ---------------------------------------------------------------------------------------------


class ResNetBlock(nn.Module):
    filters: int
    conv: Any
    norm: Any
    act: Callable
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides)(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class LinenResNet(nn.Module):
    stage_sizes: Any  # a list, as in the examples: the module is not hashable
    block_cls: Any
    num_classes: int
    num_filters: int = 64
    dtype: Any = jnp.float32
    act: Callable = nn.relu

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = partial(nn.Conv, use_bias=False, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype, axis_name="batch")
        x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
        x = norm(name="bn_init")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = self.block_cls(self.num_filters * 2 ** i, strides=strides, conv=conv,
                                   norm=norm, act=self.act)(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype)(x)
        return jnp.asarray(x, self.dtype)


LinenResNet18 = partial(LinenResNet, stage_sizes=[2, 2, 2, 2], block_cls=ResNetBlock)
LINEN_LAYERS = ("ResNetBlock_5", "ResNetBlock_7")  # the last blocks of stages 3 and 4


def randomized(tree: Any, rng: np.random.Generator) -> Any:
    """Random weights: every array scaled and shifted at random, variances kept positive."""
    def one(path, a):
        a = np.asarray(a)
        name = jax.tree_util.keystr(path)
        if "var" in name:
            return jnp.asarray(rng.uniform(0.5, 1.5, a.shape).astype(a.dtype))
        if "scale" in name or "mean" in name or "bias" in name:
            return jnp.asarray(rng.normal(0.5 if "scale" in name else 0.0, 0.3, a.shape)
                               .astype(a.dtype))
        return jnp.asarray((a * rng.uniform(0.8, 1.2) + rng.normal(0, 0.02, a.shape))
                           .astype(a.dtype))
    return jax.tree_util.tree_map_with_path(one, tree)


def linen_variables(rng: np.random.Generator) -> Any:
    init = LinenResNet18(num_classes=N_CLASSES).init(
        jax.random.key(int(rng.integers(2 ** 31))), jnp.zeros((1, SIZE, SIZE, 3)), train=False)
    return randomized(init, rng)


def linen_functional(variables: Any, x: jax.Array, cut: int | None = None,
                     start: int | None = None, features: jax.Array | None = None) -> jax.Array:
    """The same ResNet written as plain functions over the variables: up to block ``cut`` (its
    output), or from block ``start`` on (its input: ``features``) to the logits."""
    params, stats = variables["params"], variables["batch_stats"]

    def conv(x, p, stride, pad):
        return jax.lax.conv_general_dilated(x, p["kernel"], (stride, stride), pad,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def bn(x, p, s):
        return (x - s["mean"]) / jnp.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]

    def block(x, i, stride):
        name = f"ResNetBlock_{i}"
        p, s = params[name], stats[name]
        # nn.Conv's default padding is "SAME" (asymmetric for a stride of 2).
        y = jax.nn.relu(bn(conv(x, p["Conv_0"], stride, "SAME"), p["BatchNorm_0"],
                           s["BatchNorm_0"]))
        y = bn(conv(y, p["Conv_1"], 1, "SAME"), p["BatchNorm_1"], s["BatchNorm_1"])
        if "conv_proj" in p:
            x = bn(conv(x, p["conv_proj"], stride, "SAME"), p["norm_proj"], s["norm_proj"])
        return jax.nn.relu(x + y)

    if start is None:
        x = conv(x, params["conv_init"], 2, [(3, 3), (3, 3)])
        x = jax.nn.relu(bn(x, params["bn_init"], stats["bn_init"]))
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
        first = 0
    else:
        x, first = features, start
    for i in range(first, 8):
        x = block(x, i, 2 if i in (2, 4, 6) else 1)
        if i == cut:
            return x
    x = jnp.mean(x, axis=(1, 2))
    return x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]


def linen_references(variables: Any, x: np.ndarray, classes: np.ndarray
                     ) -> dict[str, dict[str, np.ndarray]]:
    refs = {}
    for layer in LINEN_LAYERS:
        k = int(layer.rsplit("_", 1)[1])
        refs[layer] = raw_maps(lambda x, k=k: linen_functional(variables, x, cut=k),
                               lambda a, k=k: linen_functional(variables, None, start=k + 1,
                                                               features=a),
                               jnp.asarray(x), classes)
    return refs


def test_linen_resnet_in_the_flax_examples_style(rng):
    variables = linen_variables(rng)
    module = LinenResNet18(num_classes=N_CLASSES)
    model = jaxcam.LinenModel(module, variables, train=False)
    x, classes = nhwc_images(rng), classes_of(rng)
    # The hand-written forward is the model: same logits.
    np.testing.assert_allclose(np.asarray(linen_functional(variables, jnp.asarray(x))),
                               np.asarray(module.apply(variables, x, train=False)),
                               rtol=1e-4, atol=1e-4)
    refs = linen_references(variables, x, classes)
    check_all_methods(lambda layer, method: jaxcam.explain(
        model, x, target_layer=layer, targets=classes, method=method), refs, LINEN_LAYERS)
    # The class interface takes the same model object.
    cam = jaxcam.LayerCAM(model, target_layers=[LINEN_LAYERS[0]])
    check_maps(cam(x, targets=classes), expected_maps([refs[LINEN_LAYERS[0]]["layercam"]]),
               "compat LayerCAM")


def test_linen_apply_arguments_and_clear_errors(rng):
    variables = linen_variables(rng)
    module = LinenResNet18(num_classes=N_CLASSES)
    x, classes = nhwc_images(rng), classes_of(rng)
    # The bare module is applied with train=True: BatchNorm would update its statistics.
    with pytest.raises(ValueError, match=r"LinenModel\(module, variables, train=False\)"):
        jaxcam.explain(module, x, target_layer=LINEN_LAYERS[0], variables=variables)
    with pytest.raises(ValueError, match="(?s)ResNetBlock_99.*does not exist.*conv_init"):
        jaxcam.explain(jaxcam.LinenModel(module, variables, train=False), x,
                       target_layer="ResNetBlock_99")
    # method= (a function of the module), and mutable=: the output's first element.
    expected = expected_maps([linen_references(variables, x, classes)[LINEN_LAYERS[1]]
                              ["layercam"]])
    by_method = jaxcam.LinenModel(module, variables, method=lambda m, x: m(x, train=False))
    check_maps(jaxcam.explain(by_method, x, target_layer=LINEN_LAYERS[1], targets=classes,
                              method="layercam"),
               expected, "method=")
    mutable = jaxcam.LinenModel(module, variables, mutable=["batch_stats"], train=False)
    check_maps(jaxcam.explain(mutable, x, target_layer=LINEN_LAYERS[1], targets=classes,
                              method="layercam"),
               expected, "mutable=")


def test_linen_new_weights_do_not_recompile(rng):
    module = LinenResNet18(num_classes=N_CLASSES)
    first, second = linen_variables(rng), linen_variables(rng)
    x, classes = nhwc_images(rng), classes_of(rng)
    layer = LINEN_LAYERS[0]
    explainer = jaxcam.Explainer(jaxcam.LinenModel(module, first, train=False),
                                 target_layer=layer, method="layercam")
    explainer(x, classes).block_until_ready()
    jaxcam.explain(jaxcam.LinenModel(module, first, train=False), x, target_layer=layer,
                   targets=classes, method="layercam").block_until_ready()
    with compilations() as seen:
        explainer.update(variables=second)
        by_update = explainer(x, classes)
        # A fresh module object equal to the first (its list field compared by value).
        fresh = jaxcam.explain(jaxcam.LinenModel(LinenResNet18(num_classes=N_CLASSES), second,
                                                 train=False),
                               x, target_layer=layer, targets=classes, method="layercam")
        jax.block_until_ready((by_update, fresh))
    assert seen == []
    expected = expected_maps([linen_references(second, x, classes)[layer]["layercam"]])
    check_maps(by_update, expected, "after update")
    check_maps(fresh, expected, "fresh explain")


# ---------------------------------------------------------------------------------------------
# Equinox: a ResNet-18 on one (C, H, W) image per call, BatchNorm statistics in an eqx.nn.State
# ---------------------------------------------------------------------------------------------


class EqxBlock(eqx.Module):
    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm
    downsample: tuple | None

    def __init__(self, cin: int, cout: int, stride: int, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(cin, cout, 3, stride, padding=1, use_bias=False, key=k1)
        self.bn1 = eqx.nn.BatchNorm(cout, axis_name="batch", mode="batch")
        self.conv2 = eqx.nn.Conv2d(cout, cout, 3, 1, padding=1, use_bias=False, key=k2)
        self.bn2 = eqx.nn.BatchNorm(cout, axis_name="batch", mode="batch")
        self.downsample = None if stride == 1 and cin == cout else (
            eqx.nn.Conv2d(cin, cout, 1, stride, use_bias=False, key=k3),
            eqx.nn.BatchNorm(cout, axis_name="batch", mode="batch"))

    def __call__(self, x: jax.Array, state: eqx.nn.State) -> tuple[jax.Array, eqx.nn.State]:
        y, state = self.bn1(self.conv1(x), state)
        y, state = self.bn2(self.conv2(jax.nn.relu(y)), state)
        if self.downsample is not None:
            x, state = self.downsample[1](self.downsample[0](x), state)
        return jax.nn.relu(x + y), state


class EqxResNet18(eqx.Module):
    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    layer1: tuple
    layer2: tuple
    layer3: tuple
    layer4: tuple
    fc: eqx.nn.Linear

    def __init__(self, key: jax.Array, num_classes: int = N_CLASSES):
        keys = jax.random.split(key, 10)
        self.conv1 = eqx.nn.Conv2d(3, 64, 7, 2, padding=3, use_bias=False, key=keys[0])
        self.bn1 = eqx.nn.BatchNorm(64, axis_name="batch", mode="batch")
        widths = ((64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2))
        stages = []
        for i, (cin, cout, stride) in enumerate(widths):
            stages.append((EqxBlock(cin, cout, stride, keys[1 + 2 * i]),
                           EqxBlock(cout, cout, 1, keys[2 + 2 * i])))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = eqx.nn.Linear(512, num_classes, key=keys[9])

    def blocks(self) -> list[EqxBlock]:
        return [*self.layer1, *self.layer2, *self.layer3, *self.layer4]

    def stem(self, x: jax.Array, state: eqx.nn.State) -> jax.Array:
        x, _ = self.bn1(self.conv1(x), state)
        return eqx.nn.MaxPool2d(3, 2, padding=1)(jax.nn.relu(x))

    def head(self, x: jax.Array) -> jax.Array:
        return self.fc(jnp.mean(x, axis=(1, 2)))

    def __call__(self, x: jax.Array, state: eqx.nn.State) -> tuple[jax.Array, eqx.nn.State]:
        x = self.stem(x, state)
        for block in self.blocks():
            x, state = block(x, state)
        return self.head(x), state


EQX_LAYERS = ("layer3/1", "layer4/1")
EQX_BLOCK_INDEX = {"layer3/1": 5, "layer4/1": 7}


def eqx_model(rng: np.random.Generator) -> tuple[EqxResNet18, eqx.nn.State]:
    model, state = eqx.nn.make_with_state(EqxResNet18)(jax.random.key(int(rng.integers(2 ** 31))))
    params, static = eqx.partition(model, eqx.is_array)

    def he(a):  # He-normal convolutions, as torchvision's ResNet: activations keep their scale
        fan_in = np.prod(a.shape[1:])
        return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), a.shape).astype(np.float32))

    params = jax.tree.map(lambda a: he(a) if a.ndim == 4 else a, params)
    model = eqx.combine(randomized(params, rng), static)

    # Random running statistics: each BatchNorm's state is (mean, variance).
    def stat(path, a):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            return a
        last = jax.tree_util.keystr(path[-1:])
        return jnp.asarray(rng.uniform(0.5, 1.5, a.shape) if last == "[1]"
                           else rng.normal(0, 0.1, a.shape), a.dtype)

    return model, jax.tree_util.tree_map_with_path(stat, state)


def eqx_references(model: EqxResNet18, state: eqx.nn.State, x_nchw: np.ndarray,
                   classes: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """The blocks called by hand, per image under jax.vmap, split at each layer; the feature
    maps are channels-first per image and turned to (B, h, w, C) here."""
    model = eqx.nn.inference_mode(model)
    blocks = model.blocks()
    refs = {}
    for layer, k in EQX_BLOCK_INDEX.items():
        def below(x, k=k):
            x = model.stem(x, state)
            for block in blocks[:k + 1]:
                x, _ = block(x, state)
            return x

        def above(a, k=k):
            for block in blocks[k + 1:]:
                a, _ = block(a, state)
            return model.head(a)

        refs[layer] = raw_maps(
            lambda x, below=below: jnp.transpose(jax.vmap(below)(x), (0, 2, 3, 1)),
            lambda a, above=above: jax.vmap(above)(jnp.transpose(a, (0, 3, 1, 2))),
            jnp.asarray(x_nchw), classes)
    return refs


def nchw_images(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, 1, (BATCH, 3, SIZE, SIZE)).astype(np.float32)


def test_equinox_resnet_one_chw_image_per_call(rng):
    model, state = eqx_model(rng)
    x, classes = nchw_images(rng), classes_of(rng)  # (B, C, H, W): Equinox's layout
    spec = jaxcam.EquinoxModel(model, state)
    refs = eqx_references(model, state, x, classes)
    check_all_methods(lambda layer, method: jaxcam.explain(
        spec, x, target_layer=layer, targets=classes, method=method), refs, EQX_LAYERS)
    # The class interface, the layer given as the module object (found by identity).
    cam = jaxcam.HiResCAM(spec, target_layers=[model.layer4[1]])
    check_maps(cam(x, targets=classes), expected_maps([refs["layer4/1"]["hirescam"]]),
               "compat HiResCAM", signal=False)


def test_equinox_batched_and_channels_last_models(rng):
    """A model that takes the batch itself, and one fed NHWC images: the same maps."""
    model, state = eqx_model(rng)
    x, classes = nchw_images(rng), classes_of(rng)
    layer = EQX_LAYERS[0]
    expected = expected_maps([eqx_references(model, state, x, classes)[layer]["layercam"]])

    class PerBatch(eqx.Module):  # one block applied to the whole batch
        block: EqxBlock

        def __call__(self, x, state):
            return jax.vmap(self.block, in_axes=(0, None), out_axes=(0, None),
                            axis_name="batch")(x, state)

    class Batched(eqx.Module):  # the same network, written batch-wise
        net: EqxResNet18
        blocks: tuple

        def __call__(self, x, state):
            x = jax.vmap(self.net.stem, in_axes=(0, None))(x, state)
            for block in self.blocks:
                x, state = block(x, state)
            return jax.vmap(self.net.head)(x), state

    batched = Batched(model, tuple(PerBatch(b) for b in model.blocks()))
    check_maps(jaxcam.explain(jaxcam.EquinoxModel(batched, state, batched=True), x,
                              target_layer=f"blocks/{EQX_BLOCK_INDEX[layer]}", targets=classes,
                              method="layercam"),
               expected, "batched=True")
    # layout="NHWC" images for the same channels-first model: given explicitly to explain.
    check_maps(jaxcam.explain(jaxcam.EquinoxModel(model, state), np.transpose(x, (0, 2, 3, 1)),
                              target_layer=layer, targets=classes, layout="NHWC",
                              method="layercam"),
               expected, "layout=NHWC")


def test_equinox_new_weights_do_not_recompile_and_bad_layers(rng):
    (first, first_state), (second, second_state) = eqx_model(rng), eqx_model(rng)
    x, classes = nchw_images(rng), classes_of(rng)
    layer = EQX_LAYERS[1]
    explainer = jaxcam.Explainer(jaxcam.EquinoxModel(first, first_state), target_layer=layer,
                                 method="layercam")
    explainer(x, classes).block_until_ready()
    jaxcam.explain(jaxcam.EquinoxModel(first, first_state), x, target_layer=layer,
                   targets=classes, method="layercam").block_until_ready()
    with compilations() as seen:
        explainer.update(second, variables=second_state)
        by_update = explainer(x, classes)
        fresh = jaxcam.explain(jaxcam.EquinoxModel(second, second_state), x,
                               target_layer=layer, targets=classes, method="layercam")
        jax.block_until_ready((by_update, fresh))
    assert seen == []
    expected = expected_maps([eqx_references(second, second_state, x, classes)[layer]
                              ["layercam"]])
    check_maps(by_update, expected, "after update")
    check_maps(fresh, expected, "fresh explain")
    with pytest.raises(ValueError, match=r"'layer3/7' does not exist.*\n  conv1\n  bn1"):
        jaxcam.explain(jaxcam.EquinoxModel(first, first_state), x, target_layer="layer3/7")
    with pytest.raises(ValueError, match="structure"):
        explainer.update(eqx.nn.make_with_state(EqxBlock)(64, 64, 1, jax.random.key(0))[0],
                         variables=second_state)


# ---------------------------------------------------------------------------------------------
# Haiku: hk.nets.ResNet18 under hk.transform_with_state, is_training=False
# ---------------------------------------------------------------------------------------------


def haiku_forward(x: jax.Array, is_training: bool) -> jax.Array:
    return hk.nets.ResNet18(N_CLASSES)(x, is_training=is_training)


HAIKU_LAYERS = ("res_net18/~/block_group_2", "res_net18/~/block_group_3")


def haiku_weights(transformed: Any, rng: np.random.Generator) -> tuple[Any, Any]:
    params, state = transformed.init(jax.random.key(int(rng.integers(2 ** 31))),
                                     jnp.zeros((1, SIZE, SIZE, 3)), is_training=True)
    # He-normal convolutions (HWIO): activations keep their scale through the 18 layers.
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(
        0, np.sqrt(2 / np.prod(a.shape[:3])), a.shape).astype(np.float32)) if a.ndim == 4 else a,
        params)
    params = randomized(params, rng)
    # BatchNorm's moving averages (means near 0, variances positive); the counters stay.
    def stat(path, a):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            return a
        name = jax.tree_util.keystr(path)
        return jnp.asarray(rng.uniform(0.5, 1.5, a.shape) if "var_ema" in name
                           else rng.normal(0, 0.1, a.shape), a.dtype)

    return params, jax.tree_util.tree_map_with_path(stat, state)


def _haiku_part(x: jax.Array, lo: int, hi: int, classify: bool) -> jax.Array:
    """Block groups ``lo`` to ``hi`` of Haiku's ResNet18 (the stem first when ``lo`` is 0, the
    classifier last when ``classify``): its own submodules, called as ResNet.__call__ calls
    them, under the same names, so one set of parameters serves every part."""
    net = hk.nets.ResNet18(N_CLASSES)
    if lo == 0:
        x = jax.nn.relu(net.initial_batchnorm(net.initial_conv(x), False))
        x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
    for group in net.block_groups[lo:hi]:
        x = group(x, False, False)
    return net.logits(jnp.mean(x, axis=(1, 2))) if classify else x


HAIKU_SPLIT = hk.transform_with_state(_haiku_part)


def haiku_references(params: Any, state: Any, x: np.ndarray, classes: np.ndarray
                     ) -> dict[str, dict[str, np.ndarray]]:
    """Raw maps from the model split by hand at each block group (:func:`_haiku_part`)."""
    split = HAIKU_SPLIT
    refs = {}
    for layer in HAIKU_LAYERS:
        g = int(layer[-1])
        refs[layer] = raw_maps(
            lambda x, g=g: split.apply(params, state, None, x, 0, g + 1, False)[0],
            lambda a, g=g: split.apply(params, state, None, a, g + 1, 4, True)[0],
            jnp.asarray(x), classes)
    return refs


def test_haiku_resnet18(rng):
    transformed = hk.transform_with_state(haiku_forward)
    params, state = haiku_weights(transformed, rng)
    x, classes = nhwc_images(rng), classes_of(rng)
    model = jaxcam.HaikuModel(transformed, params, state, is_training=False)
    # The hand-split forward is the model: same logits.
    np.testing.assert_allclose(
        np.asarray(HAIKU_SPLIT.apply(params, state, None, jnp.asarray(x), 0, 4, True)[0]),
        np.asarray(transformed.apply(params, state, None, x, is_training=False)[0]),
        rtol=1e-4, atol=1e-4)
    refs = haiku_references(params, state, x, classes)
    check_all_methods(lambda layer, method: jaxcam.explain(
        model, x, target_layer=layer, targets=classes, method=method), refs, HAIKU_LAYERS)


def test_haiku_new_weights_do_not_recompile_and_clear_errors(rng):
    transformed = hk.transform_with_state(haiku_forward)
    (p1, s1), (p2, s2) = haiku_weights(transformed, rng), haiku_weights(transformed, rng)
    x, classes = nhwc_images(rng), classes_of(rng)
    layer = HAIKU_LAYERS[0]
    explainer = jaxcam.Explainer(jaxcam.HaikuModel(transformed, p1, s1, is_training=False),
                                 target_layer=layer, method="layercam")
    explainer(x, classes).block_until_ready()
    jaxcam.explain(jaxcam.HaikuModel(transformed, p1, s1, is_training=False), x,
                   target_layer=layer, targets=classes, method="layercam").block_until_ready()
    with compilations() as seen:
        explainer.update(jaxcam.HaikuModel(transformed, p2, s2, is_training=False))
        by_update = explainer(x, classes)
        fresh = jaxcam.explain(jaxcam.HaikuModel(transformed, p2, s2, is_training=False), x,
                               target_layer=layer, targets=classes, method="layercam")
        jax.block_until_ready((by_update, fresh))
    assert seen == []
    expected = expected_maps([haiku_references(p2, s2, x, classes)[layer]["layercam"]])
    check_maps(by_update, expected, "after update")
    check_maps(fresh, expected, "fresh explain")
    # Haiku's (init, apply) namedtuple is not a (features_fn, head_fn) pair.
    for kwargs in ({}, {"target_layer": layer}):
        with pytest.raises(TypeError, match=r"Haiku's \(init, apply\).*jaxcam.HaikuModel"):
            jaxcam.explain(transformed, x, **kwargs)
    with pytest.raises(ValueError,
                       match=r"(?s)'res_net18/~/block_group_9' does not exist.*initial_conv"):
        jaxcam.explain(jaxcam.HaikuModel(transformed, p1, s1, is_training=False), x,
                       target_layer="res_net18/~/block_group_9")
    with pytest.raises(TypeError, match="needs its state"):
        jaxcam.HaikuModel(transformed, p1, is_training=False)


def _tiny_haiku(x: jax.Array) -> jax.Array:
    x = jax.nn.relu(hk.Conv2D(8, 3, name="conv")(x))
    return hk.Linear(N_CLASSES, name="head")(jnp.mean(x, axis=(1, 2)))


def test_haiku_transform_without_state_and_without_apply_rng(rng):
    """``hk.transform`` (no state), with and without an apply rng: the same maps as a Grad-CAM
    on the parameters written out by hand."""
    x = jnp.asarray(nhwc_images(rng)[:, :16, :16])
    classes = classes_of(rng)
    transformed = hk.transform(_tiny_haiku)
    params = randomized(transformed.init(jax.random.key(0), x), rng)
    conv, head = params["conv"], params["head"]

    def below(x):
        y = jax.lax.conv_general_dilated(x, conv["w"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(y + conv["b"])

    raw = raw_maps(below, lambda a: jnp.mean(a, axis=(1, 2)) @ head["w"] + head["b"], x,
                   classes)["layercam"]
    expected = minmax(np.maximum(np.stack(
        [np.asarray(resize_bilinear(minmax(np.maximum(raw, 0)).astype(np.float32), (16, 16)))]),
        0).mean(axis=0))
    assert expected.max() > 0.9
    for model in (jaxcam.HaikuModel(transformed, params, rng=jax.random.key(1)),
                  jaxcam.HaikuModel(hk.without_apply_rng(transformed), params)):
        got = jaxcam.explain(model, x, target_layer="conv", targets=classes, method="layercam")
        np.testing.assert_allclose(np.asarray(got), expected, atol=TOL)
    with pytest.raises(TypeError, match="takes no rng"):
        jaxcam.HaikuModel(hk.without_apply_rng(transformed), params, rng=jax.random.key(1))


class _DropoutCNN(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv")(x))
        x = nn.Dropout(0.5, deterministic=deterministic, name="drop")(x)
        return nn.Dense(N_CLASSES, name="head")(jnp.mean(x, axis=(1, 2)))


def test_linen_rngs_are_arguments(rng):
    """``rngs`` reach the model (dropout on: the maps follow the key) as arguments of the jitted
    function: a new key does not recompile; ``deterministic=True`` ignores them."""
    x = jnp.asarray(nhwc_images(rng)[:, :16, :16])
    classes = classes_of(rng)
    module = _DropoutCNN()
    variables = randomized(module.init(jax.random.key(0), x, deterministic=True), rng)

    def maps(key, deterministic=False):
        spec = jaxcam.LinenModel(module, variables, rngs={"dropout": key},
                                 deterministic=deterministic)
        return np.asarray(jaxcam.explain(spec, x, target_layer="drop", targets=classes,
                                         method="layercam"))

    first = maps(jax.random.key(1))
    with compilations() as seen:
        again, other = maps(jax.random.key(1)), maps(jax.random.key(2))
    assert seen == []
    np.testing.assert_array_equal(again, first)
    assert np.abs(other - first).max() > 1e-2
    # The same key with dropout off: the maps of the plain model, whatever the key.
    np.testing.assert_allclose(maps(jax.random.key(1), True), maps(jax.random.key(2), True),
                               atol=1e-6)

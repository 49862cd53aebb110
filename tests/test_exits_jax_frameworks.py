"""``explain_exits`` / ``ExitExplainer`` on multi-exit Flax Linen, Haiku and Equinox models.

The model, the same in the three frameworks and given the same random weights: three stages
(3x3 convolution, BatchNorm with non-trivial statistics, ReLU; strides 1, 2, 2) with a
classifier head after each (global average pooling, dense); each stage's output feeds its head
*and* the next stage, so a wrong gradient (later exits leaking into an earlier exit's) would
show. The reference is written by hand in plain JAX over the same weights: the stages as
functions giving each exit's features ``f_k``, each head as a function, ``jax.grad`` of the
summed target logits with respect to ``f_k``, the method's weighting and jaxcam's
post-processing; every exit's Grad-CAM / HiResCAM / LayerCAM map against it to 1e-4, the
logits too, and one exit's raw map (no ReLU, scaling or resize). ShapleyCAM with the curved
ReST target, in each framework, against ``jax.grad`` and ``jax.jvp`` of head k alone.

Heads are named as each framework names its modules: Linen module paths (``"head_0"``, a pair
``("head_2", "head_2/Dense_0")``), Haiku module names (``"head_0"``, ``"head_2/linear"``),
Equinox attribute paths (``"heads/0"``, the module objects, a pair of a two-layer head's
layers). ``ExitExplainer.update`` with new weights compiles nothing. The errors: an unknown
head (listing the valid ones), a head named twice, a head that never runs, a head whose input
is no feature map.
"""

from __future__ import annotations

import equinox as eqx
import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import compilations

import jaxcam
from jaxcam.postprocess import postprocess

METHODS = ("gradcam", "hirescam", "layercam")
SIZE, BATCH, CLASSES = 32, 3, 7
CHANNELS = (8, 16, 24)
STRIDES = (1, 2, 2)
EPS = 1e-5
TOL = 1e-4
PAD = ((1, 1), (1, 1))


# ---------------------------------------------------------------------------------------------
# The weights and the hand-written reference (NHWC, kernels HWIO, dense (in, out))


def weights(seed: int) -> dict[str, list[dict[str, np.ndarray]]]:
    """Random weights of the network: per stage a convolution and BatchNorm (scale, bias and
    running statistics all non-trivial), per head a dense layer."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    stages, heads = [], []
    for c_in, c in zip((3, *CHANNELS[:-1]), CHANNELS, strict=True):
        stages.append({
            "kernel": rng.normal(0, np.sqrt(2 / (9 * c_in)), (3, 3, c_in, c)).astype(f32),
            "bias": rng.uniform(-0.2, 0.2, c).astype(f32),
            "scale": rng.uniform(0.5, 1.5, c).astype(f32),
            "shift": rng.uniform(-0.2, 0.2, c).astype(f32),
            "mean": rng.uniform(-0.2, 0.2, c).astype(f32),
            "var": rng.uniform(0.5, 1.5, c).astype(f32)})
        heads.append({"w": rng.normal(0, np.sqrt(1 / c), (c, CLASSES)).astype(f32),
                      "b": rng.uniform(-0.2, 0.2, CLASSES).astype(f32)})
    return {"stages": stages, "heads": heads}


def ref_features(w: dict, x: jax.Array) -> list[jax.Array]:
    """Each exit's features: the stages' outputs."""
    features = []
    for p, s in zip(w["stages"], STRIDES, strict=True):
        x = jax.lax.conv_general_dilated(x, p["kernel"], (s, s), PAD,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]
        x = (x - p["mean"]) / jnp.sqrt(p["var"] + EPS) * p["scale"] + p["shift"]
        x = jax.nn.relu(x)
        features.append(x)
    return features


def ref_head(w: dict, k: int, f: jax.Array) -> jax.Array:
    """Exit k's logits from its features."""
    return jnp.mean(f, axis=(1, 2)) @ w["heads"][k]["w"] + w["heads"][k]["b"]


def reference(w: dict, method: str, x: np.ndarray, classes: np.ndarray, k: int,
              post: bool = True) -> np.ndarray:
    """Exit k's map by hand: ``jax.grad`` of the summed target logits of head k alone with
    respect to ``f_k``, the method's weighting, and (``post``) jaxcam's post-processing."""
    a = ref_features(w, jnp.asarray(x))[k]
    rows = jnp.arange(len(classes))
    g = jax.grad(lambda f: jnp.sum(ref_head(w, k, f)[rows, jnp.asarray(classes)]))(a)
    if method == "gradcam":
        raw = jnp.einsum("bhwc,bc->bhw", a, g.mean(axis=(1, 2)))
    elif method == "hirescam":
        raw = (a * g).sum(-1)
    else:  # layercam
        raw = (a * jnp.maximum(g, 0)).sum(-1)
    return np.asarray(postprocess([raw], (x.shape[1], x.shape[2])) if post else raw)


def ref_logits(w: dict, x: np.ndarray) -> list[np.ndarray]:
    features = ref_features(w, jnp.asarray(x))
    return [np.asarray(ref_head(w, k, f)) for k, f in enumerate(features)]


@pytest.fixture(scope="module")
def ws() -> dict:
    return weights(0)


def _images(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((BATCH, SIZE, SIZE, 3)).astype(np.float32)


def check_exits(model, x_model, x, w, classes, method, heads, raw_heads=None):
    """Every exit's map and logits against the reference; the raw map of the last exit."""
    explainer = jaxcam.ExitExplainer(model, exits=heads, method=method)
    maps, logits = explainer(x_model, classes, return_logits=True)
    assert maps.shape == (3, BATCH, SIZE, SIZE) and logits.shape == (3, BATCH, CLASSES)
    expected_logits = ref_logits(w, x)
    for k in range(3):
        np.testing.assert_allclose(np.asarray(logits[k]), expected_logits[k], atol=TOL)
        expected = reference(w, method, x, classes[k], k)
        err = np.abs(np.asarray(maps[k]) - expected).max()
        print(f"{method} exit {k}: max |jaxcam - reference| = {err:.2e}")
        np.testing.assert_allclose(np.asarray(maps[k]), expected, atol=TOL,
                                   err_msg=f"{method}, exit {k}")
    if method == "gradcam":
        raw = jaxcam.explain_exits(model, x_model, exits=(raw_heads or heads)[2:],
                                   targets=classes[2:], relu=False, normalize=False,
                                   resize=False)[0]
        ref_raw = reference(w, method, x, classes[2], 2, post=False)
        scale = np.abs(ref_raw).max()
        assert raw.shape == ref_raw.shape == (BATCH, 8, 8) and scale > 1e-6
        np.testing.assert_allclose(np.asarray(raw) / scale, ref_raw / scale, atol=TOL)
        # The reference tells a leak apart: exit 0 with exit 2's score added.
        a = ref_features(w, jnp.asarray(x))[0]
        rows = jnp.arange(BATCH)

        def leaked(f):  # f feeds stages 1 and 2, then head 2
            f1 = f
            for p, s in zip(w["stages"][1:], STRIDES[1:], strict=True):
                f1 = jax.lax.conv_general_dilated(
                    f1, p["kernel"], (s, s), PAD,
                    dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]
                f1 = jax.nn.relu((f1 - p["mean"]) / jnp.sqrt(p["var"] + EPS) * p["scale"]
                                 + p["shift"])
            return (jnp.sum(ref_head(w, 0, f)[rows, classes[0]])
                    + jnp.sum(ref_head(w, 2, f1)[rows, classes[0]]))

        g = jax.grad(leaked)(a)
        wrong = postprocess([jnp.einsum("bhwc,bc->bhw", a, g.mean(axis=(1, 2)))], (SIZE, SIZE))
        assert np.abs(np.asarray(maps[0]) - np.asarray(wrong)).max() > 1e-2
    return explainer


def check_update(explainer, new_model, x_model, x, w_new, before, classes, **update):
    """``update`` with new weights compiles nothing and the new weights are used."""
    with compilations() as seen:
        explainer.update(new_model, **update)
        after = np.asarray(explainer(x_model, classes))
    assert seen == [], seen
    for k in range(3):
        np.testing.assert_allclose(after[k], reference(w_new, "layercam", x, classes, k),
                                   atol=TOL)
    assert np.abs(after - np.asarray(before)).max() > 0.05


# ---------------------------------------------------------------------------------------------
# Flax Linen


class LinenHead(nn.Module):
    classes: int

    @nn.compact
    def __call__(self, f):
        return nn.Dense(self.classes)(jnp.mean(f, axis=(1, 2)))


class LinenExits(nn.Module):
    unused_head: bool = False

    @nn.compact
    def __call__(self, x, train: bool = True):
        outputs = []
        for k, (c, s) in enumerate(zip(CHANNELS, STRIDES, strict=True)):
            x = nn.Conv(c, (3, 3), strides=s, padding=PAD, name=f"conv_{k}")(x)
            x = nn.BatchNorm(use_running_average=not train, epsilon=EPS, name=f"bn_{k}")(x)
            x = nn.relu(x)
            outputs.append(LinenHead(CLASSES, name=f"head_{k}")(x))
        return outputs


def linen_variables(w: dict) -> dict:
    params, stats = {}, {}
    for k, (p, h) in enumerate(zip(w["stages"], w["heads"], strict=True)):
        params[f"conv_{k}"] = {"kernel": p["kernel"], "bias": p["bias"]}
        params[f"bn_{k}"] = {"scale": p["scale"], "bias": p["shift"]}
        stats[f"bn_{k}"] = {"mean": p["mean"], "var": p["var"]}
        params[f"head_{k}"] = {"Dense_0": {"kernel": h["w"], "bias": h["b"]}}
    return jax.tree.map(jnp.asarray, {"params": params, "batch_stats": stats})


LINEN_HEADS = ["head_0", "head_1", ("head_2", "head_2/Dense_0")]


@pytest.mark.parametrize("method", METHODS)
def test_linen_exits_equal_a_hand_written_jax_grad_cam(ws, rng, method):
    x = _images(rng)
    classes = rng.integers(0, CLASSES, (3, BATCH))
    model = jaxcam.LinenModel(LinenExits(), linen_variables(ws), train=False)
    explainer = check_exits(model, x, x, ws, classes, method, LINEN_HEADS)
    if method == "layercam":
        before = explainer(x, classes[0])
        w_new = weights(1)
        check_update(explainer, None, x, x, w_new, before, classes[0],
                     variables=linen_variables(w_new))


class LinenSharedHead(nn.Module):
    """One head applied after both stages: it runs twice."""

    @nn.compact
    def __call__(self, x):
        head = LinenHead(CLASSES, name="head")
        out = []
        for k in range(2):
            x = nn.Conv(8, (3, 3), padding=PAD, name=f"conv_{k}")(x)
            out.append(head(x))
        return out


def test_linen_bad_exits_are_clear_errors(ws, rng):
    x = _images(rng)
    model = jaxcam.LinenModel(LinenExits(), linen_variables(ws), train=False)
    with pytest.raises(ValueError, match=r"(?s)exits\[1\] = 'head_9' is not a module of this "
                                         r"LinenExits.*\n  head_1\n"):
        jaxcam.explain_exits(model, x, exits=["head_0", "head_9"])
    with pytest.raises(ValueError, match=r"exits\[2\] names head 'head_0' again"):
        jaxcam.ExitExplainer(model, exits=["head_0", "head_1", "head_0"])
    with pytest.raises(TypeError, match=r"exits\[0\] is an index: on a Flax Linen model"):
        jaxcam.ExitExplainer(model, exits=[0])
    with pytest.raises(ValueError, match=r"exit 0 \(head 'head_0/Dense_0'\) takes \(3, 8\), "
                                         r"not a \(B, h, w, C\) feature map"):
        jaxcam.explain_exits(model, x, exits=["head_0/Dense_0"])
    shared = LinenSharedHead()
    variables = jax.eval_shape(shared.init, jax.random.key(0), x)
    variables = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), variables)
    with pytest.raises(RuntimeError, match=r"exit 0 \(head 'head'\) runs more than once"):
        jaxcam.explain_exits(jaxcam.LinenModel(shared, variables), x, exits=["head"])
    with pytest.raises(TypeError, match=r"jaxcam\.LinenModel\(LinenExits\(\.\.\.\), variables"):
        jaxcam.ExitExplainer(LinenExits(), exits=["head_0"])


# ---------------------------------------------------------------------------------------------
# Haiku


class HaikuHead(hk.Module):
    def __call__(self, f):
        return hk.Linear(CLASSES, name="linear")(jnp.mean(f, axis=(1, 2)))


def haiku_forward(x, is_training):
    outputs = []
    for k, (c, s) in enumerate(zip(CHANNELS, STRIDES, strict=True)):
        x = hk.Conv2D(c, 3, stride=s, padding=PAD, name=f"conv_{k}")(x)
        x = hk.BatchNorm(True, True, 0.9, eps=EPS, name=f"bn_{k}")(x, is_training)
        x = jax.nn.relu(x)
        outputs.append(HaikuHead(name=f"head_{k}")(x))
    return outputs


HAIKU = hk.transform_with_state(haiku_forward)


def haiku_model(w: dict) -> jaxcam.HaikuModel:
    """The Haiku model's parameters and state built from the weights (names and shapes as
    ``HAIKU.init`` makes them; no init call, which runs the model eagerly)."""
    params, state = {}, {}
    for k, (p, h) in enumerate(zip(w["stages"], w["heads"], strict=True)):
        c = p["bias"].shape[0]
        params[f"conv_{k}"] = {"w": p["kernel"], "b": p["bias"]}
        params[f"bn_{k}"] = {"scale": p["scale"].reshape(1, 1, 1, c),
                             "offset": p["shift"].reshape(1, 1, 1, c)}
        params[f"head_{k}/linear"] = {"w": h["w"], "b": h["b"]}
        for name in ("mean", "var"):
            value = p[name].reshape(1, 1, 1, c)
            state[f"bn_{k}/~/{name}_ema"] = {"average": value, "hidden": value,
                                             "counter": np.int32(1)}
    params, state = jax.tree.map(jnp.asarray, (params, state))
    return jaxcam.HaikuModel(HAIKU, params, state, rng=None, is_training=False)


HAIKU_HEADS = ["head_0", "head_1", ("head_2", "head_2/linear")]


@pytest.mark.parametrize("method", METHODS)
def test_haiku_exits_equal_a_hand_written_jax_grad_cam(ws, rng, method):
    x = _images(rng)
    classes = rng.integers(0, CLASSES, (3, BATCH))
    explainer = check_exits(haiku_model(ws), x, x, ws, classes, method, HAIKU_HEADS)
    if method == "layercam":
        before = explainer(x, classes[0])
        w_new = weights(1)
        check_update(explainer, haiku_model(w_new), x, x, w_new, before,
                     classes[0])


def test_haiku_bad_exits_are_clear_errors(ws, rng):
    x = _images(rng)
    model = haiku_model(ws)
    with pytest.raises(ValueError, match=r"(?s)exits\[1\] = 'head_9' is not a module of this "
                                         r"Haiku model.*\n  head_1\n"):
        jaxcam.explain_exits(model, x, exits=["head_0", "head_9"])
    with pytest.raises(ValueError, match=r"exits\[1\] names head 'head_0' again"):
        jaxcam.ExitExplainer(model, exits=["head_0", "head_0/"])
    with pytest.raises(ValueError, match=r"exit 0 \(head 'head_1/linear'\) takes \(3, 16\)"):
        jaxcam.explain_exits(model, x, exits=["head_1/linear"])
    with pytest.raises(TypeError, match="jaxcam.HaikuModel"):
        jaxcam.ExitExplainer(HAIKU, exits=["head_0"])


# ---------------------------------------------------------------------------------------------
# Equinox (channels-first, one image per call, BatchNorm state)


class EqxHead(eqx.Module):
    linear: eqx.nn.Linear

    def __call__(self, f):
        return self.linear(jnp.mean(f, axis=(1, 2)))


def _pool(f):
    return jnp.mean(f, axis=(1, 2))


class EqxExits(eqx.Module):
    convs: list
    bns: list
    heads: list
    unused: eqx.nn.Linear

    def __init__(self, key):
        keys = jax.random.split(key, 7)
        ins = (3, *CHANNELS[:-1])
        self.convs = [eqx.nn.Conv2d(i, c, 3, stride=s, padding=1, key=kk)
                      for i, c, s, kk in zip(ins, CHANNELS, STRIDES, keys[:3], strict=True)]
        self.bns = [eqx.nn.BatchNorm(c, axis_name="batch", eps=EPS, mode="ema") for c in CHANNELS]
        # Heads 0 and 1: one module; head 2: two layers (pooling, linear), named as a pair.
        self.heads = [EqxHead(eqx.nn.Linear(c, CLASSES, key=kk))
                      for c, kk in zip(CHANNELS[:2], keys[3:5], strict=True)]
        self.heads.append(eqx.nn.Sequential([eqx.nn.Lambda(_pool),
                                             eqx.nn.Linear(CHANNELS[2], CLASSES, key=keys[5])]))
        self.unused = eqx.nn.Linear(CHANNELS[0], CLASSES, key=keys[6])

    def __call__(self, x, state):
        outputs = []
        for conv, bn, head in zip(self.convs, self.bns, self.heads, strict=True):
            x, state = bn(conv(x), state)
            x = jax.nn.relu(x)
            outputs.append(head(x))
        return outputs, state


@pytest.fixture(scope="module")
def eqx_init():
    """The model's structure, its arrays zeros (Equinox's random initialisers would compile a
    program per shape: seconds); the weights are set by :func:`eqx_model`."""
    model = eqx.filter_eval_shape(EqxExits, jax.random.key(0))
    return jax.tree.map(lambda a: jnp.asarray(np.zeros(a.shape, a.dtype))
                        if isinstance(a, jax.ShapeDtypeStruct) else a, model)


def eqx_model(w: dict, model) -> jaxcam.EquinoxModel:
    """The Equinox model with the weights (kernels OIHW, dense (out, in)) and its BatchNorm
    state holding the running statistics."""
    for k, (p, h) in enumerate(zip(w["stages"], w["heads"], strict=True)):
        def where(m, k=k):
            linear = m.heads[k].linear if k < 2 else m.heads[k].layers[1]
            return (m.convs[k].weight, m.convs[k].bias, m.bns[k].weight, m.bns[k].bias,
                    linear.weight, linear.bias)

        model = eqx.tree_at(where, model, tuple(jnp.asarray(a) for a in (
            p["kernel"].transpose(3, 2, 0, 1), p["bias"][:, None, None], p["scale"],
            p["shift"], h["w"].T, h["b"])))
    state = eqx.nn.State(model)
    for k, p in enumerate(w["stages"]):
        state = state.set(model.bns[k].ema_state_index, (jnp.asarray(p["mean"]),
                                                     jnp.asarray(p["var"])))
    return jaxcam.EquinoxModel(model, state)


def _nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


EQX_HEADS = ["heads/0", "heads/1", ("heads/2/layers/0", "heads/2/layers/1")]


@pytest.mark.parametrize("method", METHODS)
def test_equinox_exits_equal_a_hand_written_jax_grad_cam(ws, eqx_init, rng, method):
    x = _images(rng)
    classes = rng.integers(0, CLASSES, (3, BATCH))
    model = eqx_model(ws, eqx_init)
    heads = EQX_HEADS
    if method == "hirescam":  # the heads as module objects
        m = model.model
        heads = [m.heads[0], "heads/1", (m.heads[2].layers[0], m.heads[2].layers[1])]
    explainer = check_exits(model, _nchw(x), x, ws, classes, method, heads, EQX_HEADS)
    if method == "layercam":
        before = explainer(_nchw(x), classes[0])
        w_new = weights(1)
        check_update(explainer, eqx_model(w_new, eqx_init), _nchw(x), x, w_new, before,
                     classes[0])


def test_equinox_bad_exits_are_clear_errors(ws, eqx_init, rng):
    x = _nchw(_images(rng))
    model = eqx_model(ws, eqx_init)
    with pytest.raises(ValueError, match=r"(?s)exits\[1\] = 'heads/9' is not a module of this "
                                         r"EqxExits.*\n  heads/1\n"):
        jaxcam.ExitExplainer(model, exits=["heads/0", "heads/9"])
    with pytest.raises(ValueError, match=r"exits\[1\] names head 'heads/0' again"):
        jaxcam.ExitExplainer(model, exits=["heads/0", model.model.heads[0]])
    with pytest.raises(ValueError, match="not a submodule of this EqxExits"):
        jaxcam.ExitExplainer(model, exits=[eqx.nn.Linear(2, 2, key=jax.random.key(1))])
    with pytest.raises(ValueError, match=r"exit 1 \(head 'unused'\) is not called"):
        jaxcam.explain_exits(model, x, exits=["heads/0", "unused"])
    with pytest.raises(ValueError, match=r"exit 0 \(head 'heads/0/linear'\) takes \(3, 8\), "
                                         r"not a \(B, C, h, w\) feature map"):
        jaxcam.explain_exits(model, x, exits=["heads/0/linear"])
    with pytest.raises(ValueError, match="look NHWC"):
        jaxcam.explain_exits(model, np.transpose(x, (0, 2, 3, 1)), exits=EQX_HEADS)


# ---------------------------------------------------------------------------------------------
# ShapleyCAM: every exit's own Hessian-vector product, through each framework's heads


@pytest.mark.parametrize("framework", ["linen", "haiku", "equinox"])
def test_shapleycam_exits_equal_a_hand_written_hessian_vector_product(ws, eqx_init, rng,
                                                                      framework):
    """ShapleyCAM with the ReST target (``2 logit_c - logsumexp``, curved: its Hessian is not
    zero) against ``jax.grad`` and ``jax.jvp`` of head k alone, by hand, to 1e-4."""
    x = _images(rng)
    category = int(rng.integers(0, CLASSES))
    model, x_model, heads = {
        "linen": lambda: (jaxcam.LinenModel(LinenExits(), linen_variables(ws), train=False), x,
                          LINEN_HEADS),
        "haiku": lambda: (haiku_model(ws), x, HAIKU_HEADS),
        "equinox": lambda: (eqx_model(ws, eqx_init), _nchw(x), EQX_HEADS),
    }[framework]()
    maps = jaxcam.explain_exits(model, x_model, exits=heads, method="shapleycam",
                                targets=jaxcam.targets.ClassifierOutputReST(category),
                                relu=False, normalize=False)
    features = ref_features(ws, jnp.asarray(x))
    for k in range(3):
        def score(f, k=k):
            logits = ref_head(ws, k, f)
            return jnp.sum(2 * logits[:, category] - jax.nn.logsumexp(logits, axis=-1))

        a = features[k]
        g = jax.grad(score)(a)
        hvp = jax.jvp(jax.grad(score), (a,), (a,))[1]
        weights = (g - 0.5 * hvp).mean(axis=(1, 2))

        def resized(raw):  # jaxcam's bilinear resize to the image, no ReLU or scaling
            return np.asarray(postprocess([raw], (SIZE, SIZE), relu=False, normalize=False))

        expected = resized(jnp.einsum("bhwc,bc->bhw", a, weights))
        plain = resized(jnp.einsum("bhwc,bc->bhw", a, g.mean(axis=(1, 2))))
        scale = np.abs(expected).max()
        assert np.abs(expected - plain).max() > 1e-3 * scale, "the Hessian term is void"
        np.testing.assert_allclose(np.asarray(maps[k]) / scale, expected / scale, atol=TOL,
                                   err_msg=f"{framework}, exit {k}")

"""fast_strided_conv_grads: bitwise forward, JAX-equal gradients, no input-dilated convs."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

import msdnet_flax
from jaxcam.extend import fast_strided_conv_grads
from msdnet_flax.model.config import MSDNetConfig

NHWC = ("NHWC", "HWIO", "NHWC")
NCHW = ("NCHW", "OIHW", "NCHW")

# (x shape, w shape, strides, padding, rhs_dilation, dimension_numbers, feature_group_count)
CONFIGS: dict[str, tuple[Any, ...]] = {
    "pad1_odd": ((2, 7, 7, 4), (3, 3, 4, 5), (2, 2), ((1, 1), (1, 1)), (1, 1), NHWC, 1),
    "pad1_even": ((2, 8, 8, 4), (3, 3, 4, 5), (2, 2), ((1, 1), (1, 1)), (1, 1), NHWC, 1),
    "valid_even": ((2, 8, 8, 4), (3, 3, 4, 5), (2, 2), ((0, 0), (0, 0)), (1, 1), NHWC, 1),
    "pad21_s3": ((2, 9, 10, 4), (3, 3, 4, 5), (3, 3), ((2, 1), (2, 1)), (1, 1), NHWC, 1),
    "same_asym": ((2, 8, 8, 4), (3, 3, 4, 5), (2, 2), ((0, 1), (0, 1)), (1, 1), NHWC, 1),
    "same_str": ((2, 9, 8, 4), (3, 3, 4, 5), (2, 2), "SAME", (1, 1), NHWC, 1),
    "k1": ((2, 7, 8, 4), (1, 1, 4, 5), (2, 2), ((0, 0), (0, 0)), (1, 1), NHWC, 1),
    "k5_s3": ((2, 11, 11, 4), (5, 5, 4, 5), (3, 3), ((2, 2), (2, 2)), (1, 1), NHWC, 1),
    "k5_s2": ((2, 12, 9, 4), (5, 5, 4, 5), (2, 2), ((2, 2), (1, 2)), (1, 1), NHWC, 1),
    "rhs_dil2": ((2, 10, 11, 4), (3, 3, 4, 5), (2, 2), ((2, 2), (2, 2)), (2, 2), NHWC, 1),
    "mixed_strides": ((2, 9, 9, 4), (3, 3, 4, 5), (2, 3), ((1, 1), (0, 2)), (1, 1), NHWC, 1),
    "one_axis": ((2, 9, 9, 4), (3, 3, 4, 5), (1, 2), ((1, 1), (1, 1)), (1, 1), NHWC, 1),
    "nchw": ((2, 4, 9, 8), (5, 4, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), NCHW, 1),
    "nchw_s3_dil": ((2, 4, 12, 11), (5, 4, 3, 3), (3, 2), ((2, 1), (0, 2)), (2, 1), NCHW, 1),
    "groups2": ((2, 9, 8, 4), (3, 3, 2, 6), (2, 2), ((1, 1), (1, 1)), (1, 1), NHWC, 2),
    "groups2_nchw": ((2, 4, 8, 9), (6, 2, 3, 3), (3, 2), ((1, 2), (1, 1)), (1, 1), NCHW, 2),
    "conv1d": ((2, 11, 4), (3, 4, 5), (2,), ((1, 1),), (1,), ("NWC", "WIO", "NWC"), 1),
}


def assert_close(actual: Any, expected: Any, what: str, rtol: float = 1e-5) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = np.abs(expected).max()
    assert scale > 0 and np.isfinite(scale), f"{what}: degenerate reference"
    err = np.abs(actual - expected).max() / scale
    assert err < rtol, f"{what}: relative error {err:.3e} >= {rtol:g}"


def normal(rng: np.random.Generator, shape: tuple[int, ...]) -> jax.Array:
    return jnp.asarray(rng.normal(size=shape).astype(np.float32))


def conv_fn(strides, padding, rhs_dilation, dims, groups):
    def conv(x: jax.Array, w: jax.Array) -> jax.Array:
        return lax.conv_general_dilated(
            x, w, strides, padding, rhs_dilation=rhs_dilation, dimension_numbers=dims,
            feature_group_count=groups)

    return conv


def all_eqns(jaxpr: jex.Jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jex.jaxprs_in_params(eqn.params):
            yield from all_eqns(sub)


def input_dilated_convs(closed: jex.ClosedJaxpr, *, swapped_only: bool = False) -> int:
    """Number of convs with lhs_dilation > 1; with ``swapped_only``, of those XLA would swap
    (kernel window larger than the input's spatial extent: the slow XLA:CPU case)."""
    count = 0
    for eqn in all_eqns(closed.jaxpr):
        if eqn.primitive is not lax.conv_general_dilated_p:
            continue
        lhs, rhs, _ = eqn.params["dimension_numbers"]
        x_shape, w_shape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
        swapped = np.prod([w_shape[d] for d in rhs[2:]]) > np.prod([x_shape[d] for d in lhs[2:]])
        if any(d > 1 for d in eqn.params["lhs_dilation"]) and (swapped or not swapped_only):
            count += 1
    return count


@pytest.mark.parametrize("name", list(CONFIGS))
def test_conv_forward_and_cotangents(name: str, rng: np.random.Generator) -> None:
    x_shape, w_shape, *conv_args = CONFIGS[name]
    conv = conv_fn(*conv_args)
    fast = fast_strided_conv_grads(conv, mode="always")
    x, w = normal(rng, x_shape), normal(rng, w_shape)

    np.testing.assert_array_equal(jax.jit(fast)(x, w), jax.jit(conv)(x, w))
    out, ref_vjp = jax.vjp(conv, x, w)
    ct = normal(rng, out.shape)

    @jax.jit
    def fast_cotangents(x, w, ct):
        fast_out, fast_vjp = jax.vjp(fast, x, w)
        return fast_out, fast_vjp(ct)

    fast_out, (ct_x, ct_w) = fast_cotangents(x, w, ct)
    ref_x, ref_w = ref_vjp(ct)
    np.testing.assert_array_equal(fast_out, jax.jit(conv)(x, w))
    assert_close(ct_x, ref_x, f"{name}: input cotangent")
    assert_close(ct_w, ref_w, f"{name}: weight cotangent")
    # Eagerly too (no jit around the custom rule).
    eager_x, eager_w = jax.vjp(fast, x, w)[1](ct)
    assert_close(eager_x, ref_x, f"{name}: eager input cotangent")
    assert_close(eager_w, ref_w, f"{name}: eager weight cotangent")


def test_grad_jaxpr_has_no_input_dilated_conv(rng: np.random.Generator) -> None:
    conv = conv_fn((2, 2), ((1, 1), (1, 1)), (1, 1), NHWC, 1)
    w = normal(rng, (3, 3, 4, 5))
    small, large = normal(rng, (2, 4, 4, 4)), normal(rng, (2, 7, 7, 4))  # outputs 2x2, 4x4

    def loss(f):
        return lambda x, w: jnp.sum(jnp.tanh(f(x, w)))

    def n_dilated(f, x, **kw):
        return input_dilated_convs(jax.make_jaxpr(jax.grad(loss(f), argnums=(0, 1)))(x, w), **kw)

    for x in (small, large):
        assert n_dilated(conv, x) == 1
        assert n_dilated(fast_strided_conv_grads(conv, mode="always"), x) == 0
    # "auto" rewrites the 2x2-output conv (XLA would swap JAX's transposed conv), not the other.
    assert n_dilated(conv, small, swapped_only=True) == 1
    assert n_dilated(fast_strided_conv_grads(conv), small) == 0
    assert n_dilated(fast_strided_conv_grads(conv), large) == 1
    # A conv inside nested jits is inlined and rewritten as well.
    nested = jax.jit(lambda x, w: jax.jit(conv)(jnp.sin(x), w) * 2.0)
    assert n_dilated(nested, small) == 1
    assert n_dilated(fast_strided_conv_grads(nested), small) == 0


def test_pytrees_nested_jit_closures_and_scan(rng: np.random.Generator) -> None:
    """Pytree in/out, a conv in a nested jit, weights closed over (traced by an outer jit and
    differentiated through the closure), and a conv inside scan (left to JAX's rule)."""
    conv = conv_fn((2, 2), ((1, 1), (1, 1)), (1, 1), NHWC, 1)
    conv_s1 = conv_fn((1, 1), ((1, 1), (1, 1)), (1, 1), NHWC, 1)
    x, w1, w2 = normal(rng, (2, 9, 9, 4)), normal(rng, (3, 3, 4, 4)), normal(rng, (3, 3, 4, 4))

    def model(w1, w2):
        def fn(inputs: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
            h = jax.jit(conv)(jnp.tanh(inputs["x"]), w1) * inputs["scale"]
            h, _ = lax.scan(lambda c, _: (jnp.tanh(conv_s1(c, w2)), None), h, None, length=2)
            h = conv(h, w2)
            return jnp.sum(h**2), {"h": h}

        return fn

    def loss(transform, w1, w2, x):
        score, aux = transform(model(w1, w2))({"x": x, "scale": jnp.float32(1.5)})
        return score + jnp.sum(aux["h"])

    ref = jax.jit(jax.grad(lambda *a: loss(lambda f: f, *a), argnums=(0, 1, 2)))(w1, w2, x)
    always = functools.partial(fast_strided_conv_grads, mode="always")
    fast = jax.jit(jax.grad(lambda *a: loss(always, *a), argnums=(0, 1, 2)))
    for got, want, what in zip(fast(w1, w2, x), ref, ("w1", "w2", "x"), strict=True):
        assert_close(got, want, f"gradient w.r.t. {what}")
    fn = always(model(w1, w2))
    out, plain = fn({"x": x, "scale": jnp.float32(1.5)}), model(w1, w2)({"x": x, "scale": 1.5})
    assert jax.tree.structure(out) == jax.tree.structure(plain)


def test_msdnet_exit_gradients(rng: np.random.Generator) -> None:
    config = MSDNetConfig(data="cifar", num_classes=10, n_blocks=3, n_channels=8, base=2, step=2,
                          growth_rate=6)
    model = msdnet_flax.MSDNet(config, rngs=nnx.Rngs(int(rng.integers(2**31))))
    model.eval()
    images = rng.normal(size=(2, config.image_size, config.image_size, 3)).astype(np.float32)
    features = [jnp.asarray(f) for f in model.exit_features(jnp.asarray(images))]
    graphdef, state = nnx.split(model)

    def grads_fn(transform):
        @jax.jit
        def grads(state, features):
            merged = nnx.merge(graphdef, state)
            merged.eval()

            def score(k, f):
                return jnp.sum(transform(lambda f: merged.classify(k, f))(f).max(-1))

            return [jax.grad(lambda f, k=k: score(k, f))(f) for k, f in enumerate(features)]

        return grads

    ref = grads_fn(lambda f: f)(state, features)
    for mode in ("auto", "always"):
        got = grads_fn(functools.partial(fast_strided_conv_grads, mode=mode))(state, features)
        for k, (g, r) in enumerate(zip(got, ref, strict=True)):
            assert_close(g, r, f"{mode}: exit {k} feature gradient")

    def grad_jaxpr(k, **kw):
        transform = functools.partial(fast_strided_conv_grads, **kw) if kw else lambda f: f
        return jax.make_jaxpr(jax.grad(lambda f: jnp.sum(transform(
            lambda f: model.classify(k, f))(f).max(-1))))(features[k])

    for k in range(len(features)):
        # Each head: 8x8 -3x3/2-> 4x4 -3x3/2-> 2x2; the second conv's JAX gradient is swapped.
        assert input_dilated_convs(grad_jaxpr(k)) == 2
        assert input_dilated_convs(grad_jaxpr(k), swapped_only=True) == 1
        assert input_dilated_convs(grad_jaxpr(k, mode="always")) == 0
        assert input_dilated_convs(grad_jaxpr(k, mode="auto")) == 1
        assert input_dilated_convs(grad_jaxpr(k, mode="auto"), swapped_only=True) == 0

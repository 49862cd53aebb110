"""jaxcam.extend.depthwise: depthwise convolutions as shifted multiply-adds equal
``lax.conv_general_dilated`` and its gradients, for any layout, padding, stride and dilation;
the rewritten jaxpr holds no depthwise convolution; EfficientNet-Lite0 through it equals the
plain network."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcam.extend.depthwise import fast_cpu_convs

LAYOUTS = [("NHWC", "HWIO", "NHWC"), ("NCHW", "OIHW", "NCHW"), ("NHWC", "OIHW", "NCHW")]


def _case(rng: np.random.Generator, layout: tuple[str, str, str]):
    c, k = int(rng.integers(2, 24)), int(rng.integers(1, 6))
    s = (int(rng.integers(1, 4)), int(rng.integers(1, 3)))
    d = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    h, w = (int(rng.integers(k * 2, 24)) for _ in range(2))
    pad = [str(rng.choice(["SAME", "VALID"])),
           [(int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(2)]][
        int(rng.integers(2))]
    x = rng.standard_normal((3, h, w, c)).astype(np.float32)
    kernel = rng.standard_normal((k, k, 1, c)).astype(np.float32)
    if layout[0] == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    if layout[1] == "OIHW":
        kernel = kernel.transpose(3, 2, 0, 1)

    def conv(x, kernel):
        return lax.conv_general_dilated(x, kernel, s, pad, rhs_dilation=d,
                                        dimension_numbers=layout, feature_group_count=c)
    return x, kernel, conv


@pytest.mark.parametrize("layout", LAYOUTS, ids=["nhwc", "nchw", "mixed"])
def test_forward_and_gradients_equal_the_convolution(layout, rng):
    for _ in range(6):
        x, kernel, conv = _case(rng, layout)
        fast = fast_cpu_convs(conv)
        want, got = conv(x, kernel), fast(x, kernel)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        ct = jnp.asarray(rng.standard_normal(want.shape).astype(np.float32))
        g_want = jax.vjp(conv, x, kernel)[1](ct)
        g_got = jax.vjp(fast, x, kernel)[1](ct)
        for a, b in zip(g_got, g_want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_the_rewritten_function_holds_no_depthwise_conv(rng):
    x, kernel, conv = _case(rng, LAYOUTS[0])
    if jax.default_backend() != "cpu":
        pytest.skip("the rewrite applies on the CPU backend only")
    jaxpr = jax.make_jaxpr(jax.grad(lambda x: jnp.sum(fast_cpu_convs(conv)(x, kernel) ** 2)))(x)
    assert "conv_general_dilated" not in str(jaxpr)
    assert "conv_general_dilated" in str(jax.make_jaxpr(conv)(x, kernel))


def test_dense_and_grouped_convs_are_left_alone(rng):
    x = jnp.asarray(rng.standard_normal((2, 9, 9, 8)), jnp.float32)
    for groups, w_shape in ((1, (3, 3, 8, 4)), (2, (3, 3, 4, 6))):
        kernel = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)

        def conv(x, kernel, groups=groups):
            return lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                            dimension_numbers=LAYOUTS[0],
                                            feature_group_count=groups)
        assert "conv_general_dilated" in str(jax.make_jaxpr(fast_cpu_convs(conv))(x, kernel))
        np.testing.assert_array_equal(fast_cpu_convs(conv)(x, kernel), conv(x, kernel))


def test_preferred_element_type_is_kept(rng):
    x = jnp.asarray(rng.standard_normal((1, 6, 6, 4)), jnp.bfloat16)
    kernel = jnp.asarray(rng.standard_normal((3, 3, 1, 4)), jnp.bfloat16)

    def conv(x, kernel):
        return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=LAYOUTS[0],
                                        feature_group_count=4,
                                        preferred_element_type=jnp.float32)
    got, want = fast_cpu_convs(conv)(x, kernel), conv(x, kernel)
    assert got.dtype == want.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2)


def test_efficientnet_lite0_through_the_rewrite_equals_the_plain_network(rng):
    import efficientnet_flax as enet

    model = enet.load_pretrained()
    x = jnp.asarray(rng.uniform(-1, 1, (2, 96, 128, 3)), jnp.float32)
    want = model(x)
    got = fast_cpu_convs(lambda x: model(x))(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(jnp.abs(want).max()))

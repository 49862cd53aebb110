"""MSD-Net building blocks in Flax NNX, NHWC.

The module tree mirrors kalviny/MSDNet-PyTorch attribute for attribute and index for index
(``net``, ``layers``, ``conv_down``, ``conv_normal``, ``m``, ``linear``; a stateless ``ReLU``
module holds the place PyTorch's ``nn.ReLU`` takes in a ``Sequential``), so a variable's NNX path
is its PyTorch state-dict key with ``/`` for ``.`` and Flax's leaf names. Padding is explicit
(PyTorch's symmetric ``padding=p``): Flax's 'SAME' pads stride-2 convolutions asymmetrically.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from msdnet_flax.model import plan as P

__all__ = [
    "ReLU",
    "MaxPool",
    "AvgPool",
    "ConvBasic",
    "ConvBN",
    "ConvDownNormal",
    "ConvNormal",
    "Stem",
    "MSDNLayer",
    "Transition",
    "Classifier",
    "make_layer",
    "run_sequence",
]


def _host_initializer(jax_init: jax.nn.initializers.Initializer, sample) -> nnx.Initializer:
    """``jax_init`` drawn on the host with NumPy, seeded from the JAX key.

    Eager JAX compiles one sampler per parameter shape, and an MSD-Net has hundreds of shapes:
    building one took half a minute. NumPy draws them in milliseconds. Under a trace (e.g.
    ``nnx.eval_shape``) the key is abstract and the JAX initializer is used.
    """

    def init(key, shape, dtype=jnp.float32):
        if isinstance(key, jax.core.Tracer):
            return jax_init(key, shape, dtype)
        seed = np.asarray(jax.random.key_data(key)).ravel().astype(np.uint32)
        return jnp.asarray(sample(np.random.default_rng(seed), shape), dtype=dtype)

    return init


def _conv_sample(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    kh, kw, _, n_out = shape
    return rng.normal(0.0, np.sqrt(2.0 / (kh * kw * n_out)), size=shape)


def _linear_sample(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    bound = 1.0 / np.sqrt(shape[0])
    return rng.uniform(-bound, bound, size=shape)


# kalviny's init: conv weights ~ N(0, 2 / (k * k * out_channels)), i.e. He init on fan-out.
_CONV_INIT = _host_initializer(
    jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal"), _conv_sample)
# PyTorch's default Linear weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)); kalviny zeroes bias.
_LINEAR_INIT = _host_initializer(
    jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"), _linear_sample)


class ReLU(nnx.Module):
    """Stateless; stands where PyTorch's ``nn.ReLU`` stands so indices line up."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


class MaxPool(nnx.Module):
    """``nn.MaxPool2d(3, 2, 1)``: padding counts as -inf, as in PyTorch."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class AvgPool(nnx.Module):
    """``nn.AvgPool2d(2)``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


def run_sequence(layers: Sequence[nnx.Module], x):
    """Apply ``layers`` in order, like ``nn.Sequential``."""
    for layer in layers:
        x = layer(x)
    return x


def _conv(n_in: int, n_out: int, kernel: int, stride: int, pad: int, *, rngs: nnx.Rngs,
          bias: bool = False) -> nnx.Conv:
    return nnx.Conv(n_in, n_out, (kernel, kernel), strides=(stride, stride),
                    padding=((pad, pad), (pad, pad)), use_bias=bias, kernel_init=_CONV_INIT,
                    rngs=rngs)


def _bn(n: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
    # PyTorch's momentum 0.1 weighs the new batch; Flax's momentum weighs the old average.
    return nnx.BatchNorm(n, momentum=0.9, epsilon=1e-5, rngs=rngs)


class ConvBasic(nnx.Module):
    """Conv (no bias) - BN - ReLU."""

    def __init__(self, n_in: int, n_out: int, kernel: int = 3, stride: int = 1, pad: int = 1, *,
                 rngs: nnx.Rngs):
        self.net = nnx.List([_conv(n_in, n_out, kernel, stride, pad, rngs=rngs),
                             _bn(n_out, rngs=rngs), ReLU()])

    def __call__(self, x: jax.Array) -> jax.Array:
        return run_sequence(self.net, x)


class ConvBN(nnx.Module):
    """Optional 1x1 bottleneck - BN - ReLU, then 3x3 conv (stride 2 if down) - BN - ReLU."""

    def __init__(self, spec: P.ConvBNSpec, *, rngs: nnx.Rngs):
        layers: list[nnx.Module] = []
        if spec.bottleneck:
            layers += [_conv(spec.n_in, spec.n_inner, 1, 1, 0, rngs=rngs),
                       _bn(spec.n_inner, rngs=rngs), ReLU()]
        layers += [_conv(spec.n_inner, spec.n_out, 3, 2 if spec.down else 1, 1, rngs=rngs),
                   _bn(spec.n_out, rngs=rngs), ReLU()]
        self.net = nnx.List(layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        return run_sequence(self.net, x)


class ConvDownNormal(nnx.Module):
    """Output ``concat([x_same, down(x_finer), normal(x_same)])`` -- kalviny's channel order."""

    def __init__(self, spec: P.ScaleConvSpec, *, rngs: nnx.Rngs):
        self.conv_down = ConvBN(spec.down, rngs=rngs)
        self.conv_normal = ConvBN(spec.normal, rngs=rngs)

    def __call__(self, x_finer: jax.Array, x_same: jax.Array) -> jax.Array:
        return jnp.concatenate(
            [x_same, self.conv_down(x_finer), self.conv_normal(x_same)], axis=-1)


class ConvNormal(nnx.Module):
    """Output ``concat([x, normal(x)])``."""

    def __init__(self, spec: P.ScaleConvSpec, *, rngs: nnx.Rngs):
        self.conv_normal = ConvBN(spec.normal, rngs=rngs)

    def __call__(self, x_same: jax.Array) -> jax.Array:
        return jnp.concatenate([x_same, self.conv_normal(x_same)], axis=-1)


class Stem(nnx.Module):
    """kalviny's MSDNFirstLayer: one feature map per scale, each from the one before."""

    def __init__(self, spec: P.StemSpec, *, rngs: nnx.Rngs):
        c = spec.channels
        if spec.imagenet:
            first = nnx.List([_conv(3, c[0], 7, 2, 3, bias=True, rngs=rngs),
                              _bn(c[0], rngs=rngs), ReLU(), MaxPool()])
        else:
            first = ConvBasic(3, c[0], 3, 1, 1, rngs=rngs)
        rest = [ConvBasic(c[i - 1], c[i], 3, 2, 1, rngs=rngs) for i in range(1, len(c))]
        self.layers = nnx.List([first, *rest])

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        out = []
        for layer in self.layers:
            x = run_sequence(layer, x) if isinstance(layer, nnx.List) else layer(x)
            out.append(x)
        return out


class MSDNLayer(nnx.Module):
    """One dense layer across scales; drops the finest input scale when ``discard`` > 0."""

    def __init__(self, spec: P.MSDLayerSpec, *, rngs: nnx.Rngs):
        self.discard = spec.discard
        # Static flags, not isinstance checks, so a layer wrapped by a tool (e.g. jaxcam's tap)
        # is still called with the right inputs.
        self.takes_finer = tuple(c.down is not None for c in spec.convs)
        self.layers = nnx.List([
            ConvDownNormal(c, rngs=rngs) if c.down is not None else ConvNormal(c, rngs=rngs)
            for c in spec.convs
        ])

    def __call__(self, xs: list[jax.Array]) -> list[jax.Array]:
        out = []
        for j, layer in enumerate(self.layers):
            same = j + self.discard  # index of output j's own scale among the inputs
            if self.takes_finer[j]:
                out.append(layer(xs[same - 1], xs[same]))
            else:
                out.append(layer(xs[same]))
        return out


class Transition(nnx.Module):
    """A 1x1 ConvBasic per scale (kalviny's ParallelModule of transitions)."""

    def __init__(self, spec: P.TransitionSpec, *, rngs: nnx.Rngs):
        self.m = nnx.List([ConvBasic(i, o, 1, 1, 0, rngs=rngs)
                           for i, o in zip(spec.n_in, spec.n_out, strict=True)])

    def __call__(self, xs: list[jax.Array]) -> list[jax.Array]:
        return [m(x) for m, x in zip(self.m, xs, strict=True)]


class Classifier(nnx.Module):
    """Exit head on the coarsest scale: two 3x3/2 ConvBasic, 2x2 average pool, linear."""

    def __init__(self, spec: P.ClassifierSpec, *, rngs: nnx.Rngs):
        self.m = nnx.List([ConvBasic(spec.n_in, spec.n_inter, 3, 2, 1, rngs=rngs),
                           ConvBasic(spec.n_inter, spec.n_inter, 3, 2, 1, rngs=rngs),
                           AvgPool()])
        self.linear = nnx.Linear(spec.n_inter, spec.num_classes, kernel_init=_LINEAR_INIT,
                                 bias_init=jax.nn.initializers.zeros, rngs=rngs)

    def __call__(self, features: jax.Array) -> jax.Array:
        h = run_sequence(self.m, features)
        return self.linear(h.reshape(h.shape[0], -1))


def make_layer(spec: P.LayerSpec, *, rngs: nnx.Rngs) -> nnx.Module:
    """The NNX module for one entry of a block's plan."""
    if isinstance(spec, P.StemSpec):
        return Stem(spec, rngs=rngs)
    if isinstance(spec, P.MSDLayerSpec):
        return MSDNLayer(spec, rngs=rngs)
    if isinstance(spec, P.TransitionSpec):
        return Transition(spec, rngs=rngs)
    raise TypeError(f"unknown layer spec {spec!r}")

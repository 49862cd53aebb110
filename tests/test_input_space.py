"""jaxcam.input_space: hand-computed oracles, and parity with captum and pytorch-grad-cam.

The parity tests run one tiny conv net (conv-relu-conv(stride 2)-relu-avgpool-linear on 16x12
inputs, 8 channels) in PyTorch and as a plain jax.numpy twin with the same weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from captum.attr import GuidedBackprop, IntegratedGradients, NoiseTunnel, Saliency
from captum.attr._utils.approximation_methods import approximation_parameters
from flax import nnx
from pytorch_grad_cam import AblationCAM, GuidedBackpropReLUModel, ScoreCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import jaxcam.input_space
from jaxcam.methods.input import (
    guided_backprop,
    guided_gradcam,
    integrated_gradients,
    integration_points,
    reduce_channels,
    saliency,
    smoothgrad,
    smoothgrad_from_noise,
    smoothgrad_noise,
)
from jaxcam.methods.layer import ablationcam, ablationcam_weights, scorecam, scorecam_weights
from jaxcam.postprocess import resize_bilinear_align_corners

BATCH, HEIGHT, WIDTH, IN_CHANNELS, CHANNELS, CLASSES = 2, 16, 12, 3, 8, 5


def assert_close(actual: object, expected: object, rtol: float = 1e-4) -> None:
    """Equal within ``rtol`` relative to the largest expected magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


# ----------------------------------------------------------------------------- the twin nets


def make_weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "w1": normal(rng, CHANNELS, IN_CHANNELS, 3, 3, scale=0.4),
        "b1": normal(rng, CHANNELS, scale=0.1),
        "w2": normal(rng, CHANNELS, CHANNELS, 3, 3, scale=0.25),
        "b2": normal(rng, CHANNELS, scale=0.1),
        "w3": normal(rng, CLASSES, CHANNELS),
        "b3": normal(rng, CLASSES, scale=0.1),
    }


def torch_net(weights: dict[str, np.ndarray], relu_after_tap: bool = True) -> torch.nn.Sequential:
    """The torch net; index 2 is conv2, index 3 its ReLU (absent when ``relu_after_tap=False``)."""
    conv1 = torch.nn.Conv2d(IN_CHANNELS, CHANNELS, 3, padding=1)
    conv2 = torch.nn.Conv2d(CHANNELS, CHANNELS, 3, stride=2, padding=1)
    linear = torch.nn.Linear(CHANNELS, CLASSES)
    with torch.no_grad():
        for layer, w, b in ((conv1, "w1", "b1"), (conv2, "w2", "b2"), (linear, "w3", "b3")):
            layer.weight.copy_(torch.from_numpy(weights[w]))
            layer.bias.copy_(torch.from_numpy(weights[b]))
    tail = [torch.nn.ReLU()] if relu_after_tap else []
    layers = [conv1, torch.nn.ReLU(), conv2, *tail, torch.nn.AdaptiveAvgPool2d(1)]
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), linear).eval()


def jax_conv(x: jax.Array, w_oihw: np.ndarray, b: np.ndarray, stride: int) -> jax.Array:
    w_hwio = jnp.asarray(np.transpose(w_oihw, (2, 3, 1, 0)))
    y = jax.lax.conv_general_dilated(
        x, w_hwio, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + jnp.asarray(b)


def jax_features(weights: dict[str, np.ndarray], x: jax.Array, relu: bool = True) -> jax.Array:
    """conv1-relu-conv2(-relu): the tapped activations ``(B, 8, 6, 8)``."""
    hidden = jax.nn.relu(jax_conv(x, weights["w1"], weights["b1"], 1))
    y = jax_conv(hidden, weights["w2"], weights["b2"], 2)
    return jax.nn.relu(y) if relu else y


def jax_head(weights: dict[str, np.ndarray], acts: jax.Array) -> jax.Array:
    return jnp.mean(acts, axis=(1, 2)) @ jnp.asarray(weights["w3"]).T + jnp.asarray(weights["b3"])


def class_scores(logits: jax.Array, targets: np.ndarray) -> jax.Array:
    return logits[jnp.arange(logits.shape[0]), jnp.asarray(targets)]


def jax_score_fn(weights: dict[str, np.ndarray], targets: np.ndarray) -> Callable:
    return lambda x: class_scores(jax_head(weights, jax_features(weights, x)), targets)


def to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def to_nhwc(t: torch.Tensor) -> np.ndarray:
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


@pytest.fixture
def twin(rng: np.random.Generator) -> dict:
    weights = make_weights(rng)
    images = normal(rng, BATCH, HEIGHT, WIDTH, IN_CHANNELS)
    targets = rng.integers(0, CLASSES, BATCH)
    return {"weights": weights, "images": images, "targets": targets}


# ----------------------------------------------------------------------------- saliency


def test_saliency_matches_hand_gradient_of_weighted_relu(rng: np.random.Generator) -> None:
    w = normal(rng, HEIGHT, WIDTH, IN_CHANNELS)
    x = normal(rng, BATCH, HEIGHT, WIDTH, IN_CHANNELS)
    expected = np.abs(w * (x > 0))  # d/dx sum(w * relu(x)) = w * [x > 0]

    def score_fn(images: jax.Array) -> jax.Array:
        return jnp.sum(w * jax.nn.relu(images), axis=(1, 2, 3))

    assert_close(saliency(score_fn, x, reduce="none"), expected)
    assert_close(jax.jit(saliency, static_argnums=0)(score_fn, x), expected.max(-1))
    assert_close(saliency(score_fn, x, reduce="sum_abs"), expected.sum(-1))
    assert_close(reduce_channels(jnp.asarray(-w[None]), "sum"), -w[None].sum(-1))


def test_saliency_matches_captum(twin: dict) -> None:
    net = torch_net(twin["weights"])
    expected = Saliency(net).attribute(
        to_nchw(twin["images"]), target=twin["targets"].tolist(), abs=True
    )
    score_fn = jax_score_fn(twin["weights"], twin["targets"])
    assert_close(saliency(score_fn, twin["images"], reduce="none"), to_nhwc(expected))


# ----------------------------------------------------------------------------- guided backprop


def hand_guided_mlp(
    x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]], v: np.ndarray
) -> np.ndarray:
    """Guided gradient of ``relu(...relu(x @ W1 + b1)...) @ v`` per row, written out by hand."""
    pre_activations, h = [], x
    for w, b in layers:
        pre_activations.append(h @ w + b)
        h = np.maximum(pre_activations[-1], 0)
    grad = np.broadcast_to(v, h.shape)
    for (w, _), z in zip(reversed(layers), reversed(pre_activations), strict=True):
        grad = grad * (z > 0) * (grad > 0)  # the guided rule
        grad = grad @ w.T
    return grad


def flat_score(x: jax.Array, mlp: Callable[[jax.Array], jax.Array]) -> jax.Array:
    return mlp(x.reshape(x.shape[0], -1))


def test_guided_backprop_rewrites_both_relu_forms_in_nested_jits(rng: np.random.Generator) -> None:
    x = normal(rng, BATCH, 4, 3, IN_CHANNELS)
    n_in = 4 * 3 * IN_CHANNELS
    # Wide layers make it vanishingly rare that guided and plain gradients agree by chance.
    w1, b1 = normal(rng, n_in, 16, scale=0.5), normal(rng, 16, scale=0.3)
    w2, b2 = normal(rng, 16, 16, scale=0.5), normal(rng, 16, scale=0.3)
    v = normal(rng, 16)

    @jax.jit
    def second_layer(h: jax.Array) -> jax.Array:
        return jnp.maximum(h @ w2 + b2, 0)  # a bare max(x, 0), inside a nested jit

    def mlp(flat: jax.Array) -> jax.Array:
        return second_layer(jax.nn.relu(flat @ w1 + b1)) @ v

    def score_fn(images: jax.Array) -> jax.Array:
        return flat_score(images, mlp)

    expected = hand_guided_mlp(x.reshape(BATCH, -1), [(w1, b1), (w2, b2)], v).reshape(x.shape)
    guided = jax.jit(guided_backprop, static_argnums=0)(score_fn, x)
    plain = jax.grad(lambda im: score_fn(im).sum())(x)
    assert np.max(np.abs(np.asarray(plain) - expected)) > 1e-3  # the rewrite must matter here
    assert_close(guided, expected, rtol=1e-5)

    # Without the bare-max rewrite only the jax.nn.relu layer is guided.
    partly = guided_backprop(score_fn, x, rewrite_maximum=False)
    assert np.max(np.abs(np.asarray(partly) - expected)) > 1e-3
    assert np.max(np.abs(np.asarray(partly) - np.asarray(plain))) > 1e-3


def test_guided_backprop_through_nnx_jit_scan_and_traced_params(rng: np.random.Generator) -> None:
    x = normal(rng, BATCH, 4, 3, IN_CHANNELS)
    n_in = 4 * 3 * IN_CHANNELS

    class Mlp(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.first = nnx.Linear(n_in, 9, rngs=rngs)
            self.second = nnx.Linear(9, 9, rngs=rngs)
            self.out = nnx.Linear(9, 1, rngs=rngs)

        def __call__(self, flat: jax.Array) -> jax.Array:
            return self.out(nnx.relu(self.second(nnx.relu(self.first(flat)))))[:, 0]

    model = Mlp(nnx.Rngs(int(rng.integers(1 << 30))))
    layers = [
        (np.asarray(layer.kernel[...]), np.asarray(layer.bias[...]))
        for layer in (model.first, model.second)
    ]
    v = np.asarray(model.out.kernel[...])[:, 0]
    expected = hand_guided_mlp(x.reshape(BATCH, -1), layers, v).reshape(x.shape)

    graphdef, state = nnx.split(model)
    jitted_model = jax.jit(lambda state, flat: nnx.merge(graphdef, state)(flat))
    assert_close(
        guided_backprop(lambda im: flat_score(im, lambda f: jitted_model(state, f)), x), expected
    )

    # Parameters traced by an enclosing jit and closed over by the score function.
    @jax.jit
    def explain(state: nnx.State, images: jax.Array) -> jax.Array:
        return guided_backprop(lambda im: flat_score(im, nnx.merge(graphdef, state)), images)

    assert_close(explain(state, x), expected)

    # ReLUs inside lax.cond and lax.scan bodies (nnx.scan over stacked layers makes the latter).
    w_square = normal(rng, 9, 9)
    b_square = normal(rng, 2, 9, scale=0.3)
    w_in, b_in = layers[0]

    def scanned(flat: jax.Array) -> jax.Array:
        def layer(h: jax.Array, wb: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
            return jax.nn.relu(h @ wb[0] + wb[1]), None

        def first_layer(f: jax.Array) -> jax.Array:
            return jax.nn.relu(f @ w_in + b_in)

        # A data-dependent cond whose taken branch holds a ReLU.
        h = jax.lax.cond(
            jnp.all(jnp.isfinite(flat)), first_layer, lambda f: jnp.zeros_like(f @ w_in), flat
        )
        h, _ = jax.lax.scan(layer, h, (np.stack([w_square, w_square.T]), b_square))
        return h @ v

    expected = hand_guided_mlp(
        x.reshape(BATCH, -1),
        [layers[0], (w_square, b_square[0]), (w_square.T, b_square[1])],
        v,
    ).reshape(x.shape)
    assert_close(guided_backprop(lambda im: flat_score(im, scanned), x), expected)


def test_guided_backprop_leaves_other_maxima_alone(rng: np.random.Generator) -> None:
    x = normal(rng, BATCH, 4, 3, IN_CHANNELS)
    w = normal(rng, 4, 3, IN_CHANNELS)

    def score_fn(images: jax.Array) -> jax.Array:
        # softplus hides max(x, 0)-like arithmetic in a custom_jvp; max(x, 0.3) is no ReLU.
        smooth = jax.nn.softplus(images) * w + jnp.maximum(images, 0.3) * w**2
        return jnp.sum(smooth, axis=(1, 2, 3))

    assert_close(guided_backprop(score_fn, x), jax.grad(lambda im: score_fn(im).sum())(x))


def test_guided_backprop_matches_captum(twin: dict) -> None:
    net = torch_net(twin["weights"])
    expected = GuidedBackprop(net).attribute(
        to_nchw(twin["images"]), target=twin["targets"].tolist()
    )
    score_fn = jax_score_fn(twin["weights"], twin["targets"])
    guided = guided_backprop(score_fn, twin["images"])
    assert_close(guided, to_nhwc(expected))
    # pytorch-grad-cam's GuidedBackpropReLUModel: same rule, first image only, HWC.
    first = GuidedBackpropReLUModel(net, device="cpu")(
        to_nchw(twin["images"][:1]), target_category=int(twin["targets"][0])
    )
    assert_close(guided[0], first)


def test_guided_gradcam_is_the_pixelwise_product(rng: np.random.Generator) -> None:
    guided = normal(rng, BATCH, HEIGHT, WIDTH, IN_CHANNELS)
    cam = rng.uniform(size=(BATCH, HEIGHT, WIDTH)).astype(np.float32)
    assert_close(guided_gradcam(guided, cam), guided * cam[..., None])
    with pytest.raises(ValueError, match="same B, H, W"):
        guided_gradcam(guided, cam[:, :-1])


# ----------------------------------------------------------------------------- SmoothGrad


def test_smoothgrad_is_the_mean_gradient_over_its_noise(rng: np.random.Generator) -> None:
    x = normal(rng, BATCH, 5, 4, IN_CHANNELS)
    w = normal(rng, 5, 4, IN_CHANNELS)

    def score_fn(images: jax.Array) -> jax.Array:
        return jnp.sum(w * jnp.sin(images) * jax.nn.relu(images + 0.5), axis=(1, 2, 3))

    key = jax.random.key(int(rng.integers(1 << 30)))
    noise = smoothgrad_noise(key, x, n_samples=7, noise_level=0.2)
    value_range = x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3))
    unit = jax.random.normal(key, noise.shape)
    assert_close(noise, 0.2 * value_range[None, :, None, None, None] * np.asarray(unit))

    grad = jax.jit(jax.grad(lambda im: score_fn(im).sum()))
    samples = np.stack([np.asarray(grad(x + noise[s])) for s in range(7)])
    # 7 samples in chunks of 3 runs the scan and the remainder path.
    result = smoothgrad(score_fn, x, key=key, n_samples=7, noise_level=0.2, batch_size=3)
    assert_close(result, samples.mean(0))
    reduced = smoothgrad(score_fn, x, key=key, n_samples=7, noise_level=0.2, reduce="max_abs")
    assert_close(reduced, np.abs(samples.mean(0)).max(-1))
    squared = smoothgrad_from_noise(score_fn, x, noise, square=True, batch_size=3)
    assert_close(squared, (samples**2).mean(0))


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq"])
def test_smoothgrad_matches_captum_noise_tunnel_on_its_noise(twin: dict, nt_type: str) -> None:
    net = torch_net(twin["weights"])
    n_samples, stdev, seed = 4, 0.3, int(twin["targets"].sum()) + 17
    torch.manual_seed(seed)
    expected = NoiseTunnel(Saliency(net)).attribute(
        to_nchw(twin["images"]),
        nt_type=nt_type,
        nt_samples=n_samples,
        stdevs=stdev,
        target=twin["targets"].tolist(),
        abs=False,
    )
    # Regenerate captum's noise: one torch.normal draw over the inputs repeat_interleaved.
    torch.manual_seed(seed)
    noise = torch.normal(
        0, torch.tensor(stdev).repeat((BATCH * n_samples, IN_CHANNELS, HEIGHT, WIDTH))
    )
    noise = noise.numpy().reshape(BATCH, n_samples, IN_CHANNELS, HEIGHT, WIDTH)
    noise = np.transpose(noise, (1, 0, 3, 4, 2))
    score_fn = jax_score_fn(twin["weights"], twin["targets"])
    result = smoothgrad_from_noise(
        score_fn, twin["images"], noise, square=nt_type == "smoothgrad_sq", batch_size=3
    )
    assert_close(result, to_nhwc(expected))


# ----------------------------------------------------------------------------- integrated gradients


@pytest.mark.parametrize(
    "method",
    ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"],
)
def test_integration_points_are_captums(method: str) -> None:
    step_sizes, alphas = approximation_parameters(method)
    ours_alphas, ours_weights = integration_points(7, method)
    np.testing.assert_allclose(ours_alphas, alphas(7), atol=1e-7)
    np.testing.assert_allclose(ours_weights, step_sizes(7), atol=1e-12)


def test_integrated_gradients_of_a_quadratic(rng: np.random.Generator) -> None:
    x = normal(rng, BATCH, 4, 3, IN_CHANNELS)
    baseline = normal(rng, BATCH, 4, 3, IN_CHANNELS)
    w = normal(rng, 4, 3, IN_CHANNELS)

    def score_fn(images: jax.Array) -> jax.Array:
        return jnp.sum(w * images**2, axis=(1, 2, 3))

    # The path integral of a linear gradient: IG = w (x^2 - x0^2), exact for Gauss-Legendre.
    exact = w * (x**2 - baseline**2)
    for batch_size in (2, None):
        assert_close(
            integrated_gradients(score_fn, x, baseline=baseline, steps=5, batch_size=batch_size),
            exact,
        )
    assert_close(integrated_gradients(score_fn, x, steps=2), w * x**2)
    assert_close(integrated_gradients(score_fn, x, steps=2, reduce="sum"), (w * x**2).sum(-1))
    # captum's trapezoid weights sum to (steps - 1) / steps: the attribution shrinks by that.
    trapezoid = integrated_gradients(
        score_fn, x, baseline=baseline, steps=6, method="riemann_trapezoid"
    )
    assert_close(trapezoid, exact * 5 / 6)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_matches_captum(twin: dict, method: str) -> None:
    baseline = (0.3 * twin["images"][::-1]).copy()
    net = torch_net(twin["weights"])
    expected = IntegratedGradients(net).attribute(
        to_nchw(twin["images"]),
        baselines=to_nchw(baseline),
        target=twin["targets"].tolist(),
        n_steps=8,
        method=method,
    )
    score_fn = jax_score_fn(twin["weights"], twin["targets"])
    result = integrated_gradients(
        score_fn, twin["images"], baseline=baseline, steps=8, method=method, batch_size=3
    )
    assert_close(result, to_nhwc(expected))


# ----------------------------------------------------------------------------- Score-CAM


def test_resize_matches_torch_upsampling_bilinear(rng: np.random.Generator) -> None:
    maps = normal(rng, BATCH, 5, 7)
    for size in ((16, 12), (3, 9), (1, 1)):
        expected = torch.nn.UpsamplingBilinear2d(size=size)(torch.from_numpy(maps)[:, None])
        assert_close(resize_bilinear_align_corners(jnp.asarray(maps), size), expected[:, 0])


def pgc_final_map(raw: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's post-processing of one layer's raw map (BaseCAM.forward)."""
    scaled = scale_cam_image(np.maximum(raw, 0), (WIDTH, HEIGHT))
    return scale_cam_image(np.maximum(scaled[:, None], 0).mean(axis=1))


def torch_activations(net: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    captured = []
    handle = layer.register_forward_hook(lambda module, inputs, out: captured.append(out))
    with torch.no_grad():
        net(x)
    handle.remove()
    return captured[0].numpy()


def test_scorecam_matches_pytorch_grad_cam(twin: dict) -> None:
    net = torch_net(twin["weights"])
    x, tap = to_nchw(twin["images"]), net[3]
    targets = [ClassifierOutputTarget(int(t)) for t in twin["targets"]]
    cam = ScoreCAM(net, target_layers=[tap])
    cam.batch_size = 3
    expected_map = cam(input_tensor=x, targets=targets)
    expected_weights = cam.get_cam_weights(x, tap, targets, torch_activations(net, tap, x), None)

    activations = jax_features(twin["weights"], jnp.asarray(twin["images"]))
    score_fn = jax_score_fn(twin["weights"], twin["targets"])
    maps = []
    for batch_size in (1, 3, None):
        explain = jax.jit(functools.partial(scorecam, score_fn=score_fn, batch_size=batch_size))
        maps.append(np.asarray(explain(twin["images"], activations)))
    weights = scorecam_weights(twin["images"], activations, score_fn, batch_size=3)
    assert_close(weights, expected_weights)
    assert_close(maps[1], np.einsum("bc,bhwc->bhw", expected_weights, activations))
    assert_close(pgc_final_map(maps[1]), expected_map)
    assert_close(maps[0], maps[1], rtol=1e-5)
    assert_close(maps[2], maps[1], rtol=1e-5)


# ----------------------------------------------------------------------------- Ablation-CAM


@pytest.mark.parametrize("relu_after_tap", [True, False])
def test_ablationcam_matches_pytorch_grad_cam(twin: dict, relu_after_tap: bool) -> None:
    """With a ReLU the ablated channel is zeroed; without, pgc writes min - k * 1e7."""
    net = torch_net(twin["weights"], relu_after_tap=relu_after_tap)
    x, tap = to_nchw(twin["images"]), net[3 if relu_after_tap else 2]
    targets = [ClassifierOutputTarget(int(t)) for t in twin["targets"]]
    cam = AblationCAM(net, target_layers=[tap], batch_size=3)
    expected_map = cam(input_tensor=x, targets=targets)
    expected_weights = cam.get_cam_weights(x, tap, targets, torch_activations(net, tap, x), None)

    weights = twin["weights"]
    activations = jax_features(weights, jnp.asarray(twin["images"]), relu=relu_after_tap)

    def head_score_fn(acts: jax.Array) -> jax.Array:
        return class_scores(jax_head(weights, acts), twin["targets"])

    maps = []
    for batch_size in (1, 3, None):
        explain = jax.jit(
            functools.partial(
                ablationcam, head_score_fn=head_score_fn, batch_size=batch_size, pgc_batch_size=3
            )
        )
        maps.append(np.asarray(explain(activations)))
    ours = ablationcam_weights(activations, head_score_fn, batch_size=3, pgc_batch_size=3)
    assert_close(ours, expected_weights)
    assert_close(maps[1], np.einsum("bc,bhwc->bhw", expected_weights, activations))
    assert_close(pgc_final_map(maps[1]), expected_map)
    assert_close(maps[0], maps[1], rtol=1e-5)
    assert_close(maps[2], maps[1], rtol=1e-5)
    if relu_after_tap:  # ReLU activations: pgc zeroes the channel, whatever its batch position
        assert_close(ablationcam(activations, head_score_fn), maps[1], rtol=1e-5)
        assert_close(
            ablationcam(activations, head_score_fn, ablation_value=0.0), maps[1], rtol=1e-5
        )


def test_old_input_space_names_still_work() -> None:
    for name in ("saliency", "smoothgrad", "integrated_gradients", "guided_backprop",
                 "guided_gradcam", "reduce_channels", "scorecam", "ablationcam",
                 "resize_bilinear_align_corners"):
        assert getattr(jaxcam.input_space, name) is globals()[name], name

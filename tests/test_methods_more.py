"""The methods added for pytorch-grad-cam 1.5.7 parity (FEM, KPCA-CAM, Seg-Eigen-CAM,
ShapleyCAM, Finer-CAM, RandomCAM, RefineCAM), each against pytorch-grad-cam on the MSD-Net twin
(the same weights in PyTorch and Flax NNX)."""

from __future__ import annotations

import contextlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _compiles import compilations
from _msd_twins import EXIT, INNER_EXIT, INNER_LAYER, as_float64
from flax import nnx
from pytorch_grad_cam import (
    FEM,
    KPCA_CAM,
    FinerCAM,
    FullGrad,
    RandomCAM,
    RefineCAM,
    SegEigenCAM,
    ShapleyCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget
from scipy import stats

import jaxcam
from jaxcam import registry
from jaxcam.methods.layer import kernel_pca_projection, random_channel_weights, randomcam
from jaxcam.targets import ClassifierOutputReST as JaxReST
from msdnet_flax.testing import ExitModel, module_at, nchw


def _where(flax_model, where):
    if where == "exit_input":
        return flax_model.exit_feature_path(EXIT), EXIT
    return INNER_LAYER, INNER_EXIT


def _pgc(twin, cls, layers, exit_index, x, targets=None, call=None, **init):
    model = ExitModel(twin, exit_index)
    layers = [layers] if isinstance(layers, str) else layers
    cam = cls(model, [module_at(twin, p) for p in layers], **init)
    dtype = next(twin.parameters()).dtype
    return cam(nchw(x).to(dtype), targets, **(call or {}))


def _jax(flax_model, method, layers, exit_index, x, **kwargs):
    return np.asarray(jaxcam.explain(flax_model, x, target_layer=layers, method=method,
                                     output_index=exit_index, **kwargs))


def _logit_targets(classes):
    return [ClassifierOutputTarget(int(c)) for c in classes]


def test_new_methods_are_registered_with_papers():
    for name, cls in [("fem", "FEM"), ("kpcacam", "KPCA_CAM"), ("segeigencam", "SegEigenCAM"),
                      ("shapleycam", "ShapleyCAM"), ("finercam", "FinerCAM"),
                      ("randomcam", "RandomCAM"), ("refinecam", "RefineCAM")]:
        record = registry.get(name)
        assert record.class_name == cls and record.paper and record.summary
        assert name in jaxcam.METHODS


def test_method_record_checks_the_new_attributes():
    def fn(probe):
        return probe

    for extra in [{"uses_hvp": True}, {"uses_key": True}, {"scores": fn}]:
        with pytest.raises(ValueError, match="activation-gradient"):
            registry.Method(name="x", kind="input", fn=fn, summary="", paper="", **extra)
    # explain_exits gives every exit its own scores and Hessian-vector product, but no key.
    with pytest.raises(ValueError, match="explain_exits does not provide uses_key"):
        registry.Method(name="x", kind="activation_gradient", fn=fn, summary="", paper="",
                        multi_exit=True, uses_key=True)
    for extra in [{"uses_hvp": True}, {"scores": fn}]:
        registry.Method(name="x", kind="activation_gradient", fn=fn, summary="", paper="",
                        multi_exit=True, **extra)
    with pytest.raises(ValueError, match="layer_combine"):
        registry.Method(name="x", kind="activation_gradient", fn=fn, summary="", paper="",
                        layer_combine="max")


# --- FEM: no gradients, deterministic ----------------------------------------------------------

@pytest.mark.parametrize("where", ["exit_input", "inner"])
@pytest.mark.parametrize("k", [2.0, 1.0])
def test_fem_matches_pytorch_grad_cam(twins, twins64, rng, where, k):
    twin, flax_model = twins
    layer, exit_index = _where(flax_model, where)
    x = rng.standard_normal((3, 32, 32, 3)).astype(np.float32)
    ref = _pgc(twin, FEM, layer, exit_index, x, k=k)
    got = _jax(flax_model, "fem", layer, exit_index, x, k=k)
    assert got.shape == ref.shape == (3, 32, 32)
    err = np.abs(got - ref).max()
    print(f"FEM {where} k={k}: max |jaxcam - pgc| = {err:.2e}")
    # The k-sigma threshold is a comparison: a float32 activation within rounding of it may be
    # counted by one library and not the other, which moves a channel weight by 1/(h*w).
    # Float64 takes that out; float32 must match to 1e-4 unless such a tie occurred.
    if err > 1e-4:
        with jax.enable_x64(True):
            twin64, model64 = twins64
            ref = _pgc(twin64, FEM, layer, exit_index, x.astype(np.float64), k=k)
            got = _jax(model64, "fem", layer, exit_index, x.astype(np.float64), k=k)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


# --- Seg-Eigen-CAM: gradients, SVD with its sign fixed -----------------------------------------

@pytest.mark.parametrize("where", ["exit_input", "inner"])
def test_segeigencam_matches_pytorch_grad_cam(twins, twins64, rng, where):
    twin, flax_model = twins
    layer, exit_index = _where(flax_model, where)
    x = rng.standard_normal((3, 32, 32, 3)).astype(np.float32)
    classes = rng.integers(0, 10, size=3)
    if where == "exit_input":
        ref = _pgc(twin, SegEigenCAM, layer, exit_index, x, _logit_targets(classes))
        got = _jax(flax_model, "segeigencam", layer, exit_index, x, targets=classes)
        print(f"SegEigenCAM float32: {np.abs(got - ref).max():.2e}")
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    # Inside block 1 the float32 gradient passes ReLUs that PyTorch and XLA may round to
    # opposite sides of zero (see tests/test_parity_gradcam.py), so compare in float64 there.
    with jax.enable_x64(True):
        twin64, model64 = twins64
        x64 = x.astype(np.float64)
        ref = _pgc(twin64, SegEigenCAM, layer, exit_index, x64, _logit_targets(classes))
        got = _jax(model64, "segeigencam", layer, exit_index, x64, targets=classes)
    print(f"SegEigenCAM float64 {where}: {np.abs(got - ref).max():.2e}")
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


# --- KPCA-CAM: kernel PCA (scikit-learn in pytorch-grad-cam; eigh here) ------------------------

@pytest.mark.parametrize("where", ["exit_input", "inner"])
@pytest.mark.parametrize("kernel", ["sigmoid", "rbf", "poly", "linear", "cosine"])
def test_kpcacam_matches_pytorch_grad_cam(twins, twins64, rng, where, kernel):
    """At the 8x8 classifier input scikit-learn solves the kernel's eigenproblem densely; the
    inner 16x16 layer has 256 > 200 pixels, where it uses ARPACK (a random start vector, then
    iterated to convergence): the same eigenvector, to ARPACK's tolerance."""
    twin, flax_model = twins
    layer, exit_index = _where(flax_model, where)
    x = rng.standard_normal((3, 32, 32, 3)).astype(np.float32)
    # The top eigenvector is only determined as well as the gap to the second eigenvalue
    # allows; float64 takes float32's rounding of the kernel out of the comparison.
    with jax.enable_x64(True):
        twin64, model64 = twins64
        x64 = x.astype(np.float64)
        ref = _pgc(twin64, KPCA_CAM, layer, exit_index, x64, kernel=kernel)
        got = _jax(model64, "kpcacam", layer, exit_index, x64, kernel=kernel)
    err64 = np.abs(got - ref).max()
    ref32 = _pgc(twin, KPCA_CAM, layer, exit_index, x, kernel=kernel)
    got32 = _jax(flax_model, "kpcacam", layer, exit_index, x, kernel=kernel)
    err32 = np.abs(got32 - ref32).max()
    print(f"KPCA-CAM {kernel} {where}: float64 {err64:.2e}, float32 {err32:.2e}")
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert np.mean(np.abs(got32 - ref)) < 1e-3 and np.mean(np.abs(ref32 - ref)) < 1e-3


def test_kernel_pca_projection_matches_scikit_learn(rng):
    from sklearn.decomposition import KernelPCA

    acts = rng.standard_normal((2, 6, 7, 5))
    gamma = float(rng.uniform(0.05, 0.5))
    with jax.enable_x64(True):
        for kernel in ["sigmoid", "rbf", "poly", "linear", "cosine"]:
            got = np.asarray(kernel_pca_projection(acts, kernel, gamma))
            for image, mine in zip(acts, got, strict=True):
                pixels = image.reshape(-1, 5)
                ref = KernelPCA(n_components=1, kernel=kernel, gamma=gamma).fit_transform(
                    pixels - pixels.mean(0))[:, 0]
                np.testing.assert_allclose(mine.ravel(), ref, atol=1e-9 * np.abs(ref).max())


# --- ShapleyCAM: gradient minus half the Hessian-vector product --------------------------------

@pytest.mark.parametrize("where", ["exit_input", "inner"])
def test_shapleycam_matches_pytorch_grad_cam(twins, twins64, rng, where):
    twin, flax_model = twins
    layer, exit_index = _where(flax_model, where)
    x = rng.standard_normal((3, 32, 32, 3)).astype(np.float32)
    category = int(rng.integers(0, 10))
    rest = [ClassifierOutputReST(category)] * 3
    if where == "exit_input":
        ref = _pgc(twin, ShapleyCAM, layer, exit_index, x, rest)
        got = _jax(flax_model, "shapleycam", layer, exit_index, x, targets=JaxReST(category))
        print(f"ShapleyCAM float32: {np.abs(got - ref).max():.2e}")
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    with jax.enable_x64(True):
        twin64, model64 = twins64
        x64 = x.astype(np.float64)
        ref = _pgc(twin64, ShapleyCAM, layer, exit_index, x64, rest)
        got = _jax(model64, "shapleycam", layer, exit_index, x64, targets=JaxReST(category))
        raw = _jax(model64, "shapleycam", layer, exit_index, x64, targets=JaxReST(category),
                   relu=False, normalize=False, resize=False)
        raw_gradcam = _jax(model64, "gradcam", layer, exit_index, x64,
                           targets=JaxReST(category), relu=False, normalize=False, resize=False)
    print(f"ShapleyCAM float64 {where}: {np.abs(got - ref).max():.2e}")
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    # The ReST target's softmax is curved: the Hessian term is not zero, ShapleyCAM != Grad-CAM.
    assert np.abs(raw - raw_gradcam).max() > 1e-3 * np.abs(raw_gradcam).max()


def test_shapleycam_is_gradcam_for_a_logit_of_a_relu_head(twins, rng):
    """A logit of ReLU, pooling and linear layers has a zero Hessian almost everywhere."""
    _, flax_model = twins
    layer = flax_model.exit_feature_path(EXIT)
    x = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
    classes = rng.integers(0, 10, size=2)
    shapley = _jax(flax_model, "shapleycam", layer, EXIT, x, targets=classes)
    grad = _jax(flax_model, "gradcam", layer, EXIT, x, targets=classes)
    np.testing.assert_allclose(shapley, grad, atol=1e-6)


# --- Finer-CAM: Grad-CAM of a target against the most similar classes -------------------------

@pytest.mark.parametrize("how", ["top_class", "target_idx", "alpha_and_comparisons"])
def test_finercam_matches_pytorch_grad_cam(twins, twins64, rng, how):
    twin, flax_model = twins
    layer, exit_index = _where(flax_model, "exit_input")
    # A class can score below zero at every pixel of random weights (about 1 in 15 here), and
    # then both maps are all zeros after the ReLU and agree for nothing: draw again until every
    # image's reference map has something to compare.
    for _ in range(20):
        x = rng.standard_normal((3, 32, 32, 3)).astype(np.float32)
        call, options, targets = {}, {}, None
        if how == "target_idx":
            idx = int(rng.integers(0, 10))
            call, targets = {"target_idx": idx}, idx
        elif how == "alpha_and_comparisons":
            alpha = float(rng.uniform(0.3, 1.5))
            call = {"alpha": alpha, "comparison_categories": [1, 4, 20]}  # 20 >= K is dropped
            options = {"alpha": alpha, "comparison_categories": [1, 4, 20]}  # a list is fine
        ref = _pgc(twin, FinerCAM, layer, exit_index, x, None, call=call)
        if np.all(ref.reshape(len(x), -1).max(axis=1) > 0.5):
            break
    else:
        pytest.fail("20 draws gave an all-zero reference map: the weights are degenerate")
    got = _jax(flax_model, "finercam", layer, exit_index, x, targets=targets, **options)
    err = np.abs(got - ref).max()
    print(f"FinerCAM {how}: {err:.2e}")
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    # Different from the plain Grad-CAM of the same class: the comparison classes matter. The
    # raw maps are compared, as a ReLU may zero both.
    raw = dict(relu=False, normalize=False, resize=False)
    raw_finer = _jax(flax_model, "finercam", layer, exit_index, x, targets=targets, **options,
                     **raw)
    raw_plain = _jax(flax_model, "gradcam", layer, exit_index, x, targets=targets, **raw)
    assert np.abs(raw_plain - raw_finer).max() > 1e-2 * np.abs(raw_plain).max()


def test_finercam_inner_layer_float64(twins64, rng):
    twin64, model64 = twins64
    x = rng.standard_normal((2, 32, 32, 3))
    with jax.enable_x64(True):
        ref = _pgc(twin64, FinerCAM, INNER_LAYER, INNER_EXIT, x)
        got = _jax(model64, "finercam", INNER_LAYER, INNER_EXIT, x)
    print(f"FinerCAM inner float64: {np.abs(got - ref).max():.2e}")
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


# --- RefineCAM: product of per-layer Grad-CAM++ maps -------------------------------------------

def test_refinecam_matches_pytorch_grad_cam(twins, twins64, rng):
    twin, flax_model = twins
    # Two layers feeding exit 3: one inside block 1 (16x16) and the classifier input (4x4 or 8x8).
    layers = [INNER_LAYER, flax_model.exit_feature_path(INNER_EXIT)]
    x = rng.standard_normal((2, 32, 32, 3))
    classes = rng.integers(0, 10, size=2)
    # Grad-CAM++ divides by sums of gradient powers (ill-conditioned in float32, see
    # tests/test_parity_gradcam.py) and the inner layer sees float32 ReLU flips: float64.
    with jax.enable_x64(True):
        twin64, model64 = twins64
        ref = _pgc(twin64, RefineCAM, layers, INNER_EXIT, x, _logit_targets(classes))
        got = _jax(model64, "refinecam", layers, INNER_EXIT, x, targets=classes)
        singles = [_jax(model64, "gradcamplusplus", layer, INNER_EXIT, x, targets=classes)
                   for layer in layers]
    print(f"RefineCAM float64: {np.abs(got - ref).max():.2e}")
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    product = singles[0] * singles[1]
    low = product.min(axis=(1, 2), keepdims=True)
    expected = (product - low) / (1e-7 + (product - low).max(axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # Float32 against pytorch-grad-cam's float32, on average.
    ref32 = _pgc(twin, RefineCAM, layers, INNER_EXIT, x.astype(np.float32),
                 _logit_targets(classes))
    got32 = _jax(flax_model, "refinecam", layers, INNER_EXIT, x.astype(np.float32),
                 targets=classes)
    assert np.mean(np.abs(got32 - ref)) < 5e-3 and np.mean(np.abs(ref32 - ref)) < 5e-3


# --- RandomCAM: the weighting formula with the same weights, and the weights' distribution ----

def test_randomcam_formula_matches_pytorch_grad_cam_with_the_same_weights(twins, rng):
    """pytorch-grad-cam draws from NumPy's global generator: seed it, draw the same weights
    (the same call) and feed them to jaxcam's formula."""
    twin, flax_model = twins
    layer, exit_index = _where(flax_model, "exit_input")
    x = rng.standard_normal((3, 32, 32, 3)).astype(np.float32)
    classes = rng.integers(0, 10, size=3)
    seed = int(rng.integers(0, 2**31))
    np.random.seed(seed)
    ref = _pgc(twin, RandomCAM, layer, exit_index, x, _logit_targets(classes))
    # RandomCAM's weights are drawn after the forward pass; nothing else draws from np.random.
    acts = _torch_activations(twin, layer, exit_index, x)
    np.random.seed(seed)
    weights = np.random.uniform(-1, 1, size=(acts.shape[0], acts.shape[-1]))
    raw = randomcam(acts, None, key=jax.random.key(0), weights=weights)
    got = np.asarray(jaxcam.postprocess.postprocess(raw, (32, 32)))
    print(f"RandomCAM with pgc's weights: {np.abs(got - ref).max():.2e}")
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def _torch_activations(twin, layer, exit_index, x):
    """The twin layer's activations, NHWC (equal to the Flax model's: tests/test_msdnet_*)."""
    saved = {}
    handle = module_at(twin, layer).register_forward_hook(
        lambda module, inputs, output: saved.__setitem__("acts", output.detach()))
    with torch.no_grad():
        ExitModel(twin, exit_index)(nchw(x))
    handle.remove()
    return saved["acts"].numpy().transpose(0, 2, 3, 1)


def test_randomcam_weights_are_uniform_on_minus_one_one(rng):
    """The same distribution as pytorch-grad-cam's: U(-1, 1), independent per image and
    channel (Kolmogorov-Smirnov against U(-1, 1) and against NumPy's own draws)."""
    key = jax.random.key(int(rng.integers(0, 2**31)))
    weights = np.asarray(random_channel_weights(key, 64, 256)).ravel()
    assert weights.min() >= -1 and weights.max() < 1
    # 16384 draws: a wrong distribution (U(0, 1), U(-1/2, 1/2), N(0, 1/3)) gives p < 1e-25,
    # so a threshold of 1e-6 keeps the power and fails a correct one once in a million runs.
    assert stats.kstest(weights, stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-6
    numpy_draws = rng.uniform(-1, 1, size=weights.size)
    assert stats.ks_2samp(weights, numpy_draws).pvalue > 1e-6
    assert abs(weights.mean()) < 0.02 and abs(weights.var() - 1 / 3) < 0.01


def test_randomcam_maps_are_reproducible_by_key_and_differ_between_keys(twins, rng):
    _, flax_model = twins
    layer = flax_model.exit_feature_path(EXIT)
    x = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
    a = _jax(flax_model, "randomcam", layer, EXIT, x, key=jax.random.key(1))
    b = _jax(flax_model, "randomcam", layer, EXIT, x, key=jax.random.key(1))
    c = _jax(flax_model, "randomcam", layer, EXIT, x, key=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-2


def test_randomcam_map_statistics_match_pytorch_grad_cam(twins, rng):
    """Over many draws, the maps of both libraries have the same per-pixel mean and spread."""
    twin, flax_model = twins
    layer = flax_model.exit_feature_path(EXIT)
    x = np.repeat(rng.standard_normal((1, 32, 32, 3)).astype(np.float32), 32, axis=0)
    np.random.seed(int(rng.integers(0, 2**31)))
    ref = _pgc(twin, RandomCAM, layer, EXIT, x, _logit_targets([0] * 32))
    got = _jax(flax_model, "randomcam", layer, EXIT, x, targets=0,
               key=jax.random.key(int(rng.integers(0, 2**31))))
    # Each row is one draw of the weights for the same image: compare the two samples of maps.
    assert stats.ks_2samp(ref.mean(axis=(1, 2)), got.mean(axis=(1, 2))).pvalue > 1e-3
    assert abs(ref.mean() - got.mean()) < 0.1


# --- FullGrad: input and every bias, no target layer -------------------------------------------

class _UsedBiasLayers(torch.nn.Module):
    """Exit k of the twin, showing pytorch-grad-cam's FullGrad only the batch norms that the
    explained output depends on, in the order they run.

    pytorch-grad-cam's FullGrad zips the bias layers it finds (module definition order) with
    the gradients its hooks receive (execution order) and asserts they are as many. MSD-Net
    computes finer-scale features in each block that a given exit never uses, so their hooks
    receive no gradient and the assertion fails; the network itself is therefore kept out of
    the module tree (a plain attribute), and the used batch norms are registered in run order.
    """

    def __init__(self, twin, k):
        super().__init__()
        self.__dict__["net"] = ExitModel(twin, k)
        named = [(n, m) for n, m in self.net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
        ran, got_grad, handles = [], set(), []
        for name, module in named:
            def hook(module, inputs, output, name=name):
                ran.append(name)
                output.register_hook(lambda g: got_grad.add(name))
            handles.append(module.register_forward_hook(hook))
        dtype = next(twin.parameters()).dtype
        x = torch.randn(1, 3, 32, 32, dtype=dtype, requires_grad=True)
        self.net(x)[0, 0].backward()
        for handle in handles:
            handle.remove()
        modules = dict(named)
        self.used = torch.nn.ModuleList([modules[n] for n in ran if n in got_grad])

    def forward(self, x):
        return self.net(x)


def _pgc_fullgrad(twin, x, classes):
    model = _UsedBiasLayers(twin, 0)
    dtype = next(twin.parameters()).dtype
    cam = FullGrad(model, [])
    assert len(cam.target_layers) == len(model.used) > 0
    return cam(nchw(x).to(dtype), _logit_targets(classes))


def test_fullgrad_matches_pytorch_grad_cam(twins, twins64, rng):
    twin, flax_model = twins
    x = rng.standard_normal((3, 32, 32, 3)).astype(np.float32)
    classes = rng.integers(0, 10, size=3)
    ref = _pgc_fullgrad(twin, x, classes)
    got = _jax(flax_model, "fullgrad", None, 0, x, targets=classes)
    err32 = np.abs(got - ref).max()
    with jax.enable_x64(True):
        twin64, model64 = twins64
        x64 = x.astype(np.float64)
        ref64 = _pgc_fullgrad(twin64, x64, classes)
        got64 = _jax(model64, "fullgrad", None, 0, x64, targets=classes)
    err64 = np.abs(got64 - ref64).max()
    print(f"FullGrad: float32 {err32:.2e}, float64 {err64:.2e}")
    np.testing.assert_allclose(got64, ref64, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    # Every bias layer of the whole model was found, those of other exits included.
    paths, _ = bias_layers_of(flax_model)
    n_torch = sum(isinstance(m, torch.nn.BatchNorm2d) for m in twin.modules())
    assert len(paths) == n_torch


def bias_layers_of(flax_model):
    from jaxcam.methods.layer import bias_layers

    return bias_layers(flax_model)


# --- Deep Feature Factorization: NMF of the activations ----------------------------------------

@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns when NMF reaches max_iter
        yield


def test_nmf_matches_scikit_learn(rng):
    from sklearn.decomposition import NMF

    from jaxcam.methods.layer import nmf

    x = np.abs(rng.standard_normal((int(rng.integers(8, 30)), int(rng.integers(20, 60)))))
    k = int(rng.integers(2, 6))
    reference = NMF(n_components=k, init="random", random_state=0)
    with _quiet():
        w_ref = reference.fit_transform(x)
    with jax.enable_x64(True):
        w, h = nmf(jnp.asarray(x), k)
    print(f"NMF: {reference.n_iter_} sweeps, |dW| {np.abs(np.asarray(w) - w_ref).max():.1e}")
    np.testing.assert_allclose(np.asarray(w), w_ref, atol=1e-9 * np.abs(w_ref).max())
    np.testing.assert_allclose(np.asarray(h), reference.components_,
                               atol=1e-9 * np.abs(reference.components_).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deep_feature_factorization_matches_pytorch_grad_cam(twins, twins64, rng, dtype):
    from pytorch_grad_cam import DeepFeatureFactorization as PgcDFF

    from jaxcam.methods.layer import DeepFeatureFactorization

    twin, flax_model = twins if dtype == np.float32 else twins64
    layer = flax_model.exit_feature_path(EXIT)
    x = rng.standard_normal((2, 32, 32, 3)).astype(dtype)
    k = 4
    channels = _torch_activations(twin, layer, EXIT, x.astype(np.float32)
                                  if dtype == np.float32 else x).shape[-1]
    head = rng.standard_normal((channels, 7))  # a linear map of the concept vectors

    def torch_head(concepts):
        return concepts.double() @ torch.from_numpy(head)

    with _quiet():
        concepts_ref, maps_ref, outputs_ref = PgcDFF(
            ExitModel(twin, EXIT), module_at(twin, layer), computation_on_concepts=torch_head
        )(nchw(x), n_components=k)
    with jax.enable_x64(dtype == np.float64):
        explainer = DeepFeatureFactorization(flax_model, layer,
                                             computation_on_concepts=lambda c: c @ head)
        concepts, maps, outputs = (np.asarray(a) for a in explainer(x, n_components=k))
    maps_ref = np.stack(maps_ref)
    print(f"DFF {np.dtype(dtype).name}: concepts {np.abs(concepts - concepts_ref).max():.1e}, "
          f"maps {np.abs(maps - maps_ref).max():.1e}")
    assert concepts.shape == concepts_ref.shape == (channels, k)
    assert maps.shape == maps_ref.shape == (2, k, 32, 32)
    tol = 1e-4 if dtype == np.float32 else 1e-6
    np.testing.assert_allclose(concepts, concepts_ref, atol=tol * np.abs(concepts_ref).max())
    np.testing.assert_allclose(maps, maps_ref, atol=tol)
    np.testing.assert_allclose(outputs, outputs_ref, atol=tol * np.abs(outputs_ref).max())


# --- SESS: scaled sliding-window patches of a base method, fused ------------------------------

@pytest.mark.parametrize("pool, options", [
    ("mean", {"num_scales": 3, "step_size": 16}),
    ("max", {"scales": [32, 44], "step_size": 12, "pre_filter_ratio": 0.3,
             "use_softmax_scores": False}),
    ("mean", {"num_scales": 2, "theta": 0.2, "smooth": False}),
])
def test_sess_matches_pytorch_grad_cam(twins64, rng, pool, options):
    """The same patches, scores, base Grad-CAM maps, pasting, fusion and blur: the algorithm
    is deterministic, so the maps agree to rounding.

    In float64: SESS takes Grad-CAMs of some 30 patches, and in float32 one patch in a few
    hundred has a ReLU input within rounding of zero in the 2x2 classifier, where the gradient
    jumps (seen: 4e-7, and that patch's map moved by 0.28); float64 keeps such kinks out of
    reach. Both libraries fuse the patch maps in float32."""
    from pytorch_grad_cam import SESS, GradCAM

    from jaxcam.methods.layer import sess

    twin, flax_model = twins64
    layer = flax_model.exit_feature_path(EXIT)
    x = rng.standard_normal((2, 32, 32, 3))
    classes = rng.integers(0, 10, size=2)
    pgc_targets = None if pool == "max" else _logit_targets(classes)
    with SESS(ExitModel(twin, EXIT), [module_at(twin, layer)], base_method=GradCAM, pool=pool,
              **options) as cam:
        ref = cam(nchw(x).double(), pgc_targets)
    with jax.enable_x64(True):
        got = np.asarray(sess(flax_model, x, target_layer=layer, output_index=EXIT, pool=pool,
                              targets=None if pool == "max" else classes, **options))
    print(f"SESS {pool} {options}: {np.abs(got - ref).max():.2e}")
    assert got.shape == ref.shape == (2, 32, 32)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_sess_second_call_compiles_nothing_and_reads_new_weights(twins, rng):
    """A second SESS call with the same model structure, layer, options and shapes compiles
    nothing (its Grad-CAM runs through explain's shared jitted function, not a new explainer's
    own), and weights changed in place between calls are the ones explained."""
    from jaxcam.methods.layer import sess

    model = nnx.clone(twins[1])  # its weights change below; the fixture's stay
    options = dict(target_layer=model.exit_feature_path(EXIT), output_index=EXIT,
                   num_scales=2, step_size=16)

    def images():
        return rng.standard_normal((2, 32, 32, 3)).astype(np.float32)

    sess(model, images(), **options).block_until_ready()  # the first call compiles
    x = images()
    with compilations() as seen:
        before = np.asarray(sess(model, x, **options))
    assert seen == []
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(
        lambda a: a * rng.uniform(0.5, 1.5, a.shape).astype(a.dtype), params))
    with compilations() as seen:
        after = np.asarray(sess(model, x, **options))
    assert seen == []
    fresh = np.asarray(sess(nnx.clone(model), x, **options))  # a model split anew
    np.testing.assert_array_equal(after, fresh)
    assert np.abs(after - before).max() > 1e-3  # the new weights' maps, not stale ones


# --- The ImageNet pair: EfficientNet-Lite0 with its shipped weights ----------------------------

@pytest.fixture(scope="module")
def efficientnet_pair():
    import efficientnet_flax as ef
    from efficientnet_flax.torch_twin import TorchEfficientNetLite0

    twin = TorchEfficientNetLite0()
    twin.load_state_dict(torch.load(ef.pretrained_weights_path(), map_location="cpu",
                                    weights_only=True), strict=True)
    return twin.eval(), ef.load_pretrained()


class _EfficientNetView(torch.nn.Module):
    """The twin with its last feature map (head conv, BN, ReLU6: jaxcam's ``head_conv``) as a
    module output, which pytorch-grad-cam's hooks need (the twin applies ReLU6 functionally)."""

    def __init__(self, twin):
        super().__init__()
        self.twin = twin
        self.features = _EfficientNetFeatures(twin)

    def forward(self, x):
        return self.twin._fc(self.features(x).mean(dim=(2, 3)))


class _EfficientNetFeatures(torch.nn.Module):
    def __init__(self, twin):
        super().__init__()
        self.__dict__["twin"] = twin  # not a submodule: the view's tree holds the twin once

    def forward(self, x):
        return self.twin.extract_features(x)


def _efficientnet_images(rng, n=2):
    import efficientnet_flax as ef

    coarse = rng.uniform(0, 255, (n, 15, 15, 3))
    pixels = np.clip(np.repeat(np.repeat(coarse, 16, 1), 16, 2)[:, :224, :224]
                     + rng.normal(0, 40, (n, 224, 224, 3)), 0, 255)
    return np.asarray(ef.normalize(pixels), np.float32)


@pytest.mark.parametrize("method", ["fem", "kpcacam", "segeigencam", "shapleycam", "finercam"])
def test_new_methods_match_pytorch_grad_cam_on_efficientnet_lite0(efficientnet_pair, rng,
                                                                   method):
    """The real ImageNet model, explained at its last feature map (head_conv, 7x7x1280)."""
    twin, model = efficientnet_pair
    view = _EfficientNetView(twin).eval()
    x = _efficientnet_images(rng)
    category = int(rng.integers(0, 1000))
    xt = nchw(x)
    if method == "finercam":
        ref = FinerCAM(view, [view.features])(xt)
        got = np.asarray(jaxcam.explain(model, x, target_layer="head_conv", method=method))
    else:
        cls = {"fem": FEM, "kpcacam": KPCA_CAM, "segeigencam": SegEigenCAM,
               "shapleycam": ShapleyCAM}[method]
        target = (ClassifierOutputReST(category) if method == "shapleycam"
                  else ClassifierOutputTarget(category))
        ref = cls(view, [view.features])(xt, [target] * 2)
        got = np.asarray(jaxcam.explain(
            model, x, target_layer="head_conv", method=method,
            targets=JaxReST(category) if method == "shapleycam" else category))
    err = np.abs(got - ref).max()
    print(f"EfficientNet-Lite0 {method}: max |jaxcam - pgc| = {err:.2e}")
    assert got.shape == ref.shape == (2, 224, 224)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_fullgrad_matches_pytorch_grad_cam_on_efficientnet_lite0(efficientnet_pair, rng):
    """FullGrad min-max scales every channel of every batch norm's bias-gradient map on its own
    (1280 + thousands of channels at 224x224); a channel whose map is nearly constant has its
    float32 rounding stretched to [0, 1], so float32 maps of the two libraries may differ by
    ~5e-4 (seen on two random images; 8e-7 on others): pytorch-grad-cam's definition is fragile
    there. Float64 twins agree tightly. In float32 both libraries can sit 1.4e-3 from the
    float64 maps on average (seen, while 9e-7 from each other), so jaxcam's float32 is held to
    being as close to float64 as pytorch-grad-cam's float32 is."""
    twin, model = efficientnet_pair
    x = _efficientnet_images(rng, 1)
    category = int(rng.integers(0, 1000))
    ref = FullGrad(twin, [])(nchw(x), _logit_targets([category]))
    got = np.asarray(jaxcam.explain(model, x, method="fullgrad", targets=category))
    twin64, model64 = as_float64(twin, model)
    with jax.enable_x64(True):
        ref64 = FullGrad(twin64, [])(nchw(x).double(), _logit_targets([category]))
        got64 = np.asarray(jaxcam.explain(model64, x.astype(np.float64), method="fullgrad",
                                          targets=category))
    print(f"EfficientNet-Lite0 FullGrad: float32 {np.abs(got - ref).max():.2e}, float64 "
          f"{np.abs(got64 - ref64).max():.2e}; float32 vs float64 mean "
          f"{np.abs(got - ref64).mean():.1e} (jaxcam), {np.abs(ref - ref64).mean():.1e} (pgc)")
    np.testing.assert_allclose(got64, ref64, atol=1e-5, rtol=0)
    assert np.abs(got - ref64).mean() <= 1.5 * np.abs(ref - ref64).mean() + 1e-5

"""Token layers, channels-first layouts and strict keywords (issue 13, points 2-4).

* A ViT in NNX and its PyTorch twin with the same weights: Grad-CAM, HiResCAM and LayerCAM at a
  block's tokens with ``reshape_transform=jaxcam.reshape.vit()`` against pytorch-grad-cam 1.5.7
  with its documented ViT ``reshape_transform`` (1e-4).
* A layer that is not a (B, h, w, C) map without a transform is an error naming the fix.
* ``layout="NCHW"``: a function pair given NCHW images against the same pair in NHWC and a
  hand-written ``jax.grad`` Grad-CAM.
* The pure methods' ``layout=None`` rule (``jaxcam.methods.layer.LAYOUT_RULE``): torch tensors
  hooked from a PyTorch CNN give pytorch-grad-cam's maps (1e-4) with no layout; the same as
  NumPy arrays are refused with both readings and the fix named, read right with
  ``layout="NCHW"``; an explicit layout is never second-guessed; square NHWC maps pass silently,
  square NCHW NumPy maps and permuted (channels-last) torch views are refused; the explain
  pipelines pass their layout, so a channels-first-looking NHWC layer map never trips the check.
* Unknown keywords at every entry point are a ``TypeError`` naming the valid ones.

Inputs are random and fresh each run (the ``rng`` fixture prints its seed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _vit import ViTConfig, twins
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import jaxcam
from jaxcam import reshape
from jaxcam._layout import check_output_shape
from jaxcam.postprocess import postprocess

CONFIG = ViTConfig(image_size=112, patch=16, width=192, depth=4, heads=3, num_classes=10)
BATCH = 4
PGC = {"gradcam": GradCAM, "hirescam": HiResCAM, "layercam": LayerCAM,
       "gradcamplusplus": GradCAMPlusPlus, "xgradcam": XGradCAM}


def pgc_vit_reshape(tensor: torch.Tensor, height: int = CONFIG.grid, width: int = CONFIG.grid
                    ) -> torch.Tensor:
    """pytorch-grad-cam's documented ViT transform (tutorials/vision_transformers.md)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    # Bring the channels to the first dimension, like in CNNs.
    return result.transpose(2, 3).transpose(1, 2)


@pytest.fixture(scope="module")
def vit_twins():
    seed = int.from_bytes(np.random.bytes(4), "little")
    print(f"ViT weight seed: {seed}")
    return twins(CONFIG, seed)


def vit_images(rng: np.random.Generator) -> np.ndarray:
    """(B, 3, H, W) NCHW images (the twin's order)."""
    return rng.standard_normal((BATCH, 3, CONFIG.image_size, CONFIG.image_size)).astype(
        np.float32)


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def torch_module(model: torch.nn.Module, layer: str) -> torch.nn.Module:
    """``"blocks/2/norm1"`` -> ``model.blocks[2].norm1``."""
    module = model
    for part in layer.split("/"):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def pgc_maps(model: torch.nn.Module, method: str, layers: list[str], x: np.ndarray,
             classes: np.ndarray, **kwargs) -> np.ndarray:
    """pytorch-grad-cam's maps; each layer's raw map is checked to be far from zero (HiResCAM
    at the tokens feeding only LayerNorms is identically zero: sum_c x_c dL/dx_c = 0 for a
    scale-invariant use of x, which would make the comparison one of rounding noise)."""
    modules = [torch_module(model, la) for la in layers]
    cam = PGC[method](model=model, target_layers=modules, **kwargs)
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    with cam:
        maps = cam(input_tensor=torch.from_numpy(x), targets=targets)
        hooked = cam.activations_and_grads
        for module, a, g in zip(modules, hooked.activations, hooked.gradients, strict=True):
            raw = cam.get_cam_image(torch.from_numpy(x), module, targets, a.numpy(), g.numpy(),
                                    False)
            assert np.abs(raw).max() > 1e-3, "a degenerate reference map"
    return maps


# ---------------------------------------------------------------------------------------------
# 1. jaxcam.reshape


def test_ready_transforms_lay_tokens_out_row_major(rng):
    b, h, w, d = 2, 3, 5, 4
    grid = rng.standard_normal((b, h, w, d)).astype(np.float32)
    cls = rng.standard_normal((b, 1, d)).astype(np.float32)
    tokens = np.concatenate([cls, grid.reshape(b, h * w, d)], axis=1)
    np.testing.assert_array_equal(reshape.vit(h, w)(jnp.asarray(tokens)), grid)
    np.testing.assert_array_equal(reshape.vit(height=h)(jnp.asarray(tokens)), grid)
    two = np.concatenate([cls, cls, grid.reshape(b, h * w, d)], axis=1)
    np.testing.assert_array_equal(reshape.vit(width=w, skip_tokens=2)(jnp.asarray(two)), grid)
    square = rng.standard_normal((b, 4, 4, d)).astype(np.float32)
    flat = square.reshape(b, 16, d)
    np.testing.assert_array_equal(reshape.vit(skip_tokens=0)(jnp.asarray(flat)), square)
    np.testing.assert_array_equal(reshape.swin()(jnp.asarray(flat)), square)
    np.testing.assert_array_equal(reshape.swin()(jnp.asarray(square)), square)
    np.testing.assert_array_equal(
        reshape.channels_first()(jnp.asarray(np.transpose(square, (0, 3, 1, 2)))), square)
    # Equal arguments, equal and equally hashed transforms: jax.jit's cache keeps one entry.
    assert reshape.vit() == reshape.vit() and hash(reshape.vit()) == hash(reshape.vit())
    assert reshape.vit() != reshape.vit(skip_tokens=2)


def test_ready_transforms_refuse_what_they_cannot_lay_out():
    with pytest.raises(ValueError, match="not a square grid; pass height= and width="):
        reshape.vit()(jnp.zeros((1, 1 + 15, 4)))
    with pytest.raises(ValueError, match="do not fill a 4 x 4 grid"):
        reshape.vit(4, 4)(jnp.zeros((1, 1 + 15, 4)))
    with pytest.raises(ValueError, match=r"takes \(B, tokens, D\)"):
        reshape.vit()(jnp.zeros((1, 4, 4, 8)))
    with pytest.raises(ValueError, match=r"takes a \(B, C, h, w\) map"):
        reshape.channels_first()(jnp.zeros((1, 4, 8)))
    with pytest.raises(ValueError, match="skip_tokens must be >= 0"):
        reshape.vit(skip_tokens=-1)


# ---------------------------------------------------------------------------------------------
# 2. A real ViT against pytorch-grad-cam


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "layercam"])
@pytest.mark.parametrize("layers", [["blocks/1"], ["blocks/3/norm1"], ["blocks/0", "blocks/1"]],
                         ids=["block1", "block3.norm1", "blocks0+1"])
def test_vit_tokens_match_pytorch_grad_cam(vit_twins, rng, method, layers):
    torch_vit, flax_vit = vit_twins
    x = vit_images(rng)
    classes = rng.integers(0, CONFIG.num_classes, BATCH)
    ref = pgc_maps(torch_vit, method, layers, x, classes, reshape_transform=pgc_vit_reshape)
    ours = jaxcam.explain(flax_vit, nhwc(x), target_layer=layers, method=method,
                          targets=classes, reshape_transform=reshape.vit())
    assert ours.shape == (BATCH, CONFIG.image_size, CONFIG.image_size)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4)


def test_vit_through_explainer_and_compat_class(vit_twins, rng):
    torch_vit, flax_vit = vit_twins
    x = vit_images(rng)
    classes = rng.integers(0, CONFIG.num_classes, BATCH)
    ref = pgc_maps(torch_vit, "gradcamplusplus", ["blocks/2"], x, classes,
                   reshape_transform=pgc_vit_reshape)
    explainer = jaxcam.Explainer(flax_vit, target_layer="blocks/2", method="gradcamplusplus",
                                 reshape_transform=reshape.vit(CONFIG.grid, CONFIG.grid))
    np.testing.assert_allclose(np.asarray(explainer(nhwc(x), classes)), ref, atol=1e-4)
    cam = jaxcam.GradCAMPlusPlus(flax_vit, target_layers=["blocks/2"],
                                 reshape_transform=reshape.vit())
    maps = cam(input_tensor=nhwc(x), targets=[jaxcam.ClassifierOutputTarget(int(c))
                                              for c in classes])
    np.testing.assert_allclose(np.asarray(maps), ref, atol=1e-4)


def test_vit_with_a_user_transform_in_pytorch_grad_cams_convention(vit_twins, rng):
    """A transform copied from pytorch-grad-cam returns (B, C, h, w): with layout="NCHW" and
    the images channels-first, it is read as it was written."""
    torch_vit, flax_vit = vit_twins
    x = vit_images(rng)
    classes = rng.integers(0, CONFIG.num_classes, BATCH)
    ref = pgc_maps(torch_vit, "gradcam", ["blocks/2"], x, classes,
                   reshape_transform=pgc_vit_reshape)

    def copied(t: jax.Array) -> jax.Array:
        r = t[:, 1:, :].reshape(t.shape[0], CONFIG.grid, CONFIG.grid, t.shape[2])
        return jnp.transpose(r, (0, 3, 1, 2))

    def features(images_nchw):  # the model up to block 2's tokens, on NCHW images
        m = flax_vit
        tokens = m.patch_embed(jnp.transpose(images_nchw, (0, 2, 3, 1)))
        cls = jnp.broadcast_to(m.cls_token[...], (tokens.shape[0], 1, tokens.shape[-1]))
        t = jnp.concatenate([cls, tokens], axis=1) + m.pos_embed[...]
        for block in list(m.blocks)[:3]:
            t = block(t)
        return t

    def head(t):
        m = flax_vit
        t = m.blocks[3](t)
        return m.head(m.norm(t)[:, 0])

    ours = jaxcam.explain((features, head), x, layout="NCHW", reshape_transform=copied,
                          targets=classes)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4)


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "layercam"])
def test_torch_vit_through_torchax_matches_pytorch_grad_cam(vit_twins, rng, method):
    """The PyTorch twin itself, run as JAX through torchax: layers by dotted name or module
    object, images NCHW (the torch model's default layout)."""
    torch_vit, _ = vit_twins
    x = vit_images(rng)
    classes = rng.integers(0, CONFIG.num_classes, BATCH)
    ref = pgc_maps(torch_vit, method, ["blocks/1"], x, classes,
                   reshape_transform=pgc_vit_reshape)
    by_name = jaxcam.explain(torch_vit, x, target_layer="blocks.1", method=method,
                             targets=classes, reshape_transform=reshape.vit())
    np.testing.assert_allclose(np.asarray(by_name), ref, atol=1e-4)

    def copied(t: jax.Array) -> jax.Array:  # pytorch-grad-cam's transform, written in jnp
        r = t[:, 1:, :].reshape(t.shape[0], CONFIG.grid, CONFIG.grid, t.shape[2])
        return jnp.transpose(r, (0, 3, 1, 2))

    cam = jaxcam.compat.cam_class(method)(torch_vit, target_layers=[torch_vit.blocks[1]],
                                          reshape_transform=copied)
    by_object = cam(input_tensor=x, targets=[jaxcam.ClassifierOutputTarget(int(c))
                                             for c in classes])
    np.testing.assert_allclose(np.asarray(by_object), ref, atol=1e-4)


def test_fresh_ready_transform_does_not_recompile(vit_twins, rng):
    _, flax_vit = vit_twins
    x = nhwc(vit_images(rng))
    jaxcam.explain(flax_vit, x, target_layer="blocks/1", reshape_transform=reshape.vit())
    seen = []

    def listener(event, duration, **kwargs):
        if event.endswith("backend_compile_duration"):
            seen.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        jaxcam.explain(flax_vit, x, target_layer="blocks/1",
                       reshape_transform=reshape.vit()).block_until_ready()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert seen == []


def test_token_layer_without_transform_is_an_error_naming_the_fix(vit_twins, rng):
    _, flax_vit = vit_twins
    x = nhwc(vit_images(rng))
    n = 1 + CONFIG.grid ** 2
    with pytest.raises(ValueError, match=(
            rf"layer 'blocks/2' outputs \({BATCH}, {n}, {CONFIG.width}\): tokens, not a "
            r"\(B, h, w, C\) map; pass reshape_transform=jaxcam.reshape.vit\(\)")):
        jaxcam.explain(flax_vit, x, target_layer="blocks/2")
    vectors = (lambda im: jnp.mean(im, (1, 2)) @ jnp.ones((3, 192)), lambda f: f[:, :10])
    with pytest.raises(ValueError, match=r"outputs \(4, 192\): one vector per image"):
        jaxcam.explain(vectors, x)
    with pytest.raises(ValueError, match=r"reshape_transform turned the output \(4, 50, 192\) "
                                         r"of layer 'blocks/2' into \(4, 49, 192\), not a "):
        jaxcam.explain(flax_vit, x, target_layer="blocks/2",
                       reshape_transform=lambda t: t[:, 1:])
    with pytest.raises(TypeError, match="reshape_transform must be a function"):
        jaxcam.explain(flax_vit, x, target_layer="blocks/2", reshape_transform="vit")


# ---------------------------------------------------------------------------------------------
# 3. Channels-first images and layers


def conv_nchw(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))


@pytest.fixture
def nchw_pair(rng):
    """A two-layer CNN as a (features_fn, head_fn) pair on NCHW images, and its NHWC twin."""
    k1 = jnp.asarray(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.4)
    k2 = jnp.asarray(rng.standard_normal((12, 8, 3, 3)).astype(np.float32) * 0.3)
    dense = jnp.asarray(rng.standard_normal((12, 5)).astype(np.float32))

    def features(x):  # (B, 3, H, W) -> (B, 12, H/2, W/2)
        return conv_nchw(jax.nn.relu(conv_nchw(x, k1)), k2, stride=2)

    def head(f):
        return jnp.mean(jax.nn.relu(f), axis=(2, 3)) @ dense

    nchw_model = (features, head)
    nhwc_model = (lambda x: jnp.transpose(features(jnp.transpose(x, (0, 3, 1, 2))), (0, 2, 3, 1)),
                  lambda f: head(jnp.transpose(f, (0, 3, 1, 2))))
    return nchw_model, nhwc_model


def test_nchw_pair_matches_a_hand_written_grad_cam(nchw_pair, rng):
    (features, head), _ = nchw_pair
    x = rng.standard_normal((3, 3, 20, 24)).astype(np.float32)
    classes = rng.integers(0, 5, 3)
    acts, pullback = jax.vjp(features, jnp.asarray(x))
    grads = jax.grad(lambda a: jnp.sum(head(a)[jnp.arange(3), classes]))(acts)
    raw = jnp.sum(jnp.mean(grads, axis=(2, 3), keepdims=True) * acts, axis=1)  # (B, h, w)
    ours = jaxcam.explain((features, head), x, layout="NCHW", targets=classes, relu=False,
                          normalize=False, resize=False)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(raw), rtol=1e-5, atol=1e-5)
    full = jaxcam.explain((features, head), x, layout="NCHW", targets=classes)
    assert full.shape == (3, 20, 24)
    np.testing.assert_allclose(np.asarray(full), np.asarray(postprocess([raw], (20, 24))),
                               atol=1e-5)
    with pytest.raises(ValueError, match=r"images of shape \(3, 3, 20, 24\) look NCHW .* "
                                         r"pass layout='NCHW'"):
        jaxcam.explain((features, head), x, targets=classes)


@pytest.mark.parametrize("method,kwargs", [
    ("gradcam", {}), ("gradcam", {"aug_smooth": True}), ("layercam", {}),
    ("scorecam", {"batch_size": 4}), ("ablationcam", {"batch_size": 4}), ("saliency", {})])
def test_nchw_pair_equals_its_nhwc_twin(nchw_pair, rng, method, kwargs):
    nchw_model, nhwc_model = nchw_pair
    x = rng.standard_normal((2, 3, 16, 20)).astype(np.float32)
    classes = rng.integers(0, 5, 2)
    ours = jaxcam.explain(nchw_model, x, layout="NCHW", targets=classes, method=method,
                          **kwargs)
    ref = jaxcam.explain(nhwc_model, nhwc(x), targets=classes, method=method, **kwargs)
    assert ours.shape == (2, 16, 20)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-5)


class TorchCNN(torch.nn.Module):
    """A small ResNet-style CNN (conv-BN-ReLU, a residual block, global pool, linear)."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.BatchNorm2d(16),
                                        torch.nn.ReLU())
        self.body = torch.nn.Sequential(torch.nn.Conv2d(16, 24, 3, 1, 1),
                                        torch.nn.BatchNorm2d(24), torch.nn.ReLU(),
                                        torch.nn.Conv2d(24, 24, 3, 2, 1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(24, 7)

    def forward(self, x):
        return self.fc(self.body(self.stem(x)).mean((2, 3)))


def hooked_from_pytorch(rng, method):
    """A random TorchCNN's activations and gradients at ``body[2]`` as pytorch-grad-cam hooks
    them (torch tensors, (B, C, h, w) = (4, 24, 20, 24)), with its raw and final maps."""
    torch.manual_seed(int(rng.integers(0, 2**31)))
    model = TorchCNN().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = rng.standard_normal((4, 3, 40, 48)).astype(np.float32)
    classes = rng.integers(0, 7, 4)
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    layer = model.body[2]
    cam = PGC[method](model=model, target_layers=[layer])
    with cam:
        ref_maps = cam(input_tensor=torch.from_numpy(x), targets=targets)
        acts = cam.activations_and_grads.activations[0]
        grads = cam.activations_and_grads.gradients[0]
        ref_raw = cam.get_cam_image(torch.from_numpy(x), layer, targets, acts.numpy(),
                                    grads.numpy(), False)
    assert isinstance(acts, torch.Tensor) and acts.shape == (4, 24, 20, 24)  # (B, C, h, w)
    return acts, grads, ref_raw, ref_maps


@pytest.mark.parametrize("method", list(PGC))
def test_methods_on_nchw_tensors_hooked_from_pytorch(rng, method):
    acts, grads, ref_raw, ref_maps = hooked_from_pytorch(rng, method)
    fn = getattr(jaxcam.methods, method)
    scale = np.abs(ref_raw).max()
    # Torch tensors as hooked, no layout: PyTorch's own order, NCHW.
    raw = fn(acts, grads)
    assert raw.shape == (4, 20, 24)
    np.testing.assert_allclose(np.asarray(raw) / scale, ref_raw / scale, atol=1e-5)
    np.testing.assert_allclose(np.asarray(postprocess([raw], (40, 48))), ref_maps, atol=1e-4)
    # The same as NumPy arrays carry no convention: without a layout they are refused (read as
    # NHWC they would be a 24x20 map of 24 channels), with layout="NCHW" they are the same map.
    acts_np, grads_np = acts.numpy(), grads.numpy()
    with pytest.raises(ValueError, match=r"activations of shape \(4, 24, 20, 24\) is ambiguous: "
                                         r"read as NHWC it is a 24x20 map of 24 channels, read "
                                         r"as NCHW a 20x24 map of 24 channels\. Pass "
                                         r"layout='NCHW' .* or layout='NHWC' to confirm"):
        fn(acts_np, grads_np)
    np.testing.assert_allclose(np.asarray(fn(acts_np, grads_np, layout="NCHW")),
                               np.asarray(raw), rtol=1e-6, atol=1e-6 * scale)
    # An explicit layout is never second-guessed, even a wrong one, on NumPy or torch inputs.
    assert fn(acts_np, grads_np, layout="NHWC").shape == (4, 24, 20)
    assert fn(acts, grads, layout="NHWC").shape == (4, 24, 20)
    # Channels-last copies, read with layout="NHWC": the same map.
    nhwc_np = (np.transpose(acts_np, (0, 2, 3, 1)), np.transpose(grads_np, (0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(fn(*nhwc_np, layout="NHWC")), np.asarray(raw),
                               rtol=1e-6, atol=1e-6 * scale)
    with pytest.raises(ValueError, match="layout must be 'NHWC'"):
        fn(acts, grads, layout="CHW")


def test_square_layouts_without_a_layout(rng):
    """The rule on square maps: NHWC (B, s, s, C) arrays are accepted silently, channels-first
    (B, C, s, s) NumPy arrays refused, torch tensors read as NCHW unless plainly channels-last."""
    acts = rng.standard_normal((2, 24, 7, 7)).astype(np.float32)  # (B, C, s, s)
    grads = rng.standard_normal((2, 24, 7, 7)).astype(np.float32)
    nchw_map = np.asarray(jaxcam.methods.gradcam(acts, grads, layout="NCHW"))
    nhwc = (np.transpose(acts, (0, 2, 3, 1)), np.transpose(grads, (0, 2, 3, 1)))  # (2, 7, 7, 24)
    for name in ["gradcam", "hirescam", "layercam", "eigencam", "fem", "randomcam"]:
        fn = getattr(jaxcam.methods.layer, name)
        extra = {"key": jax.random.key(0)} if name == "randomcam" else {}
        silent = np.asarray(fn(*nhwc, **extra))  # no layout: square NHWC maps are plain
        np.testing.assert_array_equal(silent, np.asarray(fn(*nhwc, layout="NHWC", **extra)))
        assert silent.shape == (2, 7, 7)
        with pytest.raises(ValueError, match=r"of shape \(2, 24, 7, 7\) is ambiguous.*\(square, "
                                             r"as channels-first maps hooked from PyTorch are\)"):
            fn(acts, grads, **extra)
        np.testing.assert_allclose(np.asarray(fn(acts, grads, layout="NCHW", **extra)), silent,
                                   rtol=1e-5, atol=1e-5 * np.abs(silent).max())
    # More channels than either side (no square): NHWC, silently.
    wide = rng.standard_normal((2, 5, 6, 32)).astype(np.float32)
    assert jaxcam.methods.gradcam(wide, wide).shape == (2, 5, 6)
    # torch: NCHW by convention; a channels-last (permuted) view of square maps is refused.
    t_acts, t_grads = torch.from_numpy(acts), torch.from_numpy(grads)
    np.testing.assert_allclose(np.asarray(jaxcam.methods.gradcam(t_acts, t_grads)), nchw_map,
                               rtol=1e-6, atol=1e-6)
    view = (t_acts.permute(0, 2, 3, 1), t_grads.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match=r"torch\.Tensor of shape \(2, 7, 7, 24\), which looks "
                                         r"channels-last.*Pass layout='NHWC'"):
        jaxcam.methods.gradcam(*view)
    np.testing.assert_allclose(np.asarray(jaxcam.methods.gradcam(*view, layout="NHWC")),
                               nchw_map, rtol=1e-6, atol=1e-6)
    # A permuted view whose map is not square (w == C here: (2, 20, 24, 24) reads as a 24x24
    # map of 20 channels) is known by its strides; a channels_last NCHW tensor is not such a view.
    acts_wide = torch.from_numpy(rng.standard_normal((2, 24, 20, 24)).astype(np.float32))
    grads_wide = torch.from_numpy(rng.standard_normal((2, 24, 20, 24)).astype(np.float32))
    wide_map = np.asarray(jaxcam.methods.gradcam(acts_wide, grads_wide))
    assert wide_map.shape == (2, 20, 24)
    wide_view = (acts_wide.permute(0, 2, 3, 1), grads_wide.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match=r"shape \(2, 20, 24, 24\), which looks channels-last.*"
                                         r"strides \(11520, 24, 1, 480\) are those of a "
                                         r"permute\(0, 2, 3, 1\) view"):
        jaxcam.methods.gradcam(*wide_view)
    np.testing.assert_allclose(np.asarray(jaxcam.methods.gradcam(*wide_view, layout="NHWC")),
                               wide_map, rtol=1e-6, atol=1e-6 * np.abs(wide_map).max())
    as_channels_last = [t.to(memory_format=torch.channels_last) for t in (acts_wide, grads_wide)]
    np.testing.assert_allclose(np.asarray(jaxcam.methods.gradcam(*as_channels_last)), wide_map,
                               rtol=1e-6, atol=1e-6 * np.abs(wide_map).max())
    with pytest.raises(ValueError, match=r"different layouts \(activations as NCHW, gradients "
                                         r"as NHWC"):
        jaxcam.methods.gradcam(t_acts, nhwc[1])
    with pytest.raises(ValueError, match=r"torch\.Tensor of shape \(2, 50, 24\): tokens"):
        jaxcam.methods.gradcam(torch.zeros(2, 50, 24), torch.zeros(2, 50, 24))


def _channels_first_looking_pair(rng):
    """A function pair whose NHWC layer map (B, 8, 4, 4) -- 8x4 pixels, 4 channels -- would be
    refused as ambiguous if the pipeline did not say its layout."""
    w = jnp.asarray(rng.standard_normal((3, 4)).astype(np.float32))
    head = jnp.asarray(rng.standard_normal((4, 5)).astype(np.float32))

    def features(x):  # (B, 16, 8, 3) -> (B, 8, 4, 4)
        b, h, wd, c = x.shape
        return jnp.tanh(x.reshape(b, h // 2, 2, wd // 2, 2, c).mean((2, 4)) @ w)

    def classify(a):
        return jnp.mean(a, axis=(1, 2)) @ head + jnp.sum(a ** 2, axis=(1, 2)) @ head * 0.1

    return features, classify


def test_pipelines_pass_their_layout_to_the_methods(rng):
    features, classify = _channels_first_looking_pair(rng)
    x = rng.standard_normal((2, 16, 8, 3)).astype(np.float32)
    classes = rng.integers(0, 5, 2)
    acts = features(jnp.asarray(x))
    assert acts.shape == (2, 8, 4, 4)
    grads = jax.grad(lambda a: jnp.sum(classify(a)[jnp.arange(2), classes]))(acts)
    with pytest.raises(ValueError, match="is ambiguous"):  # the same arrays, called by hand
        jaxcam.methods.gradcam(acts, grads)
    ref = jaxcam.methods.gradcam(acts, grads, layout="NHWC")
    for method in ["gradcam", "layercam", "eigencam", "scorecam"]:
        got = jaxcam.explain((features, classify), x, targets=classes, method=method,
                             relu=False, normalize=False, resize=False)
        assert got.shape == (2, 8, 4)
        if method == "gradcam":
            np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-6)

    class Exits:
        num_exits = 1

        def exit_features(self, x):
            return [features(x)]

        def classify(self, k, f):
            return classify(f)

    got = jaxcam.explain_exits(Exits(), x, targets=classes, relu=False, normalize=False,
                               resize=False)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(ref), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 4. Multi-exit models: reshape_transform on every exit's features


class TokenExits:
    """Two exits on a toy token model: ``f_k`` are (B, 1 + 9, D) tokens."""

    num_exits = 2

    def __init__(self, rng):
        self.embed = jnp.asarray(rng.standard_normal((3, 6)).astype(np.float32))
        self.mix = jnp.asarray(rng.standard_normal((6, 6)).astype(np.float32) * 0.5)
        self.heads = [jnp.asarray(rng.standard_normal((6, 4)).astype(np.float32))
                      for _ in range(2)]

    def exit_features(self, x):  # (B, 12, 12, 3) -> tokens of 4 x 4 px patches
        b = x.shape[0]
        patches = x.reshape(b, 3, 4, 3, 4, 3).mean((2, 4)).reshape(b, 9, 3) @ self.embed
        t0 = jnp.concatenate([patches.mean(1, keepdims=True), patches], axis=1)
        t1 = t0 + jnp.tanh(t0 @ self.mix)
        return [t0, t1]

    def classify(self, k, f):
        return jnp.tanh(f)[:, 1:].mean(1) @ self.heads[k] + f[:, 0] @ self.heads[k]


def test_explain_exits_takes_a_reshape_transform(rng):
    model = TokenExits(rng)
    x = rng.standard_normal((2, 12, 12, 3)).astype(np.float32)
    classes = rng.integers(0, 4, 2)
    maps = jaxcam.explain_exits(model, x, targets=classes, reshape_transform=reshape.vit(),
                                relu=False, normalize=False, resize=False)
    feats = model.exit_features(jnp.asarray(x))
    for k in range(2):
        grads = jax.grad(lambda f, k=k: jnp.sum(model.classify(k, f)[jnp.arange(2), classes]))(
            feats[k])
        a, g = feats[k][:, 1:].reshape(2, 3, 3, 6), grads[:, 1:].reshape(2, 3, 3, 6)
        ref = jnp.sum(jnp.mean(g, (1, 2), keepdims=True) * a, -1)
        np.testing.assert_allclose(np.asarray(maps[k]), np.asarray(ref), rtol=1e-5, atol=1e-6)
    assert jaxcam.explain_exits(model, x, reshape_transform=reshape.vit()).shape == (2, 2, 12, 12)
    with pytest.raises(ValueError, match=r"layer 'exit 0' outputs \(2, 10, 6\): tokens"):
        jaxcam.explain_exits(model, x)


def test_explain_exits_shapleycam_on_tokens_takes_the_hessian_of_the_map(rng):
    """ShapleyCAM's Hessian term with a reshape_transform that drops the class token: the
    Hessian of the score with respect to the map (the class token held), along the map, as
    explain computes it; by hand with jax.grad and jax.jvp. Mixing in the class token's
    direction (the Hessian of the tokens along all tokens) gives other maps here, where the
    head mixes the class token into every patch token."""
    model = MixingTokenExits(rng)
    x = rng.standard_normal((2, 12, 12, 3)).astype(np.float32)
    classes = rng.integers(0, 4, 2)
    maps = jaxcam.explain_exits(model, x, targets=classes, method="shapleycam",
                                reshape_transform=reshape.vit(), relu=False, normalize=False,
                                resize=False)
    feats = model.exit_features(jnp.asarray(x))
    rows = jnp.arange(2)
    for k in range(2):
        cls_token = feats[k][:, :1]

        def score(m, k=k, cls_token=cls_token):  # the map (B, 3, 3, D), the class token held
            tokens = jnp.concatenate([cls_token, m.reshape(2, 9, 6)], axis=1)
            return jnp.sum(model.classify(k, tokens)[rows, classes])

        m = feats[k][:, 1:].reshape(2, 3, 3, 6)
        g = jax.grad(score)(m)
        hvp = jax.jvp(jax.grad(score), (m,), (m,))[1]
        ref = jnp.sum(jnp.mean(g - 0.5 * hvp, (1, 2), keepdims=True) * m, -1)
        scale = np.abs(np.asarray(ref)).max()
        np.testing.assert_allclose(np.asarray(maps[k]), np.asarray(ref), atol=1e-5 * scale)

        def token_score(f, k=k):
            return jnp.sum(model.classify(k, f)[rows, classes])

        mixed = jax.jvp(jax.grad(token_score), (feats[k],), (feats[k],))[1][:, 1:]
        wrong = jnp.sum(jnp.mean(g - 0.5 * mixed.reshape(2, 3, 3, 6), (1, 2), keepdims=True)
                        * m, -1)
        assert np.abs(np.asarray(wrong) - np.asarray(ref)).max() > 1e-3 * scale
        one = jaxcam.explain(model_pair(model, k), x, method="shapleycam", targets=classes,
                             reshape_transform=reshape.vit(), relu=False, normalize=False,
                             resize=False)
        np.testing.assert_allclose(np.asarray(one), np.asarray(ref), atol=1e-5 * scale)


class MixingTokenExits(TokenExits):
    """TokenExits whose heads add the class token to every patch token inside the tanh."""

    def classify(self, k, f):
        return jnp.tanh(f[:, 1:] + f[:, :1]).mean(1) @ self.heads[k] + f[:, 0] @ self.heads[k]


def model_pair(model: TokenExits, k: int):
    """Exit k of the token model as an explain function pair (features, head)."""
    return (lambda x: model.exit_features(x)[k], lambda f: model.classify(k, f))


class ConvExits:
    """Two exits on a toy CNN, channels-first (``nchw=True``) or its NHWC twin."""

    num_exits = 2

    def __init__(self, kernels, heads, nchw):
        self.kernels, self.heads, self.nchw = kernels, heads, nchw

    def exit_features(self, x):
        if not self.nchw:
            x = jnp.transpose(x, (0, 3, 1, 2))
        f0 = jax.nn.relu(conv_nchw(x, self.kernels[0], stride=2))
        f1 = jax.nn.relu(conv_nchw(f0, self.kernels[1], stride=2))
        return [f if self.nchw else jnp.transpose(f, (0, 2, 3, 1)) for f in (f0, f1)]

    def classify(self, k, f):
        return jnp.mean(f, axis=(2, 3) if self.nchw else (1, 2)) @ self.heads[k]


def test_explain_exits_takes_channels_first_images(rng):
    kernels = [jnp.asarray(rng.standard_normal((6, 3, 3, 3)).astype(np.float32)),
               jnp.asarray(rng.standard_normal((8, 6, 3, 3)).astype(np.float32) * 0.3)]
    heads = [jnp.asarray(rng.standard_normal((c, 4)).astype(np.float32)) for c in (6, 8)]
    x = rng.standard_normal((2, 3, 16, 20)).astype(np.float32)
    classes = rng.integers(0, 4, 2)
    ours = jaxcam.explain_exits(ConvExits(kernels, heads, True), x, targets=classes,
                                layout="NCHW", method="layercam")
    ref = jaxcam.explain_exits(ConvExits(kernels, heads, False), nhwc(x), targets=classes,
                               method="layercam")
    assert ours.shape == (2, 2, 16, 20)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=1e-5)
    with pytest.raises(ValueError, match="look NCHW"):
        jaxcam.explain_exits(ConvExits(kernels, heads, True), x, targets=classes)


# ---------------------------------------------------------------------------------------------
# 5. Nothing silently ignored


@pytest.fixture(scope="module")
def small_cnn():
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
            self.head = nnx.Linear(8, 5, rngs=rngs)

        def __call__(self, x):
            return self.head(jnp.mean(jax.nn.relu(self.conv(x)), (1, 2)))

    return CNN(nnx.Rngs(0))


def expect_keyword_error(suggest: str | None, listed: str):
    pattern = r"got unknown .*keyword argument\(s\) \w+" + (
        rf" \(did you mean '{suggest}'\?\)" if suggest else "") + rf".*{listed}"
    return pytest.raises(TypeError, match=pattern)


def test_unknown_keywords_are_errors_everywhere(small_cnn, rng):
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    with expect_keyword_error("targets", "target_layer, targets, method"):
        jaxcam.explain(small_cnn, x, target_layer="conv", target=3)
    with expect_keyword_error("eigen_smooth", "reshape_transform"):
        jaxcam.explain(small_cnn, x, target_layer="conv", eigen_smoth=True)
    with expect_keyword_error("batch_size", "options of method 'scorecam': batch_size"):
        jaxcam.explain(small_cnn, x, target_layer="conv", method="scorecam", batchsize=2)
    with pytest.raises(TypeError, match=r"targets and key go to each call"):
        jaxcam.Explainer(small_cnn, target_layer="conv", target=3)
    with expect_keyword_error("normalize", "layout, reshape_transform"):
        jaxcam.Explainer(small_cnn, target_layer="conv", normalise=False)
    explainer = jaxcam.Explainer(small_cnn, target_layer="conv")
    with expect_keyword_error("key", "images, targets, key"):
        explainer(x, keys=None)
    with expect_keyword_error("eigen_smooth", "exits, relu"):
        jaxcam.explain_exits(TokenExits(rng), x, eigen_smoth=True)
    with expect_keyword_error("exits", "method, exits"):
        jaxcam.ExitExplainer(TokenExits(rng), exit=[0])
    with expect_keyword_error("alpha", "options of method 'finercam': alpha, "
                                       "comparison_categories"):
        jaxcam.explain_exits(TokenExits(rng), x, method="finercam", alfa=0.5)
    with expect_keyword_error("k", "options of method 'fem': k"):
        jaxcam.ExitExplainer(TokenExits(rng), method="fem", kk=2)
    with pytest.raises(TypeError, match=r"images and targets go to each call"):
        jaxcam.ExitExplainer(TokenExits(rng), targets=3)
    exit_explainer = jaxcam.ExitExplainer(TokenExits(rng), reshape_transform=reshape.vit())
    with expect_keyword_error("return_logits", "targets, return_logits"):
        exit_explainer(rng.standard_normal((2, 12, 12, 3)).astype(np.float32), logits=True)
    with expect_keyword_error(None, "reshape_transform, layout"):
        jaxcam.GradCAM(small_cnn, target_layers=["conv"], use_cuda=True)
    with expect_keyword_error("targets", "input_tensor, targets, aug_smooth, eigen_smooth"):
        jaxcam.GradCAM(small_cnn, target_layers=["conv"])(x, target=[])
    # The valid ones still work.
    jaxcam.explain(small_cnn, x, target_layer="conv", method="scorecam", batch_size=2)
    jaxcam.ScoreCAM(small_cnn, target_layers=["conv"], batch_size=2)(x)


def test_a_pair_with_a_target_layer_is_an_error(nchw_pair, rng):
    _, pair = nchw_pair
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="one tap point.*pass target_layer=None"):
        jaxcam.explain(pair, x, target_layer="features")
    with pytest.raises(ValueError, match="one tap point"):
        jaxcam.GradCAM(pair, target_layers=["conv2"])(x)
    assert jaxcam.GradCAM(pair, target_layers=[])(x).shape == (2, 8, 8)
    assert jaxcam.GradCAM(pair, target_layers=None)(x).shape == (2, 8, 8)


def test_the_output_shape_check_names_what_went_wrong():
    check_output_shape(jnp.zeros((2, 5, 6)), (2, 5, 6), "explain")
    check_output_shape(jnp.zeros((2, 3, 4)), (2, -1, -1), "explain")
    with pytest.raises(AssertionError, match=r"internal error in explain: the maps have shape "
                                             r"\(1, 5, 6\), expected \(2, 5, 6\)"):
        check_output_shape(jnp.zeros((1, 5, 6)), (2, 5, 6), "explain")
    with pytest.raises(AssertionError, match=r"expected \(3, 2, \?, \?\)"):
        check_output_shape(jnp.zeros((3, 2, 4)), (3, 2, -1, -1), "explain_exits")

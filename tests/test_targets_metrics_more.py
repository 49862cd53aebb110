"""The targets and metrics added for pytorch-grad-cam 1.5.7 parity, against pytorch-grad-cam:
each target's value and gradient on the same outputs (and Grad-CAM through it on the MSD-Net
twin), and each metric on the twin's same weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _msd_twins import EXIT
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.metrics import road as pgc_road
from pytorch_grad_cam.metrics.arcc import ARCC, Coherency, Complexity
from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from pytorch_grad_cam.utils import model_targets as pgc_targets

import jaxcam
from jaxcam import metrics, targets
from msdnet_flax.testing import ExitModel, module_at, nchw


def _torch_rowwise(target, output: np.ndarray):
    """pytorch-grad-cam's use of a target: one row at a time, summed into the loss; returns
    each row's value and the gradient of the sum with respect to the output."""
    out = torch.from_numpy(output).double().requires_grad_(True)
    values = [target(row) for row in out]
    torch.stack([v.sum() for v in values]).sum().backward()
    return np.stack([v.detach().numpy() for v in values]), out.grad.numpy()


def _jax_batched(target, output: np.ndarray):
    with jax.enable_x64(True):
        out = jnp.asarray(output, jnp.float64)
        values = target(out)
        grad = jax.grad(lambda o: jnp.sum(target(o)))(out)
    return np.asarray(values), np.asarray(grad)


def _compare(jax_target, pgc_target, output):
    got, got_grad = _jax_batched(jax_target, output)
    ref, ref_grad = _torch_rowwise(pgc_target, output)
    np.testing.assert_allclose(got, ref.reshape(got.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_grad, ref_grad, rtol=1e-12, atol=1e-12)


def test_classifier_output_rest(rng):
    output = rng.standard_normal((4, 7)) * 3
    category = int(rng.integers(0, 7))
    _compare(targets.ClassifierOutputReST(category), pgc_targets.ClassifierOutputReST(category),
             output)
    # pytorch-grad-cam's batched form (a (B, K) output at once) is the same.
    ref = pgc_targets.ClassifierOutputReST(category)(torch.from_numpy(output)).numpy()
    np.testing.assert_allclose(np.asarray(targets.ClassifierOutputReST(category)(
        jnp.asarray(output, jnp.float32))), ref, atol=1e-5)


@pytest.mark.parametrize("category", [0, 1])
@pytest.mark.parametrize("shape", [(5,), (5, 1)])
def test_binary_classifier_output_target(rng, category, shape):
    output = rng.standard_normal(shape)
    got, got_grad = _jax_batched(targets.BinaryClassifierOutputTarget(category), output)
    ref, ref_grad = _torch_rowwise(pgc_targets.BinaryClassifierOutputTarget(category), output)
    np.testing.assert_allclose(got, ref.reshape(got.shape), rtol=1e-12)
    np.testing.assert_allclose(got_grad, ref_grad, rtol=1e-12)
    with pytest.raises(ValueError, match=r"\(B,\) or \(B, 1\)"):
        targets.BinaryClassifierOutputTarget(category)(jnp.zeros((5, 3)))


def test_softmax_and_raw_scores_output_targets(rng):
    output = rng.standard_normal((3, 6))
    for ours, theirs in [(targets.SoftmaxOutputTarget(), pgc_targets.SoftmaxOutputTarget()),
                         (targets.RawScoresOutputTarget(), pgc_targets.RawScoresOutputTarget())]:
        got = np.asarray(ours(jnp.asarray(output)))
        ref = np.stack([theirs(row).numpy() for row in torch.from_numpy(output)])
        np.testing.assert_allclose(got, ref, rtol=1e-6)
        assert got.shape == (3, 6)


@pytest.mark.parametrize("per_image_mask", [False, True])
def test_semantic_segmentation_target(rng, per_image_mask):
    output = rng.standard_normal((3, 5, 6, 4))  # (B, H, W, K), NHWC
    category = int(rng.integers(0, 4))
    masks = (rng.uniform(size=(3, 5, 6)) > 0.5).astype(np.float64)
    ours = targets.SemanticSegmentationTarget(category, masks if per_image_mask else masks[0])
    got, got_grad = _jax_batched(ours, output)
    for b in range(3):
        theirs = pgc_targets.SemanticSegmentationTarget(category, masks[b if per_image_mask
                                                                        else 0])
        out = torch.from_numpy(output[b].transpose(2, 0, 1).copy()).requires_grad_(True)
        value = theirs(out)
        value.backward()
        np.testing.assert_allclose(got[b], value.item(), rtol=1e-12)
        np.testing.assert_allclose(got_grad[b], out.grad.numpy().transpose(1, 2, 0), rtol=1e-12)


def test_finer_weighted_target(rng):
    output = rng.standard_normal((4, 9)) * 2
    main, comparisons = int(rng.integers(0, 9)), [int(c) for c in rng.choice(9, 3, False)]
    alpha = float(rng.uniform(0.2, 1.5))
    _compare(targets.FinerWeightedTarget(main, comparisons, alpha),
             pgc_targets.FinerWeightedTarget(main, comparisons, alpha), output)
    assert hash(targets.FinerWeightedTarget(main, comparisons, alpha))  # a list is hashable


@pytest.mark.parametrize("which", ["rest", "finer", "softmax_of_class"])
def test_gradcam_through_the_new_targets_matches_pytorch_grad_cam(twins, rng, which):
    twin, flax_model = twins
    layer = flax_model.exit_feature_path(EXIT)
    x = rng.standard_normal((3, 32, 32, 3)).astype(np.float32)
    c = int(rng.integers(0, 10))
    if which == "rest":
        ours, theirs = targets.ClassifierOutputReST(c), pgc_targets.ClassifierOutputReST(c)
    elif which == "finer":
        others = [int(k) for k in rng.choice([k for k in range(10) if k != c], 3, False)]
        ours = targets.FinerWeightedTarget(c, others, 0.7)
        theirs = pgc_targets.FinerWeightedTarget(c, others, 0.7)
    else:
        ours = targets.ClassifierOutputSoftmaxTarget(c)
        theirs = pgc_targets.ClassifierOutputSoftmaxTarget(c)
    with GradCAM(ExitModel(twin, EXIT), [module_at(twin, layer)]) as cam:
        ref = cam(nchw(x), [theirs] * 3)
    got = np.asarray(jaxcam.explain(flax_model, x, target_layer=layer, targets=ours,
                                    output_index=EXIT))
    print(f"Grad-CAM through {which}: {np.abs(got - ref).max():.2e}")
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


# --- metrics -----------------------------------------------------------------------------------

def _score_fn(flax_model, classes, softmax=True):
    classes = jnp.asarray(classes)

    def score(images):
        logits = flax_model(images)[EXIT]
        probs = jax.nn.softmax(logits, -1) if softmax else logits
        return jnp.take_along_axis(probs, classes[:, None], -1)[:, 0]
    return score


def _gradcam_case(twins, rng, batch=4):
    twin, flax_model = twins
    layer = flax_model.exit_feature_path(EXIT)
    x = rng.standard_normal((batch, 32, 32, 3)).astype(np.float32)
    classes = rng.integers(0, 10, size=batch)
    with GradCAM(ExitModel(twin, EXIT), [module_at(twin, layer)]) as cam:
        maps = cam(nchw(x), [pgc_targets.ClassifierOutputTarget(int(c)) for c in classes])
    return twin, flax_model, layer, x, classes, maps


@pytest.mark.parametrize("softmax", [True, False])
def test_drop_and_increase_in_confidence_match_pytorch_grad_cam(twins, rng, softmax):
    twin, flax_model, _, x, classes, maps = _gradcam_case(twins, rng)
    # Half the maps scaled up past 1 so that some scores rise and some fall.
    maps = maps * np.where(np.arange(4) % 2, 3.0, 1.0)[:, None, None].astype(np.float32)
    cls = (pgc_targets.ClassifierOutputSoftmaxTarget if softmax
           else pgc_targets.ClassifierOutputTarget)
    pgc_t = [cls(int(c)) for c in classes]
    model = ExitModel(twin, EXIT)
    score = _score_fn(flax_model, classes, softmax)
    drop = np.asarray(metrics.DropInConfidence()(score, x, maps))
    ref_drop = DropInConfidence()(nchw(x), maps, pgc_t, model)
    increase = np.asarray(metrics.IncreaseInConfidence()(score, x, maps))
    ref_increase = IncreaseInConfidence()(nchw(x), maps, pgc_t, model)
    print(f"drop: {drop}, pgc {ref_drop}; increase: {increase}, pgc {ref_increase}")
    np.testing.assert_allclose(drop, ref_drop, atol=1e-5 if softmax else 1e-4)
    np.testing.assert_array_equal(increase, ref_increase)
    np.testing.assert_array_equal(np.asarray(metrics.drop_in_confidence(score, x, maps)), drop)


def test_drop_in_confidence_with_a_vector_target(twins, rng):
    """SoftmaxOutputTarget gives one score per class; the metric is then per class."""
    twin, flax_model, _, x, _, maps = _gradcam_case(twins, rng, batch=2)
    target = targets.SoftmaxOutputTarget()
    got = np.asarray(metrics.drop_in_confidence(lambda im: target(flax_model(im)[EXIT]), x,
                                                maps))
    ref = DropInConfidence()(nchw(x), maps, [pgc_targets.SoftmaxOutputTarget()] * 2,
                             ExitModel(twin, EXIT))
    assert got.shape == ref.shape == (2, 10)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_complexity_and_coherency_match_pytorch_grad_cam(twins, rng):
    twin, flax_model, layer, x, classes, maps = _gradcam_case(twins, rng)
    np.testing.assert_allclose(np.asarray(metrics.complexity(maps)), Complexity()(maps),
                               rtol=1e-6)

    def explain(images):
        return jaxcam.explain(flax_model, images, target_layer=layer, targets=classes,
                              output_index=EXIT)

    got = np.asarray(metrics.coherency(explain, x, maps))
    with GradCAM(ExitModel(twin, EXIT), [module_at(twin, layer)]) as cam:
        ref = Coherency()(nchw(x), maps,
                          [pgc_targets.ClassifierOutputTarget(int(c)) for c in classes],
                          ExitModel(twin, EXIT), cam)
    print(f"coherency {got} pgc {ref}")
    np.testing.assert_allclose(got, ref, atol=1e-4)
    # (Pearson correlation + 1) / 2; a random twin's map need not survive being applied to its
    # image (seen: 0.42), and a constant map gives exactly 0.5.
    assert ((got >= 0) & (got <= 1)).all() and np.ptp(got) > 0


def test_arcc_matches_pytorch_grad_cam(twins, rng, monkeypatch):
    twin, flax_model, layer, x, classes, maps = _gradcam_case(twins, rng)
    # pytorch-grad-cam's ROAD imputes with noise 0.01 from torch's global RNG; compare without.
    monkeypatch.setattr(NoisyLinearImputer.__init__, "__defaults__",
                        (0.0, pgc_road.neighbors_weights))
    pgc_t = [pgc_targets.ClassifierOutputSoftmaxTarget(int(c)) for c in classes]

    def explain(images):
        return jaxcam.explain(flax_model, images, target_layer=layer, targets=classes,
                              output_index=EXIT)

    got = np.asarray(metrics.arcc(_score_fn(flax_model, classes), explain, x, maps, noise=0.0))
    with GradCAM(ExitModel(twin, EXIT), [module_at(twin, layer)]) as cam:
        # Coherency re-explains with the same targets: pgc passes ARCC's targets to GradCAM,
        # whose gradient of a softmax target differs from the logit one -- give it logits for
        # the CAM and softmax for ROAD as jaxcam's split of score_fn / explain_fn does.
        arcc = ARCC(cam)
        complexity = arcc.complexity(maps)
        coherency = arcc.coherency(nchw(x), maps, [pgc_targets.ClassifierOutputTarget(int(c))
                                                   for c in classes], None, cam)
        road = (arcc.road(nchw(x), maps, pgc_t, ExitModel(twin, EXIT)) * 2).clip(0, 1)
    ref = 3 * (1 / (coherency + 1e-8) + 1 / ((1 - complexity) + 1e-8) + 1 / (road + 1e-8)) ** -1
    print(f"ARCC {got} pgc {ref}")
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert ((got >= 0) & (got <= 1)).all()


def test_arcc_with_one_target_list_matches_pytorch_grad_cam_end_to_end(twins, rng, monkeypatch):
    """pytorch-grad-cam's ARCC.__call__ itself, with logit targets for both its CAM and ROAD."""
    twin, flax_model, layer, x, classes, maps = _gradcam_case(twins, rng, batch=2)
    monkeypatch.setattr(NoisyLinearImputer.__init__, "__defaults__",
                        (0.0, pgc_road.neighbors_weights))
    pgc_t = [pgc_targets.ClassifierOutputTarget(int(c)) for c in classes]
    with GradCAM(ExitModel(twin, EXIT), [module_at(twin, layer)]) as cam:
        ref = ARCC(cam)(nchw(x), maps, pgc_t, ExitModel(twin, EXIT))

    def explain(images):
        return jaxcam.explain(flax_model, images, target_layer=layer, targets=classes,
                              output_index=EXIT)

    got = np.asarray(metrics.arcc(_score_fn(flax_model, classes, softmax=False), explain, x,
                                  maps, noise=0.0))
    np.testing.assert_allclose(got, ref, atol=1e-4)

"""The PyTorch contenders, on the twin with the same weights, inputs and target classes.

* pytorch-grad-cam ``GradCAM``: one call per exit (a call explains one output), and the last exit
  alone; each call runs its exit's forward (blocks 0..k only) and a backward.
* the original article's approach: a forward hook on each exit's classifier input saving the
  activation and a tensor hook saving its gradient; ONE forward of the whole network, then one
  ``backward(retain_graph=True)`` per exit, and Grad-CAM (mean gradients as weights, ReLU,
  min-max, ``F.interpolate`` bilinear) for each.
* captum ``LayerGradCam`` per exit, with ``LayerAttribution.interpolate`` to the input size.
* torchcam ``GradCAM`` per exit: the exit's forward, then its extractor on the exit's layer.
* the forward alone under ``torch.no_grad()``: the floor.
* the best PyTorch version of jaxcam's algorithm: the backbone under ``no_grad``, every head
  re-run on detached features that require grad, ONE ``autograd.grad`` of the summed target
  scores with respect to the features (the backbone is never differentiated), CAM math batched.

Every map is post-processed as pytorch-grad-cam does (ReLU, min-max at feature resolution,
bilinear resize, min-max), except captum's (raw maps, upsampled without ReLU or normalisation)
and torchcam's (ReLU + min-max at feature resolution, not upsampled): for the parity check,
their feature-resolution maps are finished in NumPy with pytorch-grad-cam's own functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchcam.methods import GradCAM as TorchcamGradCAM

from benchmarks.contender import (
    REF_FINAL,
    REF_LAST,
    REF_LOGITS,
    WORK_ALL,
    WORK_FORWARD,
    WORK_LAST,
    Contender,
    Inputs,
    sync_torch,
)
from msdnet_flax.testing import Twins

PGC_ALL = "pgc_all"
PGC_LAST = "pgc_last"
HOOKS_ALL = "hooks_all"
CAPTUM_ALL = "captum_all"
TORCHCAM_ALL = "torchcam_all"
TORCH_FORWARD = "torch_forward"
TORCH_BEST = "torch_best_all"
# One library call (or backward) per exit: the slowest contenders, by far, at large batches.
PER_EXIT = (PGC_ALL, HOOKS_ALL, CAPTUM_ALL, TORCHCAM_ALL)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's per-image min-max over the last two axes (epsilon 1e-7)."""
    maps = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return maps / (1e-7 + maps.amax(dim=(-2, -1), keepdim=True))


def finish(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) raw Grad-CAM -> (N, H, W): ReLU, min-max, bilinear upsample, ReLU, min-max."""
    cam = minmax(F.relu(raw))
    cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return minmax(F.relu(cam))


def gradcam_raw(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) activations and gradients -> (B, h, w): sum_c mean_hw(grad_c) * act_c."""
    return (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)


def pgc_postprocess(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """pytorch-grad-cam's post-processing of (N, h, w) raw maps, in NumPy (its own functions)."""
    cam = scale_cam_image(np.maximum(raw, 0), (size[1], size[0]))
    return scale_cam_image(np.maximum(cam, 0))


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _pgc(twins: Twins, k: int, inputs: Inputs) -> Callable[[], np.ndarray]:
    model, layer = twins.exit_model(k), twins.torch_layer(k)
    targets = [ClassifierOutputTarget(c) for c in inputs.class_lists[k]]
    x = inputs.torch_images

    def call() -> np.ndarray:
        with GradCAM(model=model, target_layers=[layer]) as cam:
            return cam(input_tensor=x, targets=targets)  # NumPy maps: synchronised

    return call


def _prep_pgc_all(twins: Twins) -> Callable[[Inputs], Callable[[], Any]]:
    def prepare(inputs: Inputs) -> Callable[[], Any]:
        calls = [_pgc(twins, k, inputs) for k in range(twins.num_exits)]
        return lambda: [call() for call in calls]

    return prepare


def _prep_pgc_last(twins: Twins) -> Callable[[Inputs], Callable[[], Any]]:
    return lambda inputs: _pgc(twins, twins.num_exits - 1, inputs)


def _prep_hooks(twins: Twins) -> Callable[[Inputs], Callable[[], Any]]:
    def prepare(inputs: Inputs) -> Callable[[], Any]:
        net, x, classes = twins.torch_model, inputs.torch_images, inputs.torch_classes
        layers = [twins.torch_layer(k) for k in range(twins.num_exits)]
        rows = torch.arange(inputs.batch, device=inputs.device)

        def call() -> torch.Tensor:
            acts: dict[int, torch.Tensor] = {}
            grads: dict[int, torch.Tensor] = {}

            def hook(k: int) -> Callable[..., None]:
                def keep(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
                    acts[k] = output
                    output.register_hook(lambda g: grads.__setitem__(k, g))
                return keep

            handles = [layer.register_forward_hook(hook(k)) for k, layer in enumerate(layers)]
            try:
                logits = net(x)  # ONE forward pass
            finally:
                for handle in handles:
                    handle.remove()
            maps = []
            for k, out in enumerate(logits):
                out[rows, classes[k]].sum().backward(retain_graph=k < len(logits) - 1)
                with torch.no_grad():
                    maps.append(finish(gradcam_raw(acts[k].detach(), grads[k]), inputs.size))
            net.zero_grad(set_to_none=True)
            result = torch.stack(maps)
            sync_torch(inputs.device)
            return result

        return call

    return prepare


def _prep_captum(twins: Twins) -> Callable[[Inputs], Callable[[], Any]]:
    def prepare(inputs: Inputs) -> Callable[[], Any]:
        x = inputs.torch_images
        explainers = [LayerGradCam(twins.exit_model(k), twins.torch_layer(k))
                      for k in range(twins.num_exits)]

        def call() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
            raw, upsampled = [], []
            for k, explainer in enumerate(explainers):
                attr = explainer.attribute(x, target=inputs.torch_classes[k])
                raw.append(attr)
                upsampled.append(LayerAttribution.interpolate(attr, inputs.size, "bilinear"))
            sync_torch(inputs.device)
            return raw, upsampled

        return call

    return prepare


def _captum_comparable(size: tuple[int, int]) -> Callable[[Any], np.ndarray]:
    def comparable(output: tuple[list[torch.Tensor], list[torch.Tensor]]) -> np.ndarray:
        return np.stack([pgc_postprocess(_numpy(raw[:, 0]), size) for raw in output[0]])

    return comparable


def _torchcam_comparable(size: tuple[int, int]) -> Callable[[Any], np.ndarray]:
    def comparable(output: list[torch.Tensor]) -> np.ndarray:
        return np.stack([pgc_postprocess(_numpy(cam), size) for cam in output])

    return comparable


def _prep_torchcam(twins: Twins) -> Callable[[Inputs], Callable[[], Any]]:
    def prepare(inputs: Inputs) -> Callable[[], Any]:
        x = inputs.torch_images
        models = [twins.exit_model(k) for k in range(twins.num_exits)]
        layers = [twins.torch_layer(k) for k in range(twins.num_exits)]

        def call() -> list[torch.Tensor]:
            cams = []
            for k, (model, layer) in enumerate(zip(models, layers, strict=True)):
                with TorchcamGradCAM(model, target_layer=layer) as extractor:
                    scores = model(x)
                    cams.append(extractor(class_idx=inputs.class_lists[k], scores=scores)[0])
            sync_torch(inputs.device)
            return cams

        return call

    return prepare


def _prep_forward(twins: Twins) -> Callable[[Inputs], Callable[[], Any]]:
    def prepare(inputs: Inputs) -> Callable[[], Any]:
        net, x = twins.torch_model, inputs.torch_images

        def call() -> list[torch.Tensor]:
            with torch.no_grad():
                out = net(x)
            sync_torch(inputs.device)
            return out

        return call

    return prepare


def _prep_best(twins: Twins) -> Callable[[Inputs], Callable[[], Any]]:
    def prepare(inputs: Inputs) -> Callable[[], Any]:
        net, x, classes = twins.torch_model, inputs.torch_images, inputs.torch_classes
        k_exits, batch = twins.num_exits, inputs.batch

        def call() -> torch.Tensor:
            with torch.no_grad():
                feats = [f.requires_grad_() for f in net.exit_features(x)]
            with torch.enable_grad():
                total = sum(net.classify(k, f).gather(1, classes[k][:, None]).sum()
                            for k, f in enumerate(feats))
                grads = torch.autograd.grad(total, feats)  # heads only: features are leaves
            with torch.no_grad():
                raw = torch.stack([gradcam_raw(f, g) for f, g in zip(feats, grads, strict=True)])
                maps = finish(raw.flatten(0, 1), inputs.size)
            result = maps.view(k_exits, batch, *inputs.size)
            sync_torch(inputs.device)
            return result

        return call

    return prepare


def contenders(twins: Twins, size: tuple[int, int]) -> list[Contender]:
    k = twins.num_exits
    stack = lambda out: np.stack([np.asarray(o) for o in out])  # noqa: E731
    tensors = lambda out: np.stack([_numpy(o) for o in out])  # noqa: E731
    return [
        Contender(PGC_ALL, f"pytorch-grad-cam GradCAM x{k} exits", "torch", WORK_ALL,
                  _prep_pgc_all(twins), REF_FINAL, stack, "final maps at input size"),
        Contender(PGC_LAST, "pytorch-grad-cam GradCAM (last exit)", "torch", WORK_LAST,
                  _prep_pgc_last(twins), REF_LAST, np.asarray, "final maps at input size"),
        Contender(HOOKS_ALL, "article: hooks, 1 forward + K backward", "torch", WORK_ALL,
                  _prep_hooks(twins), REF_FINAL, _numpy,
                  "final maps at input size (with pytorch-grad-cam's second min-max)"),
        Contender(CAPTUM_ALL, f"captum LayerGradCam x{k} + interpolate", "torch", WORK_ALL,
                  _prep_captum(twins), REF_FINAL, _captum_comparable(size),
                  "raw feature-resolution maps, post-processed as pytorch-grad-cam in NumPy"),
        Contender(TORCHCAM_ALL, f"torchcam GradCAM x{k}", "torch", WORK_ALL,
                  _prep_torchcam(twins), REF_FINAL, _torchcam_comparable(size),
                  "its CAM (ReLU, min-max eps 1e-8, feature resolution, no upsampling), "
                  "resized and re-normalised as pytorch-grad-cam in NumPy"),
        Contender(TORCH_FORWARD, "PyTorch forward, all exits (no_grad)", "torch", WORK_FORWARD,
                  _prep_forward(twins), REF_LOGITS, tensors,
                  "logits vs jaxcam's, relative to the largest abs logit", relative_tolerance=True),
        Contender(TORCH_BEST, "PyTorch, jaxcam's algorithm (heads-only backward)", "torch",
                  WORK_ALL, _prep_best(twins), REF_FINAL, _numpy, "final maps at input size"),
    ]

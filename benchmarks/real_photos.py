"""The README's gallery of real photos: jaxcam's maps beside pytorch-grad-cam's, same weights.

    python -m benchmarks.real_photos [--out docs/images/real_photos.png]

The photos ship with installed packages: matplotlib's ``grace_hopper.jpg``, scikit-learn's
``china.jpg`` and ``flower.jpg`` (and scikit-image's ``astronaut`` and ``coffee`` when
scikit-image is installed). The model is EfficientNet-Lite0 with its ImageNet weights: the Flax
port (``efficientnet_flax.load_pretrained``) for jaxcam, its PyTorch definition
(``efficientnet_flax.torch_twin.TorchEfficientNetLite0``) loaded with the same state dict for
pytorch-grad-cam 1.5.7. Each photo is preprocessed as ``jaxcam explain`` does (the whole photo
resized to 224 x 224, ``(x - 127) / 128``); both libraries explain the top-1 class at the last
feature map (``head_conv``'s 1280 channels after ReLU6). Prints each method's max |difference|
between the two libraries' maps over all photos, and writes the picture.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from benchmarks._env import prepare_process

prepare_process()

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import sklearn.datasets  # noqa: E402

METHODS = ("gradcam", "gradcamplusplus", "layercam")
TITLES = {"gradcam": "Grad-CAM", "gradcamplusplus": "Grad-CAM++", "layercam": "LayerCAM"}
OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "real_photos.png"


def photos() -> dict[str, np.ndarray]:
    """The packaged photos as (H, W, 3) uint8 RGB, by name."""
    from jaxcam.batch import read_image_checked

    files = {
        "grace_hopper.jpg": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
        "china.jpg": Path(sklearn.datasets.__file__).parent / "images" / "china.jpg",
        "flower.jpg": Path(sklearn.datasets.__file__).parent / "images" / "flower.jpg",
    }
    out = {name: np.asarray(read_image_checked(path)) for name, path in files.items()}
    try:
        from skimage import data
    except ImportError:
        return out
    out["astronaut (skimage)"] = data.astronaut()
    out["coffee (skimage)"] = data.coffee()
    return out


def _torch_model(state_dict: dict) -> object:
    """The PyTorch twin with its feature map as a module (pytorch-grad-cam hooks modules)."""
    import torch
    from torch import nn

    from efficientnet_flax.torch_twin import TorchEfficientNetLite0

    net = TorchEfficientNetLite0()
    net.load_state_dict(state_dict, strict=True)
    net.eval()

    class Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x)

    class Split(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = Features()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return net._fc(self.features(x).mean(dim=(2, 3)))

    return Split().eval()


def compute(images: dict[str, np.ndarray]) -> dict[str, dict]:
    """Top classes and both libraries' maps of every photo.

    Returns:
      ``{name: {"small", "top", "jax": {method: map}, "torch": {method: map}}}``.
    """
    import jax.numpy as jnp
    import torch
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import jaxcam
    from efficientnet_flax import load_pretrained, to_state_dict, top_k
    from jaxcam.batch import to_model_input

    net = load_pretrained()
    twin = _torch_model(to_state_dict(net))
    classes = {"gradcam": GradCAM, "gradcamplusplus": GradCAMPlusPlus, "layercam": LayerCAM}
    cams = {m: cls(model=twin, target_layers=[twin.features]) for m, cls in classes.items()}
    out = {}
    for name, image in images.items():
        small = to_model_input(image, 224)
        x = ((small.astype(np.float32) - 127.0) / 128.0)[None]
        logits = np.asarray(net(jnp.asarray(x)))
        top = top_k(logits, 3)[0]
        cls = top[0][0]
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        entry = {"small": small, "top": top, "jax": {}, "torch": {}}
        for m in METHODS:
            entry["jax"][m] = np.asarray(jaxcam.explain(net, x, target_layer="head_conv",
                                                        method=m, targets=cls))[0]
            entry["torch"][m] = cams[m](input_tensor=xt,
                                        targets=[ClassifierOutputTarget(cls)])[0]
        out[name] = entry
    return out


def render(results: dict[str, dict], out: Path, diffs: dict[str, float]) -> None:
    """Write the gallery: one row per photo; the photo, then each method by both libraries."""
    import matplotlib.pyplot as plt

    from jaxcam.viz import show_cam_on_image

    n_cols = 1 + 2 * len(METHODS)
    fig, axes = plt.subplots(len(results), n_cols, figsize=(2.0 * n_cols, 2.7 * len(results)),
                             squeeze=False)
    for row, (name, r) in enumerate(results.items()):
        unit = r["small"].astype(np.float32) / 255.0
        ax = axes[row, 0]
        ax.imshow(r["small"])
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("\n".join(f"{c} {100 * p:.0f}%" for _, c, p in r["top"]), fontsize=7)
        for j, m in enumerate(METHODS):
            for k, (lib, title) in enumerate((("jax", "jaxcam"), ("torch", "pytorch-grad-cam"))):
                ax = axes[row, 1 + 2 * j + k]
                ax.imshow(show_cam_on_image(unit, r[lib][m], use_rgb=True))
                if row == 0:
                    ax.set_title(f"{TITLES[m]}\n{title}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    shown = ", ".join(f"{TITLES[m]} {d:.1e}" for m, d in diffs.items())
    fig.suptitle(f"EfficientNet-Lite0 (ImageNet), top-1 class explained at head_conv; "
                 f"max |jaxcam - pytorch-grad-cam|: {shown}", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    matplotlib.use("Agg")
    results = compute(photos())
    diffs = {m: max(float(np.abs(r["jax"][m] - r["torch"][m]).max()) for r in results.values())
             for m in METHODS}
    for name, r in results.items():
        print(f"{name}: " + ", ".join(f"{c} {100 * p:.1f}%" for _, c, p in r["top"]))
    for m, d in diffs.items():
        print(f"max |jaxcam - pytorch-grad-cam| {TITLES[m]}: {d:.2e}")
    render(results, args.out, diffs)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""The README's Deep Feature Factorization picture: concepts of real photos, jaxcam beside
pytorch-grad-cam, same weights.

    python -m benchmarks.dff_picture [--out docs/images/dff_concepts.png] [--photos ...]

Each photo (matplotlib's ``grace_hopper.jpg``, scikit-learn's ``china.jpg``; see
:mod:`benchmarks.real_photos`) is preprocessed as ``jaxcam explain`` does (the whole photo
resized to 224 x 224, ``(x - 127) / 128``) and factorised into ``k = 5`` concepts at the last
feature map of EfficientNet-Lite0 (``head_conv``'s 1280 channels after ReLU6: the last conv
stage, where pytorch-grad-cam's DFF tutorial factorises ResNet-50's ``layer4``). As in that
tutorial, each concept vector goes through the classifier head (``computation_on_concepts``),
its softmax gives the concept's top-2 ImageNet classes (``create_labels_legend``), and the
picture is ``show_factorization_on_image(photo, maps, image_weight=0.3, concept_labels=...)``.
jaxcam does this with the Flax port and :mod:`jaxcam.viz`; pytorch-grad-cam 1.5.7 with the
PyTorch twin loaded from the same state dict. Prints how far the two libraries' maps, concept
scores, labels and pictures are apart, and writes the picture (one row per photo: the photo,
jaxcam's concepts, pytorch-grad-cam's).

The legends are drawn at ``figure.dpi`` 72 for both libraries: at matplotlib's default 100,
five two-line labels do not fit a 224-pixel legend (pytorch-grad-cam's tutorial ran in a
notebook, whose figures were 72 dpi).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

from benchmarks._env import prepare_process

prepare_process()

import cv2  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

from jaxcam.viz import write_png  # noqa: E402

N_COMPONENTS = 5
TOP_K = 2
IMAGE_WEIGHT = 0.3
LEGEND_DPI = 72
PHOTOS = ("grace_hopper.jpg", "china.jpg")
OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "dff_concepts.png"


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def compute(images: dict[str, np.ndarray]) -> dict[str, dict]:
    """Both libraries' concepts, maps, concept scores, labels and pictures of every photo.

    Returns:
      ``{name: {"small", "jax": {...}, "torch": {...}}}``, each side holding ``concepts``
      ``(1280, k)``, ``maps`` ``(k, 224, 224)``, ``scores`` ``(k, 1000)`` (softmax),
      ``labels`` and ``picture`` ``(224, 448, 3)`` uint8.
    """
    import jax.numpy as jnp
    import torch
    from pytorch_grad_cam import DeepFeatureFactorization as PgcDFF
    from pytorch_grad_cam.utils.image import create_labels_legend as pgc_labels
    from pytorch_grad_cam.utils.image import show_factorization_on_image as pgc_picture

    from benchmarks.real_photos import _torch_model
    from efficientnet_flax import IMAGENET_CLASSES, load_pretrained, to_state_dict
    from jaxcam.batch import to_model_input
    from jaxcam.methods.layer import DeepFeatureFactorization
    from jaxcam.viz import create_labels_legend, show_factorization_on_image

    net = load_pretrained()
    twin = _torch_model(to_state_dict(net))
    ours = DeepFeatureFactorization(net, "head_conv",
                                    computation_on_concepts=lambda c: net.classifier(c))
    theirs = PgcDFF(twin, twin.features, computation_on_concepts=twin.features.net._fc)
    # pytorch-grad-cam 1.5.7's default colours call plt.cm.get_cmap, gone since matplotlib 3.9.
    import matplotlib.pyplot as plt
    if not hasattr(plt.cm, "get_cmap"):
        plt.cm.get_cmap = matplotlib.colormaps.get_cmap
    out = {}
    for name, image in images.items():
        small = to_model_input(image, 224)
        unit = small.astype(np.float32) / 255.0
        x = ((small.astype(np.float32) - 127.0) / 128.0)[None]
        concepts, maps, outputs = (np.asarray(a) for a in ours(jnp.asarray(x), N_COMPONENTS))
        jax_side = {"concepts": concepts, "maps": maps[0], "scores": _softmax(outputs)}
        jax_side["labels"] = create_labels_legend(jax_side["scores"], IMAGENET_CLASSES, TOP_K)
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's NMF may stop at max_iter
            concepts_t, maps_t, outputs_t = theirs(xt, N_COMPONENTS)
        scores_t = torch.softmax(torch.from_numpy(outputs_t), dim=-1).numpy()
        torch_side = {"concepts": concepts_t, "maps": maps_t[0], "scores": scores_t,
                      "labels": pgc_labels(scores_t, dict(enumerate(IMAGENET_CLASSES)), TOP_K)}
        with matplotlib.rc_context({"figure.dpi": LEGEND_DPI}):
            jax_side["picture"] = show_factorization_on_image(
                unit, jax_side["maps"], image_weight=IMAGE_WEIGHT,
                concept_labels=jax_side["labels"])
            with warnings.catch_warnings(), matplotlib.rc_context():
                warnings.simplefilter("ignore", UserWarning)
                torch_side["picture"] = pgc_picture(
                    unit, torch_side["maps"].copy(), image_weight=IMAGE_WEIGHT,
                    concept_labels=torch_side["labels"])
                # The same maps drawn by both: how the pictures agree given equal input.
                same = pgc_picture(unit, jax_side["maps"].copy(), image_weight=IMAGE_WEIGHT,
                                   concept_labels=jax_side["labels"])
        jax_side["same_input_diff"] = int(np.abs(same.astype(int) - jax_side["picture"]).max())
        out[name] = {"small": small, "jax": jax_side, "torch": torch_side}
    return out


def _caption(width: int, lines: Sequence[str], height: int = 22) -> np.ndarray:
    strip = np.full((height * len(lines), width, 3), 255, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(strip, text, (4, height * i + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (30, 30, 30), 1, cv2.LINE_AA)
    return strip


def render(results: dict[str, dict], out: Path, summary: str) -> np.ndarray:
    """One row per photo: the photo, jaxcam's picture, pytorch-grad-cam's; captions above."""
    gap = np.full((224, 6, 3), 255, np.uint8)
    rows = []
    for name, r in results.items():
        row = np.hstack([r["small"], gap, r["jax"]["picture"], gap, r["torch"]["picture"]])
        head = np.hstack([_caption(224, [name]), gap[:22],
                          _caption(448, ["jaxcam (Flax)"]), gap[:22],
                          _caption(448, ["pytorch-grad-cam 1.5.7 (PyTorch twin)"])])
        rows += [head, row, np.full((8, row.shape[1], 3), 255, np.uint8)]
    width = rows[0].shape[1]
    title = _caption(width, [f"Deep Feature Factorization, EfficientNet-Lite0 head_conv, "
                             f"k = {N_COMPONENTS}; labels: top-{TOP_K} ImageNet classes of "
                             f"each concept through the classifier head", summary])
    picture = np.vstack([title, *rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, picture, smallest=True)
    return picture


def main(argv: Sequence[str] | None = None) -> None:
    from benchmarks.real_photos import photos

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS))
    args = parser.parse_args(argv)
    matplotlib.use("Agg")
    available = photos()
    results = compute({name: available[name] for name in args.photos})
    worst = {"maps": 0.0, "scores": 0.0, "picture": 0, "same": 0}
    for name, r in results.items():
        j, t = r["jax"], r["torch"]
        d_maps = float(np.abs(j["maps"] - t["maps"]).max())
        d_scores = float(np.abs(j["scores"] - t["scores"]).max())
        d_concepts = float(np.abs(j["concepts"] - t["concepts"]).max()
                           / np.abs(t["concepts"]).max())
        pic = np.abs(j["picture"].astype(int) - t["picture"])
        w = j["maps"].shape[-1]
        print(f"{name}: max |maps diff| {d_maps:.1e}, concepts rel. {d_concepts:.1e}, "
              f"scores {d_scores:.1e}; labels equal: {j['labels'] == t['labels']}; picture: "
              f"{np.count_nonzero(pic[:, :w].max(-1))} blend pixels and "
              f"{np.count_nonzero(pic[:, w:].max(-1))} legend pixels differ (max "
              f"{pic.max()} grey levels); same maps drawn by both: max "
              f"{j['same_input_diff']} grey levels")
        for label in j["labels"]:
            print("   ", label.replace("\n", " | "))
        worst["maps"] = max(worst["maps"], d_maps)
        worst["scores"] = max(worst["scores"], d_scores)
        worst["picture"] = max(worst["picture"], int(pic.max()))
        worst["same"] = max(worst["same"], j["same_input_diff"])
    summary = (f"max |jaxcam - pytorch-grad-cam|: maps {worst['maps']:.0e}, concept "
               f"scores {worst['scores']:.0e}, pictures {worst['picture']} grey levels "
               f"({worst['same']} from the same maps)")
    print(summary)
    picture = render(results, args.out, summary)
    print(f"wrote {args.out} ({picture.shape[1]} x {picture.shape[0]}, "
          f"{args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

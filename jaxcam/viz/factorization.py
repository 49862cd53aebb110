"""Pictures of Deep Feature Factorization: each concept a colour, with a legend of its labels.

pytorch-grad-cam 1.5.7's ``show_factorization_on_image`` and ``create_labels_legend``, on NumPy
(pixel for pixel, legend included), and the coloured blend for a batch on device.

The blend: every pixel takes the colour of its strongest concept (the argmax over the ``k``
maps), with that colour's HSV value (brightness) set to ``uint8(255 * strength)`` -- OpenCV's
8-bit RGB -> HSV -> RGB round trip -- and is blended with the image as
``image_weight * img + (1 - image_weight) * colour``, then ``uint8(255 * blend)`` (truncated).
:func:`show_factorization_on_image` makes the same whole-image OpenCV conversions as
pytorch-grad-cam: OpenCV's vectorised and scalar HSV -> RGB code round differently, so a
pixel's colour depends on its place in the image. A concept's hue and saturation being the
same at every pixel, the round trip is otherwise a ``(k, 256, 3)`` colour table
(:func:`concept_lut`), through which :func:`factorization_batch` colours a batch on device,
within 1 grey level of pytorch-grad-cam. The legend is a matplotlib figure the size of the
image: one line in each concept's colour beside its label.

Unlike pytorch-grad-cam's function, :func:`show_factorization_on_image` does not write zeros
into the caller's ``explanations``, does not change matplotlib's global ``legend.fontsize``
and does not use pyplot, and it checks its inputs. (pytorch-grad-cam 1.5.7 picks its default
colours with ``plt.cm.get_cmap``, which matplotlib 3.9 removed; here the same colours come from
``matplotlib.colormaps``.)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["concept_colors", "concept_lut", "concept_legend", "show_factorization_on_image",
           "factorization_batch", "create_labels_legend"]

# Maps a hair outside [0, 1] (rounding in a resize) are accepted and clipped: they give the same
# uint8 brightness as the clipped value would.
_SLACK = 1e-6


def concept_colors(n_components: int) -> np.ndarray:
    """pytorch-grad-cam's default concept colours: ``gist_rainbow`` at ``0, 1/k, 2/k, ...``.

    Args:
      n_components: the number of concepts ``k`` (at least 1).

    Returns:
      ``(k, 4)`` float64 RGBA colours in [0, 1].
    """
    import matplotlib

    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"n_components must be a positive int, got {n_components!r}")
    cmap = matplotlib.colormaps["gist_rainbow"]
    return np.array([cmap(i) for i in np.arange(0, 1, 1.0 / n_components)][:n_components],
                    np.float64)


def _as_colors(colors: Any, k: int) -> list[np.ndarray]:
    """``k`` float RGB or RGBA colours in [0, 1], or a ValueError saying what is wrong."""
    if colors is None:
        return list(concept_colors(k))
    want = f"colors must be {k} RGB or RGBA colours (floats in [0, 1]), one per concept"
    try:
        out = [np.asarray(c, np.float64).reshape(-1) for c in colors]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{want}; could not read them: {e}") from None
    if len(out) != k:
        raise ValueError(f"{want}; got {len(out)} colours")
    for i, c in enumerate(out):
        if c.size not in (3, 4):
            raise ValueError(f"{want}; colour {i} has {c.size} values")
        if not np.all(np.isfinite(c)) or c.min() < 0 or c.max() > 1:
            raise ValueError(f"{want}; colour {i} is {c.tolist()} (divide 0..255 colours by "
                             f"255)")
    return out


def concept_lut(colors: Any) -> np.ndarray:
    """Each concept's colour at every brightness: the ``(k, 256, 3)`` uint8 RGB table.

    Row ``[i, v]`` is what pytorch-grad-cam paints where concept ``i`` is strongest with
    ``uint8(255 * strength) == v``: the colour ``uint8(255 * colors[i][:3])`` through OpenCV's
    ``COLOR_RGB2HSV``, its V channel set to ``v``, back through ``COLOR_HSV2RGB`` -- by
    OpenCV's vectorised code; at pixels its scalar code converts, 1 grey level may differ.

    Args:
      colors: ``k`` RGB or RGBA colours, floats in [0, 1] (e.g. :func:`concept_colors`).

    Returns:
      ``(k, 256, 3)`` uint8 table.
    """
    rgb = np.uint8(np.array([np.asarray(c, np.float64).reshape(-1)[:3] for c in colors]) * 255)
    hsv = cv2.cvtColor(rgb[None], cv2.COLOR_RGB2HSV)[0]  # (k, 3)
    table = np.repeat(hsv[:, None, :], 256, axis=1)
    table[:, :, 2] = np.arange(256, dtype=np.uint8)
    return cv2.cvtColor(table, cv2.COLOR_HSV2RGB)


def _check_maps(explanations: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(explanations)):
        bad = int(np.size(explanations) - np.count_nonzero(np.isfinite(explanations)))
        raise ValueError(f"{what} must be finite; {bad} of its {explanations.size} values are "
                         f"NaN or infinite")
    lo, hi = float(explanations.min()), float(explanations.max())
    if lo < -_SLACK or hi > 1 + _SLACK:
        raise ValueError(f"{what} must be in [0, 1] (as DeepFeatureFactorization returns them; "
                         f"scale raw maps with jaxcam.postprocess.minmax_normalize); got values "
                         f"from {lo:.4g} to {hi:.4g}")


def _check_image(img: np.ndarray, what: str) -> None:
    if img.dtype == np.uint8:
        raise ValueError(f"{what} must be float in [0, 1], got uint8 (divide by 255)")
    if not np.all(np.isfinite(img)):
        raise ValueError(f"{what} must be finite; it has NaN or infinite values")
    if img.size and (img.min() < 0 or img.max() > 1):
        raise ValueError(f"{what} must be in the range [0, 1]; got values from {img.min()} to "
                         f"{img.max()} (divide a 0..255 image by 255)")


def _check_weight(image_weight: Any) -> None:
    if not 0 <= image_weight <= 1:
        raise ValueError(f"image_weight should be in the range [0, 1]. Got: {image_weight}")


def concept_legend(concept_labels: Sequence[str], colors: Any, height: int,
                   width: int) -> np.ndarray:
    """The legend panel of :func:`show_factorization_on_image`, as pytorch-grad-cam draws it.

    A matplotlib figure of ``width`` x ``height`` pixels (at ``figure.dpi``) with an expanded,
    rounded, shadowed legend: one line per concept, ``5 * height / 256`` points wide, in its
    colour, beside its label, in ``int(14 * height / 256 / max(1, k / 6))`` point type; the
    axes hidden, rendered with Agg and resized to exactly ``(height, width)``. The type is
    sized in points, so its size in pixels follows ``figure.dpi``: at matplotlib's default 100,
    five two-line labels (``create_labels_legend(..., top_k=2)``) overflow the panel, in
    pytorch-grad-cam too; under ``matplotlib.rc_context({"figure.dpi": 72})`` they fit.

    Args:
      concept_labels: one label per concept (may hold newlines).
      colors: one RGB or RGBA colour per concept, floats in [0, 1].
      height: the panel's height in pixels (that of the image it goes beside).
      width: its width in pixels.

    Returns:
      ``(height, width, 3)`` uint8 RGB panel.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    labels = [str(s) for s in concept_labels]
    k = len(labels)
    colors = _as_colors(colors, k)
    if height < 1 or width < 1:
        raise ValueError(f"the legend needs a positive size, got {height} x {width}")
    px = 1 / matplotlib.rcParams["figure.dpi"]  # one pixel in inches
    fontsize = int(14 * height / 256 / max(1, k / 6))
    lw = 5 * height / 256
    with matplotlib.rc_context({"legend.fontsize": fontsize}):
        fig = Figure(figsize=(width * px, height * px))
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        lines = [Line2D([0], [0], color=colors[i], lw=lw) for i in range(k)]
        ax.legend(lines, labels, mode="expand", fancybox=True, shadow=True)
        with warnings.catch_warnings():  # "Tight layout not applied" on small pictures
            warnings.simplefilter("ignore", UserWarning)
            fig.tight_layout(pad=0, w_pad=0, h_pad=0)
        ax.axis("off")
        canvas.draw()
        data = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    return cv2.resize(data, (width, height))


def show_factorization_on_image(img: Any, explanations: Any, colors: Any = None,
                                image_weight: float = 0.5,
                                concept_labels: Sequence[str] | None = None) -> np.ndarray:
    """Colour each pixel by its strongest concept and blend with the image, exactly as
    pytorch-grad-cam 1.5.7 does, with its legend of the concepts' labels beside it.

    Where maps tie, the first concept wins (argmax). See the module docstring for the blend.

    Args:
      img: ``(H, W, 3)`` RGB float image in [0, 1] (not 0..255); float32 or float64 (the blend
        is computed in its precision, as pytorch-grad-cam's is).
      explanations: ``(k, H, W)`` concept maps in [0, 1], e.g. one image's maps from
        :class:`jaxcam.methods.layer.DeepFeatureFactorization`. Not modified.
      colors: ``k`` RGB or RGBA colours (floats in [0, 1]); default :func:`concept_colors`.
      image_weight: weight of the image in the blend, in [0, 1]; the colours get the rest.
      concept_labels: ``k`` labels (e.g. :func:`create_labels_legend`); when given, the
        legend (:func:`concept_legend`, which see for its type size) is put to the right of
        the blend.

    Returns:
      ``(H, W, 3)`` uint8 RGB, or ``(H, 2 W, 3)`` with the legend.

    Raises:
      ValueError: shapes that do not fit together, non-finite values, an image or maps outside
        [0, 1], a number of colours or labels other than ``k``, or ``image_weight`` outside
        [0, 1].
    """
    img = np.asarray(img)
    explanations = np.asarray(explanations)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"img must be one (H, W, 3) RGB image, got shape {img.shape}")
    h, w = img.shape[:2]
    if explanations.ndim != 3 or explanations.shape[1:] != (h, w) or explanations.shape[0] < 1:
        hint = (" (one image's maps: index the batch axis of DeepFeatureFactorization's "
                "(B, k, H, W) explanations)" if explanations.ndim == 4 else "")
        raise ValueError(f"explanations must be (k, H, W) = (k, {h}, {w}) to match img "
                         f"{img.shape}, got {explanations.shape}{hint}")
    _check_image(img, "img")
    _check_maps(explanations, "explanations")
    _check_weight(image_weight)
    k = explanations.shape[0]
    colors = _as_colors(colors, k)
    if concept_labels is not None:
        if isinstance(concept_labels, str) or len(concept_labels) != k:
            got = "a single string" if isinstance(concept_labels, str) else \
                f"{len(concept_labels)} labels"
            raise ValueError(f"concept_labels must hold one label per concept ({k}), got {got}")

    concept = explanations.argmax(axis=0)
    explanations = np.clip(explanations, 0, 1)  # a copy: the caller's maps stay as they were
    mask = np.zeros((h, w, 3), np.float32)
    for i in range(k):
        # Whole-image conversions, as pytorch-grad-cam makes them: OpenCV's vectorised and
        # scalar HSV -> RGB code round differently, so a pixel's colour depends on its place.
        hsv = np.empty((h, w, 3), np.uint8)
        hsv[:] = np.uint8(colors[i][:3] * 255)
        hsv = cv2.cvtColor(hsv, cv2.COLOR_RGB2HSV)
        hsv[:, :, 2] = np.uint8(255 * np.where(concept == i, explanations[i], 0))
        mask += np.float32(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)) / 255
    result = img * image_weight + mask * (1 - image_weight)
    result = np.uint8(result * 255)
    if concept_labels is None:
        return result
    return np.hstack((result, concept_legend(concept_labels, colors, h, w)))


@jax.jit
def _factorization_batch(images: jax.Array, explanations: jax.Array, lut: jax.Array,
                         image_weight: jax.Array, colour_weight: jax.Array) -> jax.Array:
    # As in overlay_batch: explicit floors rather than float->uint8 converts (which may round).
    concept = jnp.argmax(explanations, axis=1)
    strength = jnp.take_along_axis(explanations, concept[:, None], axis=1)[:, 0]
    value = jnp.floor(jnp.clip(255 * strength, 0, 255)).astype(jnp.int32)
    mask = lut[concept, value]
    result = images * image_weight + mask * colour_weight
    return jnp.floor(jnp.clip(result * 255, 0, 255)).astype(jnp.uint8)


def factorization_batch(images: Any, explanations: Any, *, colors: Any = None,
                        image_weight: float = 0.5) -> jax.Array:
    """The coloured blend of :func:`show_factorization_on_image` for a batch, on device.

    Each output image is ``show_factorization_on_image(images[i], explanations[i], colors,
    image_weight)`` (no legend) for float32 inputs, to within 1 grey level where OpenCV's
    scalar code would have coloured a pixel (see the module docstring). Jittable in ``images`` and
    ``explanations``; values are not checked (use :func:`show_factorization_on_image` to have
    bad values rejected). Add legends with :func:`concept_legend`.

    Args:
      images: ``(B, H, W, 3)`` float images in [0, 1].
      explanations: ``(B, k, H, W)`` concept maps in [0, 1] (DeepFeatureFactorization's).
      colors: ``k`` RGB or RGBA colours (floats in [0, 1]); default :func:`concept_colors`.
      image_weight: weight of the images in the blend, in [0, 1].

    Returns:
      ``(B, H, W, 3)`` uint8 pictures.
    """
    images = jnp.asarray(images, jnp.float32)
    explanations = jnp.asarray(explanations, jnp.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3), got {images.shape}")
    b, h, w = images.shape[:3]
    if explanations.ndim != 4 or explanations.shape[0] != b or explanations.shape[2:] != (h, w) \
            or explanations.shape[1] < 1:
        raise ValueError(f"explanations must be (B, k, H, W) = ({b}, k, {h}, {w}) to match "
                         f"images {images.shape}, got {explanations.shape}")
    _check_weight(image_weight)
    lut = jnp.asarray(concept_lut(_as_colors(colors, explanations.shape[1])), jnp.float32) / 255
    # As NumPy computes it: each weight a float32, 1 - w taken in double precision first.
    return _factorization_batch(images, explanations, lut, np.float32(image_weight),
                                np.float32(1 - image_weight))


def create_labels_legend(concept_scores: Any, labels: Sequence[str] | Mapping[int, str],
                         top_k: int = 2) -> list[str]:
    """A legend label per concept: its ``top_k`` classes with their scores, best first.

    pytorch-grad-cam's ``create_labels_legend``: concept ``i``'s label is ``top_k`` lines
    ``"{name}:{score:.2f}"``, the name cut to its first three comma-separated parts. The scores
    are used as given; pytorch-grad-cam's DFF tutorial passes the softmax of the classifier
    head applied to the concept vectors (``computation_on_concepts``).

    Args:
      concept_scores: ``(k, num_classes)`` scores of each concept.
      labels: the class names, a sequence of ``num_classes`` strings or a mapping from class
        index to name (as a Hugging Face ``id2label``).
      top_k: classes per concept, 1..num_classes.

    Returns:
      ``k`` strings.

    Raises:
      ValueError: scores that are not a finite ``(k, num_classes)`` array, names that do not
        cover the classes, or ``top_k`` out of range.
    """
    scores = np.asarray(concept_scores)
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
        raise ValueError(f"concept_scores must be (k, num_classes), one row of class scores per "
                         f"concept, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("concept_scores must be finite; it has NaN or infinite values")
    k, n = scores.shape
    if isinstance(labels, Mapping):
        missing = [i for i in range(n) if i not in labels]
        if missing:
            raise ValueError(f"labels has no name for {len(missing)} of the {n} classes of "
                             f"concept_scores (the first is {missing[0]})")
        names = [labels[i] for i in range(n)]
    else:
        names = list(labels)
        if len(names) != n:
            raise ValueError(f"labels must name the {n} classes of concept_scores {scores.shape}, "
                             f"got {len(names)} names")
    if not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= n:
        raise ValueError(f"top_k must be an int in 1..{n} (the number of classes), got "
                         f"{top_k!r}")
    best = np.argsort(scores, axis=1)[:, ::-1][:, :top_k]
    return ["\n".join(f"{','.join(str(names[c]).split(',')[:3])}:{scores[i, c]:.2f}"
                      for c in best[i]) for i in range(k)]

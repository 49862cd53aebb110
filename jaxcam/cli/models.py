"""The models a user can load by name, and ``--model``'s resolution (listed by ``jaxcam models``,
:mod:`jaxcam.cli.list_models`).

Each :class:`ModelEntry` loads a multi-exit model (the protocol
:class:`jaxcam.adapters.MultiExitModel` that the batch engine explains) and its metadata: the
class names and the normalisation that :func:`jaxcam.cli.common.preprocessing_for` turns into a
:class:`jaxcam.batch.Preprocessing`. A single-exit classifier such as EfficientNet-Lite0 is
presented as a one-exit model (:class:`jaxcam.cli.single_exit.SingleExit`), so the engine
needs no special case.

This module is application layer: it imports the model packages (inside the loaders, so that
``jaxcam --help`` stays fast), which the library must not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MODELS", "ModelEntry", "DEFAULT_EXPLAIN_MODEL", "DEFAULT_DEMO_MODEL",
           "load_model", "describe_models",
           "model_description"]

#: ``jaxcam explain`` without ``--model``: a model that knows real photos.
DEFAULT_EXPLAIN_MODEL = "efficientnet-lite0"
#: ``jaxcam demo`` and ``jaxcam analyze-exits`` without ``--model``: the bundled MSD-Net.
DEFAULT_DEMO_MODEL = "msdnet-shapes"
# The name ``--model`` took for the bundled MSD-Net before the registry; still accepted.
_ALIASES = {"bundled": DEFAULT_DEMO_MODEL}


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One model loadable by name.

    Attributes:
      name: what ``--model`` takes.
      summary: one line for ``jaxcam models``.
      load: ``() -> (model in eval mode, meta)``; ``meta`` holds ``class_names``, ``mean``,
        ``std`` (on the [0, 1] scale), ``image_size``, ``crop``, ``architecture``,
        ``preprocessing`` (a sentence) and ``path`` (where the weights are).
    """

    name: str
    summary: str
    load: Callable[[], tuple[Any, dict[str, Any]]]


def _efficientnet_lite0() -> tuple[Any, dict[str, Any]]:
    import efficientnet_flax as enet
    from efficientnet_flax import imagenet
    from jaxcam.cli.single_exit import SingleExit

    net = enet.load_pretrained()
    size = imagenet.IMAGE_SIZE
    # (x / 255 - mean) / std with mean = 127/255 and std = 128/255 is the weights' own
    # (x - 127) / 128 on 0..255 pixels.
    mean, std = (imagenet.MEAN / 255.0,) * 3, (imagenet.STD / 255.0,) * 3
    meta = {
        "class_names": list(enet.IMAGENET_CLASSES), "mean": list(mean), "std": list(std),
        "image_size": size,
        # The whole photo, resized: its map then covers every pixel of the overlay. The
        # evaluation's centre crop would leave the borders of a wide photo unexplained; the
        # top-5 classes of the packaged photos are the expected ones either way (tests).
        "crop": False,
        "path": str(enet.BUNDLED_WEIGHTS),
        "architecture": "EfficientNet-Lite0 (Tan & Le 2019), ImageNet-1k, 4.65 M parameters, "
                        "one exit: head_conv's 1280-channel map",
        "preprocessing": f"whole image resized to {size}x{size} (INTER_AREA shrinking, "
                         f"INTER_LINEAR enlarging), normalised as (x - 127) / 128",
    }
    return SingleExit(net), meta


def model_description(model: Any, meta: dict[str, Any]) -> dict[str, str]:
    """``architecture`` and ``preprocessing`` sentences of a loaded model.

    Args:
      model: the model (an MSD-Net's own config is read when ``meta`` lacks them).
      meta: its metadata.

    Returns:
      ``{"architecture": ..., "preprocessing": ...}``.
    """
    if "architecture" in meta and "preprocessing" in meta:
        source = meta
    else:
        source = _msdnet_meta(model, meta)
    return {k: str(source[k]) for k in ("architecture", "preprocessing")}


def _msdnet_shapes() -> tuple[Any, dict[str, Any]]:
    from msdnet_flax.pretrained import pretrained

    model, meta = pretrained()
    return model, {**meta, **_msdnet_meta(model, meta)}


def _msdnet_meta(model: Any, meta: dict[str, Any]) -> dict[str, Any]:
    config = model.config
    size = config.image_size
    return {
        "image_size": size, "crop": False,
        "architecture": f"MSD-Net, {config.data} heads, {model.num_exits} exits, "
                        f"{config.num_classes} classes",
        "preprocessing": f"whole image resized to {size}x{size} (INTER_AREA shrinking, "
                         f"INTER_LINEAR enlarging), normalised with mean "
                         f"{[round(m, 4) for m in meta['mean']]}, std "
                         f"{[round(s, 4) for s in meta['std']]}",
    }


#: Every model loadable by name, in the order ``jaxcam models`` lists them.
MODELS: dict[str, ModelEntry] = {e.name: e for e in (
    ModelEntry("efficientnet-lite0",
               "EfficientNet-Lite0, ImageNet-1k (1000 classes), 224 px, one exit; default of "
               "'jaxcam explain'", _efficientnet_lite0),
    ModelEntry("msdnet-shapes",
               "the bundled MSD-Net (msdnet_flax.pretrained), 10 exits, procedural shapes; "
               "default of 'jaxcam demo' (alias: bundled)", _msdnet_shapes),
)}


def load_model(spec: str) -> tuple[Any, dict[str, Any]]:
    """``(model in eval mode, meta)`` for a ``--model`` value: a name or a checkpoint path.

    Args:
      spec: a name of :data:`MODELS` (or ``bundled``), or an ``msdnet_flax`` checkpoint: its
        ``.json``/``.safetensors`` file, a checkpoint directory or a training run's out_dir.

    Returns:
      The model and its metadata (see :attr:`ModelEntry.load`; a checkpoint's metadata also
      has ``step`` and the training settings).

    Raises:
      FileNotFoundError: neither a known name nor an existing path.
      ValueError: the checkpoint is malformed.
    """
    name = _ALIASES.get(spec, spec)
    if name in MODELS:
        return MODELS[name].load()
    if not Path(spec).exists():
        raise FileNotFoundError(f"{spec!r} is neither a model name ({', '.join(MODELS)}; "
                                f"see 'jaxcam models') nor an existing checkpoint path")
    from msdnet_flax.checkpoint import load_checkpoint

    model, meta = load_checkpoint(spec)
    model.eval()
    return model, {**meta, **_msdnet_meta(model, meta)}


def describe_models() -> list[tuple[str, str]]:
    """``(name, summary)`` of every model of :data:`MODELS`, for ``jaxcam models``."""
    return [(e.name, e.summary) for e in MODELS.values()]


"""The bundled, trained MSD-Net: ``pretrained()`` loads the checkpoint shipped with the package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["BUNDLED_PATH", "pretrained"]

#: Where the bundled checkpoint lives (a ``msdnet_flax.checkpoint`` directory).
BUNDLED_PATH = Path(__file__).resolve().parent / "assets" / "bundled"


def pretrained() -> tuple[Any, dict[str, Any]]:
    """The bundled model and its metadata.

    Returns:
      ``(model, meta)`` as :func:`msdnet_flax.checkpoint.load_checkpoint` gives them: the MSDNet
      in eval mode, and the checkpoint's metadata (``model_config``, ``mean``, ``std``,
      ``class_names``, ...).

    Raises:
      FileNotFoundError: no checkpoint at :data:`BUNDLED_PATH`.
    """
    from msdnet_flax.checkpoint import load_checkpoint, resolve_checkpoint

    try:
        resolve_checkpoint(BUNDLED_PATH)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the bundled model has not been trained yet: run `python -m msdnet_flax.train` "
            f"(see --help) and save its checkpoint into {BUNDLED_PATH} "
            f"(no checkpoint found there)") from None
    return load_checkpoint(BUNDLED_PATH)

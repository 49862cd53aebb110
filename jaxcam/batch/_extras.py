"""The hook through which a caller adds its own columns, links and labels to a run's gallery."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jaxcam.batch._reader import Result

__all__ = ["GalleryExtras"]


@dataclasses.dataclass(frozen=True)
class GalleryExtras:
    """What a caller adds to the pictures and the gallery of a run (``jaxcam demo`` adds the
    energy of each map inside the image's object mask, and a link to the mask).

    The gallery is rebuilt from the shards at the end of a run, so the callbacks see each
    explained input as :func:`~jaxcam.batch.open_results` would return it, resumed or not.

    Attributes:
      columns: ``result -> {column: one value per explained exit}``, extra columns of the
        input's table; None adds none.
      links: ``result -> {label: path relative to the output directory}``, extra links under
        the input's grid; None adds none.
      title_prefix: text put before each grid's title (e.g. that the model is untrained).
      warning: a line shown prominently at the top of the gallery.
    """

    columns: Callable[[Result], Mapping[str, Sequence[Any]]] | None = None
    links: Callable[[Result], Mapping[str, str]] | None = None
    title_prefix: str = ""
    warning: str | None = None

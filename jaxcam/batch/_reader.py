"""Reading a run's results back: every explained input by file name (or output name), streamed
shard by shard so a data set's maps never have to fit in memory at once."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxcam.batch._shards import ERRORS, MANIFEST, read_shard_meta

__all__ = ["Result", "Results", "open_results"]

_FIELDS = ("index", "files", "names", "labels", "sizes", "maps", "logits", "targets")


@dataclasses.dataclass(frozen=True)
class Result:
    """One explained input.

    Attributes:
      file: the input (its path, or ``cifar10-test:PATH#i``).
      name: its output name (pictures are ``<name>_cam.png`` / ``<name>_exits.png``).
      index: its position in the run's input list.
      label: its known class, or -1.
      size: (height, width) of the original image.
      maps: (K, S, S) maps of the explained exits (float16 or float32 as stored).
      logits: (K, C) float32 logits of those exits.
      targets: (K,) the classes explained.
      exits: (K,) the exits, numbered from 1.
    """

    file: str
    name: str
    index: int
    label: int
    size: tuple[int, int]
    maps: np.ndarray
    logits: np.ndarray
    targets: np.ndarray
    exits: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        """(K,) each exit's top class."""
        return self.logits.argmax(-1)


class Results(Mapping[str, Result]):
    """The results of a finished run in ``out``, as a read-only mapping ``file -> Result``.

    Iteration yields file names in input order; ``results[key]`` accepts a file or an output
    name; :meth:`items` streams one shard at a time. ``errors`` lists the failed inputs and
    ``manifest`` the run's description.

    Args:
      out: the run's output directory.

    Raises:
      FileNotFoundError: ``out`` holds no ``manifest.json``.
      ValueError: the run is not complete (a shard is missing: run the command again).
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        try:
            self.manifest: dict[str, Any] = json.loads((self.out / MANIFEST).read_text("utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.out} holds no {MANIFEST}: not the output "
                                    f"directory of a jaxcam.batch run (jaxcam explain, "
                                    f"jaxcam demo)") from None
        if not self.manifest.get("complete"):
            raise ValueError(f"the run in {self.out} is not complete (missing shards "
                             f"{self.manifest.get('missing_shards', '?')}); run the same "
                             f"command again to finish it")
        self.exits = np.asarray(self.manifest["exits"], np.int32)
        self.class_names: list[str] = list(self.manifest["class_names"])
        self._shards = [self.out / s["file"] for s in self.manifest["shards"]]
        self._where: dict[str, tuple[int, int]] = {}
        self._order: list[str] = []
        for k, path in enumerate(self._shards):
            meta = read_shard_meta(path, self.manifest["fingerprint"], None, ("files", "names"))
            if meta is None:
                raise ValueError(f"{path} is missing or unreadable; run the command again")
            for t, (f, n) in enumerate(zip(meta["files"], meta["names"], strict=True)):
                self._where[str(f)] = (k, t)
                self._where.setdefault(str(n), (k, t))
                self._order.append(str(f))
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None

    @property
    def errors(self) -> list[dict[str, Any]]:
        """``{"index", "file", "reason"}`` of every failed input, in input order."""
        text = (self.out / ERRORS).read_text("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _shard(self, k: int) -> dict[str, np.ndarray]:
        if self._cache is None or self._cache[0] != k:
            meta = read_shard_meta(self._shards[k], self.manifest["fingerprint"], None, _FIELDS)
            if meta is None:
                raise ValueError(f"{self._shards[k]} became unreadable")
            self._cache = (k, meta)
        return self._cache[1]

    def _result(self, data: Mapping[str, np.ndarray], t: int) -> Result:
        return Result(file=str(data["files"][t]), name=str(data["names"][t]),
                      index=int(data["index"][t]), label=int(data["labels"][t]),
                      size=(int(data["sizes"][t, 0]), int(data["sizes"][t, 1])),
                      maps=data["maps"][:, t], logits=data["logits"][:, t],
                      targets=data["targets"][:, t], exits=self.exits)

    def __getitem__(self, key: str) -> Result:
        where = self._where.get(str(key))
        if where is None:
            raise KeyError(f"{key!r} is not among the {len(self)} explained inputs (failed "
                           f"inputs are in {self.out / ERRORS})")
        return self._result(self._shard(where[0]), where[1])

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        return str(key) in self._where

    def items(self) -> Iterator[tuple[str, Result]]:  # type: ignore[override]
        """``(file, Result)`` in input order, reading each shard once."""
        for k in range(len(self._shards)):
            data = self._shard(k)
            for t in range(len(data["files"])):
                yield str(data["files"][t]), self._result(data, t)


def open_results(out: str | Path) -> Results:
    """The results of the finished run in ``out`` (see :class:`Results`)."""
    return Results(out)

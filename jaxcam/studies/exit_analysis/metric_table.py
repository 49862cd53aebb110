"""The one table of the exit analysis's measures: what each is called where, and which way is
better. The report's tables, the figures, the summary and the computation all read it."""

from __future__ import annotations

import dataclasses

__all__ = ["Metric", "METRIC_TABLE", "metric", "keys"]


@dataclasses.dataclass(frozen=True)
class Metric:
    """One measure of the exit analysis.

    Attributes:
      key: its key in ``report.json`` (``per_exit[key]``, or ``accuracy`` at the top level).
      source: where it comes from: ``"exit"`` (the exit's predictions, for every method),
        ``"map"`` (one map and the object mask per image), ``"faithfulness"`` (deletion /
        insertion curves) or ``"agreement"`` (maps of two exits).
      title: the figure panel's title (empty: no panel).
      column: the report table's column header.
      name: how the summary's sentences call it.
      direction: ``"higher"`` or ``"lower"`` when that way is better, else empty.
      grouped: also reported per group of images (easy / hard).
    """

    key: str
    source: str
    title: str
    column: str
    name: str
    direction: str = ""
    grouped: bool = False


METRIC_TABLE: tuple[Metric, ...] = (
    Metric("accuracy", "exit", "accuracy", "accuracy", "accuracy", "higher", grouped=True),
    Metric("pointing", "map", "pointing game", "pointing", "pointing game", "higher",
           grouped=True),
    Metric("energy", "map", "energy on object", "energy", "energy on the object", "higher",
           grouped=True),
    Metric("deletion_auc", "faithfulness", "deletion AUC (lower = better)", "deletion AUC ↓",
           "deletion AUC (lower = more faithful)", "lower"),
    Metric("insertion_auc", "faithfulness", "insertion AUC (higher = better)",
           "insertion AUC ↑", "insertion AUC (higher = more faithful)", "higher"),
    Metric("area_half_max", "map", "area above half max", "area ≥ ½ max",
           "area above half max"),
    Metric("entropy", "map", "normalised entropy", "entropy", "map entropy"),
    Metric("agreement_next", "agreement", "rank corr. exit k vs k+1", "ρ(k, k+1)",
           "rank agreement of exit k with exit k+1"),
    Metric("agreement_last", "agreement", "", "ρ(k, last)",
           "rank agreement of exit k with the last exit"),
)


def metric(key: str) -> Metric:
    """The table's entry for ``key``.

    Args:
      key: a metric key.

    Returns:
      Its :class:`Metric`.

    Raises:
      KeyError: no such metric.
    """
    for m in METRIC_TABLE:
        if m.key == key:
            return m
    raise KeyError(f"no exit-analysis metric {key!r}; known: {[m.key for m in METRIC_TABLE]}")


def keys(*sources: str, grouped: bool | None = None) -> tuple[str, ...]:
    """The keys of the metrics from ``sources`` (all when none), in table order.

    Args:
      *sources: ``"exit"``, ``"map"``, ``"faithfulness"``, ``"agreement"``.
      grouped: only those reported per group (True) or not (False); None: both.

    Returns:
      The keys.
    """
    return tuple(m.key for m in METRIC_TABLE
                 if (not sources or m.source in sources)
                 and (grouped is None or m.grouped == grouped))

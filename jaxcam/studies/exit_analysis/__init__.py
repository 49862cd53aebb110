"""The exit analysis: what each exit of a multi-exit network looks at, and how well.

:func:`analyze_exits` computes, per exit and per CAM method, accuracy, localisation against
ground-truth masks (pointing game, energy), faithfulness (deletion / insertion AUC), map spread
(area above half max, entropy) and agreement between exits, with bootstrap confidence
intervals, and the same per group of easy and hard images; :func:`write_report` writes it as
JSON, HTML with figures, and a Markdown summary. ``jaxcam analyze-exits`` runs both.

Modules (under :mod:`jaxcam.studies.exit_analysis`): ``compute`` (maps and perturbation
scores, batched and jitted), ``map_metrics`` (per-image measures), ``metric_table`` (every
measure's names and direction, read by the report, figures and summary), ``stats`` (vectorised
bootstrap), ``groups`` (easy/hard groupings), ``core``, ``report``, ``figures``, ``summary``.
"""

from jaxcam.studies.exit_analysis.core import DEFAULT_METHODS, GROUP_METRICS, METRICS, analyze_exits
from jaxcam.studies.exit_analysis.groups import difficulty_groups, stop_exit_groups
from jaxcam.studies.exit_analysis.map_metrics import (
    MAP_METRICS,
    area_above_half_max,
    map_metrics,
    normalised_entropy,
    rank_agreement,
)
from jaxcam.studies.exit_analysis.report import write_report
from jaxcam.studies.exit_analysis.stats import bootstrap_counts, bootstrap_means, summarise
from jaxcam.studies.exit_analysis.summary import summary_markdown

__all__ = [
    "analyze_exits",
    "write_report",
    "summary_markdown",
    "DEFAULT_METHODS",
    "METRICS",
    "GROUP_METRICS",
    "MAP_METRICS",
    "map_metrics",
    "area_above_half_max",
    "normalised_entropy",
    "rank_agreement",
    "stop_exit_groups",
    "difficulty_groups",
    "bootstrap_counts",
    "bootstrap_means",
    "summarise",
]

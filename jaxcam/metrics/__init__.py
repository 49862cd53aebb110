"""Metrics of class activation maps, batched and jittable: faithfulness, localisation, sanity.

Conventions: images are ``(B, H, W, C)`` NHWC; maps ``(B, H, W)`` in ``[0, 1]`` at the images'
size; masks ``(B, H, W)`` bool; ``score_fn(images) -> (B,)`` is the model's score for each image's
target class (each function says whether it expects a probability or a logit). Values are per
image unless a ``reduction`` says otherwise.

* Faithfulness: :func:`deletion_curve` / :func:`insertion_curve` and :func:`auc` (RISE, Petsiuk
  et al. 2018); :func:`average_drop` / :func:`increase_in_confidence` (Grad-CAM++, Chattopadhay et
  al. 2018) on :func:`masked_scores`; :func:`confidence_change` (pytorch-grad-cam); ROAD
  :func:`road_morf` / :func:`road_lerf` / :func:`road_combined` with
  :func:`noisy_linear_imputation` (Rong et al. 2022); pytorch-grad-cam's
  :class:`DropInConfidence` / :class:`IncreaseInConfidence`; :func:`arcc` with
  :func:`complexity` and :func:`coherency` (Poppi et al. 2021).
* Localisation: :func:`pointing_game` (Zhang et al. 2016), :func:`energy_pointing_game`
  (Score-CAM, Wang et al. 2020), :func:`iou`.
* Sanity checks (Adebayo et al. 2018): :func:`cascading_randomization`,
  :func:`label_randomization`, :func:`compare_maps` with :func:`spearman_rank_correlation` and
  :func:`ssim` (Wang et al. 2004).
"""

from jaxcam.metrics.arcc import (
    ARCC_ROAD_PERCENTILES,
    DropInConfidence,
    IncreaseInConfidence,
    arcc,
    coherency,
    complexity,
    drop_in_confidence,
    pgc_pearson,
)
from jaxcam.metrics.faithfulness import (
    auc,
    average_drop,
    confidence_change,
    curve_fractions,
    deletion_curve,
    increase_in_confidence,
    insertion_curve,
    masked_scores,
    rise_blur,
    rise_blur_kernel,
    saliency_ranks,
)
from jaxcam.metrics.localisation import (
    energy_pointing_game,
    iou,
    pointing_game,
    threshold_maps,
)
from jaxcam.metrics.road import (
    DEFAULT_PERCENTILES,
    NEIGHBOUR_WEIGHTS,
    noisy_linear_imputation,
    road_combined,
    road_keep_masks,
    road_lerf,
    road_morf,
)
from jaxcam.metrics.sanity import (
    CascadingRandomization,
    LabelRandomization,
    MapSimilarity,
    cascading_randomization,
    compare_maps,
    default_reinit,
    label_randomization,
    random_other_classes,
)
from jaxcam.metrics.similarity import (
    average_ranks,
    gaussian_window,
    pearson_correlation,
    spearman_rank_correlation,
    ssim,
)

__all__ = [
    "deletion_curve",
    "insertion_curve",
    "auc",
    "curve_fractions",
    "saliency_ranks",
    "rise_blur",
    "rise_blur_kernel",
    "masked_scores",
    "confidence_change",
    "average_drop",
    "increase_in_confidence",
    "noisy_linear_imputation",
    "road_keep_masks",
    "road_morf",
    "road_lerf",
    "road_combined",
    "arcc",
    "complexity",
    "coherency",
    "pgc_pearson",
    "ARCC_ROAD_PERCENTILES",
    "drop_in_confidence",
    "DropInConfidence",
    "IncreaseInConfidence",
    "NEIGHBOUR_WEIGHTS",
    "DEFAULT_PERCENTILES",
    "pointing_game",
    "energy_pointing_game",
    "iou",
    "threshold_maps",
    "spearman_rank_correlation",
    "ssim",
    "average_ranks",
    "pearson_correlation",
    "gaussian_window",
    "compare_maps",
    "cascading_randomization",
    "label_randomization",
    "random_other_classes",
    "default_reinit",
    "MapSimilarity",
    "CascadingRandomization",
    "LabelRandomization",
]

"""Sample-quality evaluation: metrics over feature sets, feature networks, cached reference statistics.

``evaluate(samples, "digits")`` scores samples against real data; ``real_floor("digits", n)`` gives
the real-vs-real floor at the same n; ``prepare`` + ``score`` evaluate repeatedly (during training)
against one cached reference. Metrics work on any features (``ddpm.eval.metrics``).
"""

from ddpm.eval.evaluate import (
    ALL_METRICS,
    METRICS,
    Evaluation,
    evaluate,
    higher_is_better,
    prepare,
    primary_score,
    real_floor,
    score,
)
from ddpm.eval.metrics import (
    class_coverage,
    confidence,
    frechet_distance,
    frechet_distance_from_stats,
    inception_score,
    kernel_inception_distance,
    precision_recall,
    sliced_wasserstein,
)
from ddpm.eval.samples import load_samples_npz

__all__ = [
    "ALL_METRICS",
    "METRICS",
    "Evaluation",
    "class_coverage",
    "confidence",
    "evaluate",
    "frechet_distance",
    "frechet_distance_from_stats",
    "higher_is_better",
    "inception_score",
    "kernel_inception_distance",
    "load_samples_npz",
    "precision_recall",
    "prepare",
    "primary_score",
    "real_floor",
    "score",
    "sliced_wasserstein",
]

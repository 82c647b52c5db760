"""The collective model's continual-learning building blocks: EWC, unknown-class recognition, metrics and
the per-layer gradient statistics that the learngene criterion reads."""

from __future__ import annotations

from learngene.collective.ewc import EWC
from learngene.collective.fisher import diagonal_fisher, diagonal_fisher_loop, exclude_classifier
from learngene.collective.metrics import AccuracyMatrix, accuracy
from learngene.collective.openset import (
    UnknownReport,
    auroc,
    evaluate_open_set,
    flag_unknown_classes,
    fpr_at_tpr,
    knownness,
    threshold_at_tpr,
)
from learngene.collective.recorder import GradientRecorder

__all__ = [
    "EWC",
    "AccuracyMatrix",
    "GradientRecorder",
    "UnknownReport",
    "accuracy",
    "auroc",
    "diagonal_fisher",
    "diagonal_fisher_loop",
    "evaluate_open_set",
    "exclude_classifier",
    "flag_unknown_classes",
    "fpr_at_tpr",
    "knownness",
    "threshold_at_tpr",
]

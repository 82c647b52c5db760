"""Small statistics for honest reports: means with 95% confidence intervals (Student t), calibration (ECE)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# two-sided 95% Student-t quantiles for df = 1..30; beyond that the normal 1.96 is within 2%
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def t95(df: int) -> float:
    if df < 1:
        return float("nan")
    return _T95[df - 1] if df <= len(_T95) else 1.96 + 2.4 / df


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (NaN half-width for fewer than 2 values)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    if n < 2:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return m, t95(n - 1) * math.sqrt(var / n)


def expected_calibration_error(scores: Sequence[float], correct: Sequence[bool], bins: int = 15) -> float:
    """ECE: the gap between the top softmax score and the accuracy, averaged over equal-width score bins
    (Guo et al., 2017). 0 means a score of 0.9 is right 90% of the time; few-shot models are usually far from it,
    so their scores must not be read as probabilities. NaN for no predictions."""
    n = len(scores)
    if n == 0:
        return float("nan")
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, s in enumerate(scores) if (low < s <= high) or (b == 0 and s <= low)]
        if members:
            conf = sum(scores[i] for i in members) / len(members)
            acc = sum(1 for i in members if correct[i]) / len(members)
            total += len(members) / n * abs(conf - acc)
    return total


def softmax_scores(model: Any, x: Any, batch_size: int = 256) -> Any:
    """The model's softmax outputs on ``x`` (eval mode, no gradients, in batches): ``[N, classes]``."""
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]).softmax(1) for i in range(0, len(x), batch_size)])


def calibration(model: Any, x: Any, y: Any, *, bins: int = 15, batch_size: int = 256) -> dict[str, float]:
    """How far a classifier's top softmax scores are from its accuracy on labelled, normalized images ``x``, ``y``.

    ``{"accuracy", "mean_score", "ece"}``: a mean score far above the accuracy is the over-confidence that makes
    the scores unfit to read as probabilities (see :func:`expected_calibration_error`).
    """
    top, label = softmax_scores(model, x, batch_size).max(1)
    correct = (label.cpu() == y.cpu()).tolist()
    scores = top.cpu().tolist()
    n = max(len(scores), 1)
    return {"accuracy": sum(correct) / n, "mean_score": sum(scores) / n,
            "ece": expected_calibration_error(scores, correct, bins)}

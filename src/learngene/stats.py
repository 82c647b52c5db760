"""Small statistics for honest reports: means with 95% confidence intervals (Student t), calibration (ECE).

Two rules every report follows:

* **the interval is taken over the outermost random stage.** Target tasks that share one collective model (or
  one ancestry and learngene) are not independent draws of the method: the variation between collective models
  is missing from an interval over tasks. :func:`nested_ci95` averages within each outer unit (collective seed)
  and takes the t interval over the unit means (n - 1 degrees of freedom); paired differences likewise, per unit.
  An interval over tasks may stand beside it, labelled as conditional on those models.
* **no interval from fewer than** :data:`MIN_N_CI` **values** (with 2, t = 12.7 and the interval says nothing)
  and no interval outside what the quantity can take: :func:`clip` bounds an accuracy's interval to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MIN_N_CI = 3

# two-sided 95% Student-t quantiles for df = 1..30; beyond that the normal 1.96 is within 2%
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def t95(df: int) -> float:
    if df < 1:
        return float("nan")
    return _T95[df - 1] if df <= len(_T95) else 1.96 + 2.4 / df


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (NaN half-width for fewer than MIN_N_CI values)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    if n < MIN_N_CI:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return m, t95(n - 1) * math.sqrt(var / n)


def nested_ci95(groups: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Mean and intervals of values nested in outer units (target tasks within collective seeds).

    ``ci95``: the interval over the outer stage -- one mean per group, then the Student-t interval over those
    means (groups - 1 degrees of freedom; NaN below MIN_N_CI groups); ``excludes_0`` is judged on it.
    ``tasks_ci95``: the interval over all values as if independent, conditional on the groups (labelled so).
    For paired differences pass the per-task differences: each group's mean is then its mean difference.
    """
    kept = [list(g) for g in groups if len(g)]
    means = [sum(g) / len(g) for g in kept]
    mean, ci = mean_ci95(means)
    flat = [v for g in kept for v in g]
    _, tasks_ci = mean_ci95(flat)
    return {"mean": mean, "ci95": ci, "n": len(means), "means": means, "tasks_ci95": tasks_ci,
            "tasks_n": len(flat), "excludes_0": excludes_zero(mean, ci)}


def excludes_zero(mean: float, ci: float) -> bool:
    return math.isfinite(ci) and (mean - ci > 0 or mean + ci < 0)


def clip(mean: float, ci: float, lo: float = 0.0, hi: float = 1.0) -> tuple[float, float]:
    """The interval mean ± ci as (low, high) within [lo, hi] (an accuracy's interval never leaves [0, 1])."""
    return max(lo, mean - ci), min(hi, mean + ci)


def format_ci(mean: float, ci: float, n: int | None = None, digits: int = 3, bounded: bool = True) -> str:
    """'±0.030', or '[0.950, 1.000]' where the bounds of an accuracy cut the interval, or why there is none."""
    if not math.isfinite(ci):
        return f"no CI (n = {n} < {MIN_N_CI})" if n is not None and n < MIN_N_CI else "no CI"
    if bounded and (mean - ci < 0.0 or mean + ci > 1.0):
        low, high = clip(mean, ci)
        return f"[{low:.{digits}f}, {high:.{digits}f}]"
    return f"±{ci:.{digits}f}"
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

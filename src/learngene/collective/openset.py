"""Unknown-class recognition: score how "known" an image looks and measure how well that separates classes.

The collective model meets classes it was never trained on (the open world). A *knownness* score is
computed from its logits (higher = more likely a known class); AUROC and FPR at 95 % TPR tell how well
the score separates known from unknown images, and :func:`flag_unknown_classes` turns per-image scores
into a per-class decision ("this whole class is new").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from learngene.errors import ConfigError, DataError

__all__ = [
    "KNOWNNESS_METHODS",
    "UnknownReport",
    "auroc",
    "evaluate_open_set",
    "flag_unknown_classes",
    "fpr_at_tpr",
    "knownness",
    "threshold_at_tpr",
]

KNOWNNESS_METHODS = ("msp", "energy", "maxlogit")


def knownness(logits: Tensor, method: str = "msp", temperature: float = 1.0) -> Tensor:
    """Per-row score, higher = more likely a known class.

    ``msp``: maximum softmax probability; ``energy``: ``T * logsumexp(logits / T)`` (negative free energy);
    ``maxlogit``: largest raw logit. ``temperature`` only affects ``energy``.
    """
    if method not in KNOWNNESS_METHODS:
        raise ConfigError(
            f"unknown knownness method {method!r}; choose one of {', '.join(KNOWNNESS_METHODS)}"
        )
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[1] == 0:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise DataError(f"knownness expects logits of shape [N, n_classes], got {shape}")
    logits = logits.detach().float()
    if method == "msp":
        return logits.softmax(dim=1).amax(dim=1)
    if method == "maxlogit":
        return logits.amax(dim=1)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"energy temperature must be a finite number > 0, got {temperature!r}")
    return temperature * torch.logsumexp(logits / temperature, dim=1)


def _scores(x: Tensor, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    x = x.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
    if x.numel() == 0:
        raise DataError(
            f"no {what} scores: need at least one {what} image to evaluate unknown-class recognition"
        )
    if bool(torch.isnan(x).any()):
        raise DataError(
            f"{what} scores contain NaN; the model produced non-finite logits -- check the checkpoint"
        )
    return x


def auroc(known: Tensor, unknown: Tensor) -> float:
    """``P(s_known > s_unknown) + 0.5 * P(tie)`` -- the Mann-Whitney statistic, exact with ties.

    Counts with integer arithmetic via sorted search, O((n + m) log m).
    """
    k = _scores(known, "known")
    u, _ = torch.sort(_scores(unknown, "unknown"))
    below = torch.searchsorted(u, k, side="left").sum().item()  # unknowns strictly lower than each known
    below_or_eq = torch.searchsorted(u, k, side="right").sum().item()
    ties = below_or_eq - below
    return (2 * below + ties) / (2 * k.numel() * u.numel())


def _check_tpr(tpr: float) -> None:
    if not (isinstance(tpr, int | float) and 0.0 < tpr <= 1.0):
        raise ConfigError(f"tpr must be in (0, 1] (e.g. 0.95), got {tpr!r}")


def threshold_at_tpr(known: Tensor, tpr: float = 0.95) -> float:
    """Largest threshold ``t`` such that at least ``tpr`` of the known scores are ``>= t``."""
    _check_tpr(tpr)
    k, _ = torch.sort(_scores(known, "known"), descending=True)
    n_keep = max(1, math.ceil(tpr * k.numel() - 1e-9))
    return float(k[n_keep - 1])


def fpr_at_tpr(known: Tensor, unknown: Tensor, tpr: float = 0.95) -> float:
    """Fraction of unknown scores ``>=`` the threshold that keeps ``tpr`` of the known ones (lower is better)."""
    t = threshold_at_tpr(known, tpr)
    u = _scores(unknown, "unknown")
    return float((u >= t).double().mean())


@dataclass
class UnknownReport:
    """How well a knownness score separates known from unknown images."""

    auroc: float
    fpr95: float
    n_known: int
    n_unknown: int
    method: str

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def evaluate_open_set(known_logits: Tensor, unknown_logits: Tensor, method: str = "msp") -> UnknownReport:
    """AUROC and FPR@95%TPR of ``knownness(method)`` on known-class vs unknown-class logits."""
    k = knownness(known_logits, method)
    u = knownness(unknown_logits, method)
    return UnknownReport(
        auroc=auroc(k, u),
        fpr95=fpr_at_tpr(k, u, 0.95),
        n_known=int(k.numel()),
        n_unknown=int(u.numel()),
        method=method,
    )


def flag_unknown_classes(
    scores_by_class: dict[str, Tensor], threshold: float, min_fraction: float = 0.5
) -> dict[str, bool]:
    """Per class: True (unknown) if at least ``min_fraction`` of its images score below ``threshold``."""
    if not (0.0 < min_fraction <= 1.0):
        raise ConfigError(f"min_fraction must be in (0, 1], got {min_fraction!r}")
    if not math.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
    flags: dict[str, bool] = {}
    for name, scores in scores_by_class.items():
        s = _scores(scores, f"class {name!r}")
        flags[name] = float((s < threshold).double().mean()) >= min_fraction - 1e-12
    return flags

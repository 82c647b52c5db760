"""Criteria that choose the learngene: which contiguous blocks of a trained model to inherit.

They work on named units in model order: the collective CNN's conv blocks (``features.i``) or a transformer
ancestry's blocks (``blocks.i``, :mod:`learngene.vit.criterion`); what differs between the two is the evidence
(:class:`FractionEvidence` or the ancestry's gradient shares) and the scorer the caller passes in.

The paper's hypothesis is that layers whose gradient statistic stays low and stable across the task stream
carry task-independent knowledge (it ends up with the last blocks). We implement that rule
(``gradient_stability``) and a ``validation`` criterion that measures, for every candidate window, how
well an individual model built on it learns pseudo-target tasks drawn from classes the collective model
never trained on (never the novel ones). Both write the gradient statistic next to each candidate's score.

When the scores cannot separate the best windows (a tie: e.g. every window reaches 100% on pseudo-tasks that are
too easy), a warning says so and :func:`choose` breaks the tie by evidence rather than by list order: first the
paper's gradient statistic (lower mean + across-task std), when it was recorded; then the larger window (the
most of the collective model's knowledge that the evidence allows); then the deeper one (the paper's hypothesis
that the learngene lies in the last layers). The record names the tied windows and the rule that decided.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from learngene.config import Config
from learngene.errors import ConfigError, LearngeneError
from learngene.registry import CRITERIA
from learngene.runtime import progress_bar

log = logging.getLogger(__name__)

CriterionFn = Callable[["CriterionContext"], "CriterionResult"]
def register_criterion(name: str) -> Callable[[CriterionFn], CriterionFn]:
    """Decorator: ``fn(ctx) -> CriterionResult`` becomes selectable as ``criterion.name = name``."""
    return CRITERIA.register(name)


def list_criteria() -> list[str]:
    return CRITERIA.names()


@dataclass
class CriterionContext:
    network: nn.Module  # the trained model (the collective network, or a transformer ancestry)
    layer_names: list[str]  # the candidate units in model order, e.g. ["features.0", ...] or ["blocks.0", ...]
    grad_stats: torch.Tensor | None  # [n_tasks, n_layers] per-task mean of the recorded gradient fraction
    grad_norms: torch.Tensor | None  # [n_tasks, n_layers] per-task mean gradient norm
    cfg: Config
    data: Any = None  # ImageSet (needed by the validation criterion)
    pseudo_classes: list[str] = field(default_factory=list)
    pseudo_pool: str = ""
    input_spec: dict[str, Any] = field(default_factory=dict)
    # the validation criterion's scorer: score_window(layers, inherit=True) -> mean pseudo-task accuracy
    score_window: Any = None
    progress: bool = False  # a progress bar over the candidates (the validation criterion trains for minutes)
    window_size: int | None = None  # size of the candidate windows; None: criterion.n_layers
    # the gradient record gradient_stability reads (see FractionEvidence); None: grad_stats / grad_norms
    evidence: Any = None
    unit: str = "conv blocks"  # what the candidate units are, for messages

    def __post_init__(self) -> None:
        if self.window_size is None:
            self.window_size = self.cfg.criterion.n_layers
        if self.evidence is None:
            self.evidence = FractionEvidence(self.grad_stats, self.grad_norms, self.cfg.record.threshold)


class FractionEvidence:
    """The collective model's gradient record: per task, each layer's fraction of weight-gradient entries above
    the threshold (and the gradient norm).  Any object with ``available``, ``missing``, ``record(a, b)``,
    ``instability(a, b)`` and ``reason(size)`` can stand for it (a transformer ancestry's gradient shares do)."""

    missing = "the gradient_stability criterion needs recorded gradient statistics (gradient_stats.*)"

    def __init__(self, stats: torch.Tensor | None, norms: torch.Tensor | None, threshold: float) -> None:
        self.stats, self.norms, self.threshold = stats, norms, threshold

    @property
    def available(self) -> bool:
        return self.stats is not None and bool(self.stats.numel())

    def record(self, a: int, b: int) -> dict[str, float]:
        """The statistics of the window [a, b) shown next to every candidate's score."""
        out: dict[str, float] = {}
        if self.available:
            s = self.stats[:, a:b]
            out["grad_fraction_mean"] = float(torch.nanmean(s))
            per_layer_std = torch.stack([_nanstd(self.stats[:, i]) for i in range(a, b)])
            out["grad_fraction_std_over_tasks"] = float(per_layer_std.mean())
        if self.norms is not None and self.norms.numel():
            out["grad_norm_mean"] = float(torch.nanmean(self.norms[:, a:b]))
        return out

    def instability(self, a: int, b: int) -> float:
        st = self.record(a, b)
        return st["grad_fraction_mean"] + st["grad_fraction_std_over_tasks"]

    def reason(self, size: int) -> str:
        return (f"window of {size} blocks with the lowest mean + across-task std of the fraction of weight-gradient "
                f"entries above the threshold ({self.threshold:g}); score = -(mean + std)")


@dataclass
class CriterionResult:
    name: str
    selected: list[str]
    candidates: list[dict[str, Any]]  # each: {"layers": [...], "score": float, "grad_fraction": float, ...}
    reason: str
    tie: dict[str, Any] | None = None  # {"windows": [...], "broken_by": "..."} when the best score was shared

    def to_dict(self) -> dict[str, Any]:
        from learngene.safeio import jsonable

        scores = {"+".join(c["layers"]): c["score"] for c in self.candidates
                  if isinstance(c["score"], float) and math.isfinite(c["score"])}
        # undefined statistics (NaN) become null: the gene manifest is strict JSON
        out = {"name": self.name, "selected": self.selected, "scores": scores,
               "candidates": jsonable(self.candidates), "reason": self.reason}
        if self.tie is not None:
            out["tie"] = jsonable(self.tie)
        return out


def windows(n_layers: int, size: int | None) -> list[tuple[int, int]]:
    """Contiguous candidate windows [start, stop): all of them for small nets, else the given size + prefixes/suffixes."""
    if n_layers <= 6 and size is None:
        return [(a, b) for a in range(n_layers) for b in range(a + 1, n_layers + 1) if b - a < n_layers]
    k = size or 3
    if k >= n_layers:
        raise ConfigError(f"criterion.n_layers = {k} leaves nothing fresh in a {n_layers}-block collective model")
    out = {(a, a + k) for a in range(n_layers - k + 1)}
    return sorted(out)


def _nanstd(x: torch.Tensor) -> torch.Tensor:
    x = x[~torch.isnan(x)]
    return x.std() if len(x) > 1 else torch.tensor(0.0)


# scores that agree to this many decimals are a tie (pseudo-task accuracies are multiples of 1/queries anyway)
_TIE_DECIMALS = 6


def _instability(cand: dict[str, Any]) -> float:
    """The paper's penalty (mean + across-task std of the gradient statistic); inf where it was not recorded."""
    mean, std = cand.get("grad_fraction_mean"), cand.get("grad_fraction_std_over_tasks")
    if mean is None or std is None or not (math.isfinite(mean) and math.isfinite(std)):
        return math.inf
    return mean + std


def choose(name: str, cands: list[dict[str, Any]], layer_names: list[str]) -> tuple[dict[str, Any], dict | None]:
    """The best candidate by score, and the tie record when several share the best score (module docstring).

    A tie is logged as a warning: the criterion could not tell those windows apart, so the choice among them
    rests on the tie-break, not on the criterion.
    """
    top = max(round(c["score"], _TIE_DECIMALS) for c in cands)
    tied = [c for c in cands if round(c["score"], _TIE_DECIMALS) == top]
    if len(tied) == 1:
        return tied[0], None

    def key(c: dict[str, Any]) -> tuple[float, int, int]:
        return (_instability(c), -len(c["layers"]), -layer_names.index(c["layers"][-1]))

    best = min(tied, key=key)
    recorded = math.isfinite(_instability(best)) and len({_instability(c) for c in tied}) > 1
    rule = ("the lowest gradient statistic (the paper's rule)" if recorded
            else "the larger, then the deeper window (no gradient statistic separates them)")
    windows_ = ["+".join(c["layers"]) for c in tied]
    log.warning(
        "criterion %s cannot separate %d of the %d candidate windows (all score %.4g): %s; chose %s by %s. "
        "Harder pseudo-tasks (more ways, fewer shots: criterion.pseudo_shots) or criterion.name = "
        "'gradient_stability' would decide on evidence", name, len(tied), len(cands), top, ", ".join(windows_),
        "+".join(best["layers"]), rule)
    return best, {"windows": windows_, "score": top, "broken_by": rule}


def _tie_note(tie: dict[str, Any] | None) -> str:
    return "" if tie is None else f"; {len(tie['windows'])} windows tied at {tie['score']:.4g}, broken by {tie['broken_by']}"


@register_criterion("gradient_stability")
def gradient_stability(ctx: CriterionContext) -> CriterionResult:
    """The paper's rule: the window whose gradient statistic is lowest and most stable over training."""
    evidence = ctx.evidence
    if not evidence.available:
        raise LearngeneError(evidence.missing)
    size = min(ctx.window_size or 3, len(ctx.layer_names) - 1)
    cands = [{"layers": ctx.layer_names[a:b], "score": -evidence.instability(a, b), **evidence.record(a, b)}
             for a, b in windows(len(ctx.layer_names), size)]  # score: higher is better
    best, tie = choose("gradient_stability", cands, ctx.layer_names)
    return CriterionResult("gradient_stability", best["layers"], cands, evidence.reason(size) + _tie_note(tie), tie)


@register_criterion("fixed")
def fixed(ctx: CriterionContext) -> CriterionResult:
    layers = list(ctx.cfg.criterion.layers or [])
    unknown = [n for n in layers if n not in ctx.layer_names]
    if unknown:
        raise ConfigError(f"criterion.layers names {unknown} that are not {ctx.unit} of the model {ctx.layer_names}")
    idx = [ctx.layer_names.index(n) for n in layers]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        raise ConfigError(f"criterion.layers {layers} must be contiguous blocks in model order")
    st = ctx.evidence.record(idx[0], idx[-1] + 1)
    return CriterionResult("fixed", layers, [{"layers": layers, "score": float("nan"), **st}], "chosen by the user")


@register_criterion("validation")
def validation(ctx: CriterionContext) -> CriterionResult:
    """Score each window by few-shot accuracy on pseudo-target tasks from classes the trained model never saw.

    The scoring itself (build models around the window, train them, measure their accuracy) belongs to later
    stages of the flow; the caller passes it in as ``ctx.score_window`` (see
    :class:`learngene.individual.PseudoTaskScorer`; ``score(layers, inherit=False)`` is the scratch reference).
    """
    score = ctx.score_window
    if score is None:
        raise LearngeneError(
            "the validation criterion needs at least 2 classes outside the stream and the novel split for pseudo-tasks; "
            "use criterion.name = 'gradient_stability' or a split with open-world classes"
        )
    spans = windows(len(ctx.layer_names), ctx.window_size)
    log.info("criterion validation: training individual models on %s for each of %d candidate windows "
             "(and a scratch reference)", score.describe(), len(spans))
    cands = []
    for a, b in progress_bar(spans, enabled=ctx.progress, desc="criterion: windows"):
        cands.append({"layers": ctx.layer_names[a:b], "score": score(ctx.layer_names[a:b]),
                      **ctx.evidence.record(a, b)})
    # reference: the same architecture from scratch on the same pseudo-tasks
    scratch = score(ctx.layer_names[:1], inherit=False)
    best, tie = choose("validation", cands, ctx.layer_names)
    return CriterionResult(
        "validation", best["layers"], cands,
        f"highest mean query accuracy over {score.describe()} from {len(ctx.pseudo_classes)} {ctx.pseudo_pool} "
        f"classes (never the novel ones); scratch reference {scratch:.3f}, best {best['score']:.3f}{_tie_note(tie)}",
        tie,
    )


def select_layers(ctx: CriterionContext) -> CriterionResult:
    CRITERIA.check(ctx.cfg.criterion.name, "criterion.name")
    return CRITERIA.get(ctx.cfg.criterion.name)(ctx)

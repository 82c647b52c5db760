"""Criteria that choose the learngene: which contiguous conv blocks of the collective model to inherit.

The paper's hypothesis is that layers whose gradient statistic stays low and stable across the task stream
carry task-independent knowledge (it ends up with the last blocks). We implement that rule
(``gradient_stability``) and a ``validation`` criterion that measures, for every candidate window, how
well an individual model built on it learns pseudo-target tasks drawn from classes the collective model
never trained on (never the novel ones). Both write the gradient statistic next to each candidate's score.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from learngene.config import Config
from learngene.errors import ConfigError, LearngeneError
from learngene.registry import CRITERIA

CriterionFn = Callable[["CriterionContext"], "CriterionResult"]
def register_criterion(name: str) -> Callable[[CriterionFn], CriterionFn]:
    """Decorator: ``fn(ctx) -> CriterionResult`` becomes selectable as ``criterion.name = name``."""
    return CRITERIA.register(name)


def list_criteria() -> list[str]:
    return CRITERIA.names()


@dataclass
class CriterionContext:
    network: nn.Module  # the trained collective network (ExpandableVGG)
    layer_names: list[str]  # its conv blocks in order, e.g. ["features.0", ...]
    grad_stats: torch.Tensor | None  # [n_tasks, n_layers] per-task mean of the recorded gradient fraction
    grad_norms: torch.Tensor | None  # [n_tasks, n_layers] per-task mean gradient norm
    cfg: Config
    data: Any = None  # ImageSet (needed by the validation criterion)
    pseudo_classes: list[str] = field(default_factory=list)
    pseudo_pool: str = ""
    input_spec: dict[str, Any] = field(default_factory=dict)
    # the validation criterion's scorer: score_window(layers, inherit=True) -> mean pseudo-task accuracy
    score_window: Any = None


@dataclass
class CriterionResult:
    name: str
    selected: list[str]
    candidates: list[dict[str, Any]]  # each: {"layers": [...], "score": float, "grad_fraction": float, ...}
    reason: str

    def to_dict(self) -> dict[str, Any]:
        from learngene.safeio import jsonable

        scores = {"+".join(c["layers"]): c["score"] for c in self.candidates
                  if isinstance(c["score"], float) and math.isfinite(c["score"])}
        # undefined statistics (NaN) become null: the gene manifest is strict JSON
        return {"name": self.name, "selected": self.selected, "scores": scores,
                "candidates": jsonable(self.candidates), "reason": self.reason}


def windows(n_layers: int, size: int | None) -> list[tuple[int, int]]:
    """Contiguous candidate windows [start, stop): all of them for small nets, else the given size + prefixes/suffixes."""
    if n_layers <= 6 and size is None:
        return [(a, b) for a in range(n_layers) for b in range(a + 1, n_layers + 1) if b - a < n_layers]
    k = size or 3
    if k >= n_layers:
        raise ConfigError(f"criterion.n_layers = {k} leaves nothing fresh in a {n_layers}-block collective model")
    out = {(a, a + k) for a in range(n_layers - k + 1)}
    return sorted(out)


def _layer_stat(ctx: CriterionContext, a: int, b: int) -> dict[str, float]:
    out: dict[str, float] = {}
    if ctx.grad_stats is not None and ctx.grad_stats.numel():
        s = ctx.grad_stats[:, a:b]
        out["grad_fraction_mean"] = float(torch.nanmean(s))
        per_layer_std = torch.stack([_nanstd(ctx.grad_stats[:, i]) for i in range(a, b)])
        out["grad_fraction_std_over_tasks"] = float(per_layer_std.mean())
    if ctx.grad_norms is not None and ctx.grad_norms.numel():
        out["grad_norm_mean"] = float(torch.nanmean(ctx.grad_norms[:, a:b]))
    return out


def _nanstd(x: torch.Tensor) -> torch.Tensor:
    x = x[~torch.isnan(x)]
    return x.std() if len(x) > 1 else torch.tensor(0.0)


@register_criterion("gradient_stability")
def gradient_stability(ctx: CriterionContext) -> CriterionResult:
    """The paper's rule: the window whose gradient fraction is lowest and most stable across tasks."""
    if ctx.grad_stats is None or not ctx.grad_stats.numel():
        raise LearngeneError("the gradient_stability criterion needs recorded gradient statistics (gradient_stats.*)")
    size = ctx.cfg.criterion.n_layers or 3
    size = min(size, len(ctx.layer_names) - 1)
    cands = []
    for a, b in windows(len(ctx.layer_names), size):
        st = _layer_stat(ctx, a, b)
        score = -(st["grad_fraction_mean"] + st["grad_fraction_std_over_tasks"])  # higher is better
        cands.append({"layers": ctx.layer_names[a:b], "score": score, **st})
    best = max(cands, key=lambda c: c["score"])
    return CriterionResult(
        "gradient_stability", best["layers"], cands,
        f"window of {size} blocks with the lowest mean + across-task std of the fraction of weight-gradient entries "
        f"above the threshold ({ctx.cfg.record.threshold:g}); score = -(mean + std)",
    )


@register_criterion("fixed")
def fixed(ctx: CriterionContext) -> CriterionResult:
    layers = list(ctx.cfg.criterion.layers or [])
    unknown = [n for n in layers if n not in ctx.layer_names]
    if unknown:
        raise ConfigError(f"criterion.layers names {unknown} that are not conv blocks of the model {ctx.layer_names}")
    idx = [ctx.layer_names.index(n) for n in layers]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        raise ConfigError(f"criterion.layers {layers} must be contiguous blocks in model order")
    st = _layer_stat(ctx, idx[0], idx[-1] + 1)
    return CriterionResult("fixed", layers, [{"layers": layers, "score": float("nan"), **st}], "chosen by the user")


@register_criterion("validation")
def validation(ctx: CriterionContext) -> CriterionResult:
    """Score each window by few-shot accuracy on pseudo-target tasks from classes the collective never trained on.

    The scoring itself (build individual models around the window, train them, measure query accuracy) belongs to
    later stages of the flow; the caller passes it in as ``ctx.score_window`` (see
    :class:`learngene.individual.PseudoTaskScorer`).
    """
    score = ctx.score_window
    if score is None:
        raise LearngeneError(
            "the validation criterion needs at least 2 classes outside the stream and the novel split for pseudo-tasks; "
            "use criterion.name = 'gradient_stability' or a split with open-world classes"
        )
    cands = []
    for a, b in windows(len(ctx.layer_names), ctx.cfg.criterion.n_layers):
        cands.append({"layers": ctx.layer_names[a:b], "score": score(ctx.layer_names[a:b]), **_layer_stat(ctx, a, b)})
    # reference: the same individual architecture from scratch on the same pseudo-tasks
    scratch = score(ctx.layer_names[:1], inherit=False)
    best = max(cands, key=lambda cand: (round(cand["score"], 6), -len(cand["layers"])))
    return CriterionResult(
        "validation", best["layers"], cands,
        f"highest mean query accuracy over {score.describe()} from {len(ctx.pseudo_classes)} {ctx.pseudo_pool} "
        f"classes (never the novel ones); scratch reference {scratch:.3f}, best {best['score']:.3f}",
    )


def select_layers(ctx: CriterionContext) -> CriterionResult:
    return CRITERIA.get(ctx.cfg.criterion.name)(ctx)

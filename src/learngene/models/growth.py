"""Growth steps planned on a model's shape record (``config()``), so a whole schedule can be planned before any
weight moves: each returns a :class:`~learngene.models.growth_plan.GrowthPlan` (what a step does to the model
and to any dict of tensors keyed like it: see that module); :func:`widen`, :func:`deepen` and
:func:`expand_classes` plan and apply in one call."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from learngene.errors import ModelError
from learngene.models.growth_plan import GROWTH_KINDS, STATE_KINDS, GrowthPlan, identity_block
from learngene.models.vgg import ExpandableVGG

__all__ = [
    "GROWTH_KINDS",
    "STATE_KINDS",
    "GrowthPlan",
    "advance",
    "consumer_of",
    "deepen",
    "expand_classes",
    "identity_block",
    "plan_deepen",
    "plan_deepen_cfg",
    "plan_expand_classes",
    "plan_widen",
    "plan_widen_cfg",
    "require_vgg",
    "split_noise_std",
    "widen",
]


def _draw_seed(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def require_vgg(model: nn.Module) -> dict[str, Any]:
    if not isinstance(model, ExpandableVGG):
        raise ModelError(f"growth needs an ExpandableVGG model, got {type(model).__name__}")
    return model.config()


def _check_layer(cfg: Mapping[str, Any], layer: int, what: str) -> int:
    n = len(cfg["widths"])
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise ModelError(
            f"{what} must be a block index in 0..{n - 1} (the model has {n} conv blocks), got {layer!r}"
        )
    return layer


def consumer_of(cfg: Mapping[str, Any], layer: int) -> tuple[str, int]:
    n = len(cfg["widths"])
    if layer < n - 1:
        return f"features.{layer + 1}.conv", 1
    side = int(cfg["image_size"])
    for _ in cfg["pools"]:
        side //= 2
    return ("head.fc0" if cfg["hidden"] else "classifier"), side * side


def plan_widen_cfg(
    cfg: Mapping[str, Any],
    layer: int,
    new_width: int,
    generator: torch.Generator | None,
    noise: float,
    noise_std: float,
) -> GrowthPlan:
    layer = _check_layer(cfg, layer, "widen layer")
    old = int(cfg["widths"][layer])
    if isinstance(new_width, bool) or not isinstance(new_width, int) or new_width <= old:
        raise ModelError(
            f"widen block {layer}: new_width must be an integer larger than its current {old} channels, "
            f"got {new_width!r} (widths never shrink)"
        )
    delta = new_width - old
    rounds = -(-delta // old)
    mapping = torch.cat([torch.randperm(old, generator=generator) for _ in range(rounds)])[:delta]
    consumer, spatial = consumer_of(cfg, layer)
    seed = _draw_seed(generator) if noise_std > 0 else None
    return GrowthPlan(
        kind="widen",
        layer=layer,
        old_width=old,
        new_width=new_width,
        num_blocks=len(cfg["widths"]),
        mapping=mapping,
        consumer=consumer,
        spatial=spatial,
        noise=float(noise),
        noise_std=float(noise_std),
        seed=seed,
    )


def plan_deepen_cfg(cfg: Mapping[str, Any], after: int) -> GrowthPlan:
    after = _check_layer(cfg, after, "deepen position `after`")
    width = int(cfg["widths"][after])
    return GrowthPlan(
        kind="deepen", layer=after, old_width=width, new_width=width, num_blocks=len(cfg["widths"])
    )


def advance(cfg: dict[str, Any], plan: GrowthPlan) -> dict[str, Any]:
    """The shape record after ``plan`` -- lets a schedule plan several steps before any is applied."""
    cfg = {**cfg, "widths": list(cfg["widths"]), "pools": list(cfg["pools"])}
    if plan.kind == "widen":
        cfg["widths"][plan.layer] = plan.new_width
    elif plan.kind == "deepen":
        cfg["widths"].insert(plan.layer + 1, plan.old_width)
        cfg["pools"] = [p + 1 if p > plan.layer else p for p in cfg["pools"]]
    else:
        cfg["num_classes"] = plan.new_width
    return cfg


def split_noise_std(model: ExpandableVGG, consumer: str, noise: float) -> float:
    if (
        isinstance(noise, bool)
        or not isinstance(noise, (int, float))
        or not math.isfinite(noise)
        or noise < 0
    ):
        raise ModelError(
            f"noise must be a finite number >= 0 (relative to the consumer's weight std), got {noise!r}"
        )
    if noise == 0:
        return 0.0
    w = model.get_submodule(consumer).weight.detach().float()
    std = float(w.std()) if w.numel() > 1 else 0.0
    if not math.isfinite(std) or std == 0.0:
        std = 1.0 / math.sqrt(max(1, w[0].numel()))
    return float(noise) * std


def plan_widen(
    model: ExpandableVGG,
    layer: int,
    new_width: int,
    generator: torch.Generator | None = None,
    noise: float = 0.0,
) -> GrowthPlan:
    """Plan widening block ``layer`` to ``new_width`` channels (replicas drawn with ``generator``); not applied."""
    cfg = require_vgg(model)
    consumer, _ = consumer_of(cfg, _check_layer(cfg, layer, "widen layer"))
    return plan_widen_cfg(cfg, layer, new_width, generator, noise, split_noise_std(model, consumer, noise))


def plan_deepen(model: ExpandableVGG, after: int) -> GrowthPlan:
    """Plan inserting an identity block right after block ``after`` (after its pool, if any); not applied."""
    return plan_deepen_cfg(require_vgg(model), after)


def plan_expand_classes(
    model: ExpandableVGG, num_classes: int, generator: torch.Generator | None = None
) -> GrowthPlan:
    """Plan growing the classifier to ``num_classes`` rows, replayable on EWC/optimizer state like the others."""
    cfg = require_vgg(model)
    old = int(cfg["num_classes"])
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < old:
        raise ModelError(
            f"num_classes must be an integer >= the current {old} outputs (classes are never removed), "
            f"got {num_classes!r}"
        )
    return GrowthPlan(
        kind="classes",
        layer=-1,
        old_width=old,
        new_width=num_classes,
        num_blocks=len(cfg["widths"]),
        seed=_draw_seed(generator),
        fan_in=model.classifier.in_features,
    )


def widen(
    model: ExpandableVGG,
    layer: int,
    new_width: int,
    generator: torch.Generator | None = None,
    noise: float = 0.0,
) -> GrowthPlan:
    """Widen block ``layer`` to ``new_width`` channels in place (Net2WiderNet); returns the applied plan."""
    plan = plan_widen(model, layer, new_width, generator=generator, noise=noise)
    plan.apply(model)
    return plan


def deepen(model: ExpandableVGG, after: int) -> GrowthPlan:
    """Insert an identity block after block ``after`` in place (Net2DeeperNet); returns the applied plan."""
    plan = plan_deepen(model, after)
    plan.apply(model)
    return plan


def expand_classes(
    model: ExpandableVGG, num_classes: int, generator: torch.Generator | None = None
) -> GrowthPlan:
    """Grow the classifier to ``num_classes`` outputs in place (old logits unchanged); returns the plan."""
    plan = plan_expand_classes(model, num_classes, generator=generator)
    plan.apply(model)
    return plan

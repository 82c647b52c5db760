"""When and where the collective model grows: growth schedules over the task stream.

Split from :mod:`learngene.models.growth`, which is the mechanism (function-preserving plans); a schedule only
decides which plans to make before each task.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from learngene.errors import ConfigError, ModelError
from learngene.models.growth import (
    GrowthPlan,
    advance,
    consumer_of,
    plan_deepen_cfg,
    plan_widen_cfg,
    require_vgg,
    split_noise_std,
)
from learngene.models.vgg import ExpandableVGG

__all__ = ["GrowthSchedule", "paper_schedule"]

_PAPER_STEPS: list[tuple[int, int]] = (
    [(2, 64), (3, 64)]
    + [(layer, 64) for layer in (4, 5, 6) for _ in range(2)]
    + [(layer, 128) for layer in range(7, 13) for _ in range(2)]
)


def paper_schedule() -> dict[int, list[tuple[int, int]]]:
    """Task index -> [(block, added channels)] reproducing the paper's VGG13 growth over tasks 1..20.

    Task 0 trains the base model.  Then one block grows per task, shallow to deep, each block finishing its
    growth before the next starts: blocks 2,3 +64 once; blocks 4,5,6 +64 twice; blocks 7..12 +128 twice.
    From ``vgg13_paper``'s widths this ends at 64,64,128,128,256,256,256,512,512,512,512,512,512.
    """
    return {task: [step] for task, step in enumerate(_PAPER_STEPS, start=1)}


class GrowthSchedule:
    """Which layer grows before which task.

    Modes: ``"paper"`` (:func:`paper_schedule`, needs a 13-block model), ``"round_robin"`` (before task ``t``,
    widen ``layers[(t-1) % len(layers)]`` by ``step`` capped at ``max_width``; a layer already at the cap passes
    its turn to the next one below it) and ``"none"``.  ``deepen_every=k`` also inserts an identity block
    before every k-th task, cycling over the ends of the pooling stages (after the widening, if any).
    ``layers`` are block indices as they are when planning (default: all blocks).
    """

    MODES = ("paper", "round_robin", "none")

    def __init__(
        self,
        mode: str = "round_robin",
        step: int = 16,
        max_width: int = 512,
        deepen_every: int | None = None,
        layers: Sequence[int] | None = None,
        noise: float = 0.0,
    ) -> None:
        if mode not in self.MODES:
            raise ConfigError(f"growth mode must be one of {self.MODES}, got {mode!r}")
        for name, value in (("step", step), ("max_width", max_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"growth {name} must be an integer >= 1, got {value!r}")
        if deepen_every is not None and (
            isinstance(deepen_every, bool) or not isinstance(deepen_every, int) or deepen_every < 1
        ):
            raise ConfigError(f"growth deepen_every must be an integer >= 1 or None, got {deepen_every!r}")
        if mode == "paper" and deepen_every is not None:
            raise ConfigError(
                "growth mode 'paper' fixes which of the 13 blocks grow; deepening would shift them -- "
                "set deepen_every = None or use mode 'round_robin'"
            )
        if layers is not None:
            layers = list(layers)
            if not layers or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in layers):
                raise ConfigError(
                    f"growth layers must be a non-empty list of block indices >= 0, got {layers!r}"
                )
        if (
            isinstance(noise, bool)
            or not isinstance(noise, (int, float))
            or not math.isfinite(noise)
            or noise < 0
        ):
            raise ConfigError(f"growth noise must be a finite number >= 0, got {noise!r}")
        self.mode = mode
        self.step = step
        self.max_width = max_width
        self.deepen_every = deepen_every
        self.layers = layers
        self.noise = float(noise)

    def config(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "step": self.step,
            "max_width": self.max_width,
            "deepen_every": self.deepen_every,
            "layers": self.layers,
            "noise": self.noise,
        }

    def __repr__(self) -> str:
        return "GrowthSchedule(" + ", ".join(f"{k}={v!r}" for k, v in self.config().items()) + ")"

    def _widen_steps(self, cfg: Mapping[str, Any], task_index: int) -> list[tuple[int, int]]:
        widths = cfg["widths"]
        if self.mode == "paper":
            if len(widths) != 13:
                raise ModelError(
                    f"growth mode 'paper' is written for the 13-block vgg13_paper, this model has {len(widths)} "
                    "blocks; use mode 'round_robin' for other models"
                )
            return [(layer, widths[layer] + delta) for layer, delta in paper_schedule().get(task_index, [])]
        if self.mode == "round_robin":
            layers = self.layers if self.layers is not None else list(range(len(widths)))
            bad = [v for v in layers if v >= len(widths)]
            if bad:
                raise ModelError(
                    f"growth layers {bad} do not exist: the model has {len(widths)} blocks (0..{len(widths) - 1})"
                )
            start = (task_index - 1) % len(layers)
            for k in range(len(layers)):
                layer = layers[(start + k) % len(layers)]
                if widths[layer] < self.max_width:
                    return [(layer, min(widths[layer] + self.step, self.max_width))]
        return []

    def plans_for(
        self, model: ExpandableVGG, task_index: int, generator: torch.Generator | None = None
    ) -> list[GrowthPlan]:
        """Plans (not yet applied) to run, in order, before task ``task_index``; none before task 0."""
        if isinstance(task_index, bool) or not isinstance(task_index, int) or task_index < 0:
            raise ConfigError(f"task_index must be an integer >= 0, got {task_index!r}")
        cfg = require_vgg(model)
        if task_index == 0:
            return []
        plans: list[GrowthPlan] = []
        for layer, new_width in self._widen_steps(cfg, task_index):
            consumer, _ = consumer_of(cfg, layer)
            noise_std = split_noise_std(model, consumer, self.noise) if not plans else 0.0
            plan = plan_widen_cfg(cfg, layer, new_width, generator, self.noise, noise_std)
            plans.append(plan)
            cfg = advance(cfg, plan)
        if self.deepen_every is not None and task_index % self.deepen_every == 0:
            n = len(cfg["widths"])
            stage_ends = sorted(set(cfg["pools"]) | {n - 1})
            after = stage_ends[(task_index // self.deepen_every - 1) % len(stage_ends)]
            plan = plan_deepen_cfg(cfg, after)
            plans.append(plan)
            cfg = advance(cfg, plan)
        return plans

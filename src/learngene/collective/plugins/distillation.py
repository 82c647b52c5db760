"""LwF: distillation from the network as it was before the task, on the old classes' logits."""

from __future__ import annotations

import copy
import json
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from learngene.collective.plugins.base import Batch, Plugin, Trainer
from learngene.models import model_from_config

__all__ = ["DistillationPlugin"]


def _frozen(module: nn.Module) -> nn.Module:
    """A module in eval mode whose parameters take no gradient (the distillation teacher)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class DistillationPlugin(Plugin):
    """LwF: KL(teacher || student) on the old classes' logits at temperature T, scaled by T^2 (Hinton et al.).

    The teacher is a frozen copy of the network as it starts the task (growth kept its function on old classes).
    """

    name = "distill"

    def __init__(self, weight: float, temperature: float = 2.0) -> None:
        self.weight, self.temperature = weight, temperature
        self.teacher: nn.Module | None = None

    def before_epochs(self, trainer: Trainer, t: int) -> None:
        self.teacher = _frozen(copy.deepcopy(trainer.network)) if t > 0 and self.weight > 0 else None

    def loss(self, trainer: Trainer, batch: Batch) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        old = torch.tensor(trainer.seen_labels(batch.t - 1), device=trainer.device)
        temp = self.temperature
        with torch.no_grad():
            target = F.softmax(self.teacher(batch.x).float()[:, old] / temp, dim=1)
        student = F.log_softmax(batch.logits_all.float()[:, old] / temp, dim=1)
        return self.weight * (F.kl_div(student, target, reduction="batchmean") * temp * temp)

    def after_task(self, trainer: Trainer, t: int, result: dict[str, Any]) -> None:
        self.teacher = None

    def state_dict(self) -> dict[str, Any] | None:
        if self.teacher is None:
            return None
        return {"config": json.dumps(self.teacher.config()),
                "weights": {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any], trainer: Trainer) -> None:
        teacher = model_from_config(json.loads(state["config"]))
        teacher.load_state_dict(state["weights"])
        self.teacher = _frozen(teacher.to(trainer.device))  # resumed mid-task: the network at the task's start

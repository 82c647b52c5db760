"""Elastic weight consolidation across the stream's tasks, following every growth step."""

from __future__ import annotations

from typing import Any

import torch

from learngene.collective.ewc import EWC
from learngene.collective.plugins.base import Batch, Plugin, Trainer
from learngene.distributed import weighted_mean_
from learngene.runtime import derive_seed, generator

__all__ = ["EWCPlugin"]


class EWCPlugin(Plugin):
    """Elastic weight consolidation across tasks; its anchors and Fisher follow every growth step."""

    name = "ewc"

    def __init__(self, ewc: EWC, fisher_samples: int = 200, seed: int = 0) -> None:
        self.ewc, self.fisher_samples, self.seed = ewc, fisher_samples, seed

    def after_growth(self, trainer: Trainer, plan: Any) -> None:
        self.ewc.on_growth(plan)

    def loss(self, trainer: Trainer, batch: Batch) -> torch.Tensor:
        return self.ewc.penalty(trainer.network)

    def penalty_grads(self, trainer: Trainer, names: list[str]) -> dict[str, torch.Tensor] | None:
        """The penalty's own gradient, so gradient statistics can measure the task's gradient alone."""
        return self.ewc.penalty_grads(trainer.network, names=names) if self.ewc.active else None

    def after_task(self, trainer: Trainer, t: int, result: dict[str, Any]) -> None:
        exp = trainer.stream[t]
        n = min(self.fisher_samples, len(exp.train_indices))
        gen = generator(derive_seed(self.seed, "fisher", t))
        pick = exp.train_indices[torch.randperm(len(exp.train_indices), generator=gen)[:n]]
        dist = trainer.dist
        pick = pick[dist.rank :: dist.world_size]  # each rank its share; the Fisher is averaged below
        x = trainer.batches.prepare(pick)
        y = trainer.stream.targets(pick).to(trainer.device)
        self.ewc.consolidate(trainer.network, x, y, reduce=lambda f: weighted_mean_(dist, f, len(pick)))

    def state_dict(self) -> dict[str, Any]:
        return self.ewc.state_dict()

    def load_state_dict(self, state: dict[str, Any], trainer: Trainer) -> None:
        self.ewc.load_state_dict(state)
        self.ewc.to(trainer.device)

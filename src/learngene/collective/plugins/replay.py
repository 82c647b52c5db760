"""Exemplar replay: a small memory of every finished class, trained with later tasks."""

from __future__ import annotations

import json
from typing import Any

import torch

from learngene.collective.memory import ExemplarMemory
from learngene.collective.plugins.base import Plugin, Trainer
from learngene.runtime import derive_seed, generator

__all__ = ["ReplayPlugin"]


class ReplayPlugin(Plugin):
    """A small exemplar memory: ``per_class`` images of every finished class replayed with later tasks."""

    name = "memory"

    def __init__(self, per_class: int, seed: int = 0) -> None:
        self.memory, self.seed = ExemplarMemory(per_class), seed

    def train_indices(self, trainer: Trainer, t: int, indices: torch.Tensor) -> torch.Tensor:
        replay = self.memory.indices(exclude_labels=set(trainer.stream[t].labels))
        return torch.cat([indices, replay]) if len(replay) else indices

    def after_task(self, trainer: Trainer, t: int, result: dict[str, Any]) -> None:
        exp = trainer.stream[t]
        self.memory.add(exp.train_indices, trainer.stream.targets(exp.train_indices),
                        generator(derive_seed(self.seed, "memory", t)))
        result["memory"] = self.memory.summary()

    def report(self, trainer: Trainer, report: dict[str, Any]) -> None:
        report["memory"] = self.memory.summary()

    def state_dict(self) -> dict[str, Any]:
        return {"memory": json.dumps(self.memory.state_dict())}

    def load_state_dict(self, state: dict[str, Any], trainer: Trainer) -> None:
        self.memory.load_state_dict(json.loads(state["memory"]))

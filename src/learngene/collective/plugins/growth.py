"""Growth: the schedule's function-preserving widen/deepen plans, applied before a task."""

from __future__ import annotations

import logging

from learngene.collective.plugins.base import Plugin, Trainer
from learngene.models.schedule import GrowthSchedule
from learngene.runtime import derive_seed, generator

log = logging.getLogger(__name__)

__all__ = ["GrowthPlugin"]


class GrowthPlugin(Plugin):
    """Widen/deepen the network before a task by a :class:`GrowthSchedule`, function-preserving.

    ``trigger="unknown"`` grows only when the open-world plugin recognized an unknown class, ``"always"`` before
    every task after the first, ``"never"`` not at all.
    """

    name = "growth"

    def __init__(self, schedule: GrowthSchedule, trigger: str = "unknown", seed: int = 0) -> None:
        self.schedule, self.trigger, self.seed = schedule, trigger, seed

    def before_task(self, trainer: Trainer, t: int) -> None:
        if t == 0 or self.trigger == "never":
            return
        recognized = trainer.current.get("recognition")
        if self.trigger == "unknown" and recognized is not None and not recognized["recognized_unknown"]:
            return
        gen = generator(derive_seed(self.seed, "growth", t))
        plans = self.schedule.plans_for(trainer.network, t, generator=gen)
        for plan in plans:
            log.debug("task %d: growth %s", t, plan.describe())
            trainer.apply_growth(plan)
        trainer.network_changed()
        trainer.current["growth"] = [plan.to_dict() for plan in plans]

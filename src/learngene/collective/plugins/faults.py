"""Fault injection for crash/resume tests: kill the process at a named point."""

from __future__ import annotations

from typing import Any

from learngene.collective.plugins.base import Batch, Plugin, Trainer
from learngene.faults import maybe_kill

__all__ = ["FaultPlugin"]


class FaultPlugin(Plugin):
    """Kill the process at a named point when ``LEARNGENE_KILL_AT=point[:n]`` is set (crash/resume tests)."""

    name = "faults"
    order = 90  # after the others' work, before the checkpoint

    def after_growth(self, trainer: Trainer, plan: Any) -> None:
        maybe_kill("growth")

    def after_backward(self, trainer: Trainer, batch: Batch) -> None:
        maybe_kill("batch")

    def after_task_done(self, trainer: Trainer, t: int) -> None:
        maybe_kill("task_end")

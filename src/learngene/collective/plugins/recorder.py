"""Per-layer gradient statistics while the collective model learns (the gradient_stability criterion's evidence)."""

from __future__ import annotations

from typing import Any

from learngene.collective.plugins.base import Batch, Plugin, Trainer
from learngene.collective.recorder import GradientRecorder

__all__ = ["RecorderPlugin"]


class RecorderPlugin(Plugin):
    """Per-layer gradient statistics on the task's gradient (the EWC pull towards the old anchor taken out)."""

    name = "recorder"

    def __init__(self, recorder: GradientRecorder) -> None:
        self.recorder = recorder

    def after_growth(self, trainer: Trainer, plan: Any) -> None:
        self.recorder.on_growth(plan)  # split units keep a statistic comparable with their source's

    def before_epochs(self, trainer: Trainer, t: int) -> None:
        self.recorder.attach(trainer.network)

    def after_backward(self, trainer: Trainer, batch: Batch) -> None:
        exclude = None
        for p in trainer.plugins:
            grads = getattr(p, "penalty_grads", None)
            if grads is not None:
                exclude = grads(trainer, self.recorder.param_names)
        self.recorder.after_backward(exclude=exclude)

    def after_epoch(self, trainer: Trainer, t: int, epoch: int, row: dict[str, Any]) -> None:
        # gradients were all-reduced by DDP before the recorder saw them, so its statistics agree across ranks
        stats = self.recorder.end_epoch(t, epoch)
        if stats:
            row["mean_grad_fraction"] = float(sum(s["fraction"] for s in stats.values()) / len(stats))

    def state_dict(self) -> dict[str, Any]:
        return self.recorder.state_dict()

    def load_state_dict(self, state: dict[str, Any], trainer: Trainer) -> None:
        self.recorder.load_state_dict(state)
        self.recorder.attach(trainer.network)

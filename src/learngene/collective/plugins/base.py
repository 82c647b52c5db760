"""The plugin lifecycle of the collective trainer (Avalanche's strategy + plugins, Lightning's callbacks).

A plugin overrides any of the hooks below; each gets the trainer, whose ``network``, ``stream``, ``optimizer``
and ``current`` (the record of the task being learned) it may read and, where documented, change. The trainer
calls the plugins in list order, hook by hook, at these points of every task ``t``:

1. ``before_task(trainer, t)`` -- the network may change here (recognize unknown classes, grow).
2. ``after_growth(trainer, plan)`` -- after every function-preserving change of the network (widen, deepen,
   new head units), so state tied to parameter shapes (EWC anchors, gradient statistics) follows it.
3. ``before_epochs(trainer, t)`` -- the network and the fresh optimizer are final for the task (take a
   distillation teacher, attach hooks).
4. per epoch: ``before_epoch(trainer, t, epoch)``, then ``train_indices(trainer, t, indices)`` returns the
   image indices of the epoch (add replay); per batch: ``loss(trainer, batch)`` returns a term added to the
   cross-entropy (or None), ``after_backward(trainer, batch)`` sees the gradients before the optimizer step;
   then ``after_epoch(trainer, t, epoch, row)``.
   ``on_epoch_end(trainer, t, epoch)`` follows once the epoch is counted as done (a checkpoint there resumes
   with the next epoch).
5. ``after_task(trainer, t, result)`` -- consolidate, remember, evaluate; may add entries to ``result``.
6. ``on_task_end(trainer, t)`` -- the task's record is complete (checkpoints are written here).

``state_dict``/``load_state_dict`` put a plugin's state into the run's checkpoints under its ``name``. A run
resumed from a checkpoint taken inside task ``t`` does not replay steps 1-3 of that task: every plugin gets
``on_resume(trainer, t, epoch)`` instead, after all states are loaded (re-attach hooks there);
``report(trainer, report)`` may add entries to the final report. ``order`` sorts plugins (lower first; ties
keep list order): checkpointing runs last so it saves what the others did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from learngene.collective.trainer import Batch, CollectiveTrainer


class Plugin:
    """Base class: every hook is a no-op, override the ones you need."""

    name: str = "plugin"
    order: int = 0

    def before_task(self, trainer: CollectiveTrainer, t: int) -> None: ...

    def after_growth(self, trainer: CollectiveTrainer, plan: Any) -> None: ...

    def before_epochs(self, trainer: CollectiveTrainer, t: int) -> None: ...

    def train_indices(self, trainer: CollectiveTrainer, t: int, indices: torch.Tensor) -> torch.Tensor:
        return indices

    def before_epoch(self, trainer: CollectiveTrainer, t: int, epoch: int) -> None: ...

    def loss(self, trainer: CollectiveTrainer, batch: Batch) -> torch.Tensor | None:
        return None

    def after_backward(self, trainer: CollectiveTrainer, batch: Batch) -> None: ...

    def after_epoch(self, trainer: CollectiveTrainer, t: int, epoch: int, row: dict[str, Any]) -> None: ...

    def after_task(self, trainer: CollectiveTrainer, t: int, result: dict[str, Any]) -> None: ...

    def on_epoch_end(self, trainer: CollectiveTrainer, t: int, epoch: int) -> None: ...

    def on_resume(self, trainer: CollectiveTrainer, t: int, epoch: int) -> None: ...

    def on_task_end(self, trainer: CollectiveTrainer, t: int) -> None: ...

    def report(self, trainer: CollectiveTrainer, report: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any], trainer: CollectiveTrainer) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

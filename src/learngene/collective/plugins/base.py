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
   ``after_epoch_done(trainer, t, epoch)`` follows once the epoch is counted as done (a checkpoint there resumes
   with the next epoch).
5. ``after_task(trainer, t, result)`` -- consolidate, remember, evaluate; may add entries to ``result``.
6. ``after_task_done(trainer, t)`` -- the task's record is complete (checkpoints are written here).

``state_dict``/``load_state_dict`` put a plugin's state into the run's checkpoints under its ``name``. A run
resumed from a checkpoint taken inside task ``t`` does not replay steps 1-3 of that task: every plugin gets
``after_resume(trainer, t, epoch)`` instead, after all states are loaded (re-attach hooks there);
``report(trainer, report)`` may add entries to the final report. ``order`` sorts plugins (lower first; ties
keep list order): checkpointing runs last so it saves what the others did.  Every hook is named
``before_*`` / ``after_*``; the old names ``on_epoch_end``, ``on_task_end`` and ``on_resume`` still work (with
a :class:`DeprecationWarning` when a plugin class defines them).

The built-in plugins live one per module next to this one (Avalanche's layout); what a plugin may use of the
trainer is :class:`Trainer`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["Batch", "Plugin", "Trainer"]

# hooks of earlier releases -> their names now
_RENAMED_HOOKS = {"on_epoch_end": "after_epoch_done", "on_task_end": "after_task_done", "on_resume": "after_resume"}


@dataclass
class Batch:
    """One training step as plugins see it (``logits`` over the loss's classes, ``logits_all`` over every unit)."""

    t: int
    epoch: int
    index: int
    indices: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor | None = None
    logits_all: torch.Tensor | None = None
    loss: torch.Tensor | None = None


class Trainer(Protocol):
    """What a plugin may use of the collective trainer (:class:`~learngene.collective.trainer.Trainer`)."""

    network: nn.Module
    stream: Any  # the TaskStream being learned
    batches: Any  # its image batches (prepare / logits)
    device: torch.device
    dist: Any  # DistInfo
    epochs: int
    plugins: Sequence[Plugin]
    current: dict[str, Any]  # the record of the task being learned
    ckpt_dir: Path | None

    def seen_labels(self, upto: int) -> list[int]: ...

    def apply_growth(self, plan: Any) -> None: ...

    def network_changed(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...


class Plugin:
    """Base class: every hook is a no-op, override the ones you need."""

    name: str = "plugin"
    order: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for old, new in _RENAMED_HOOKS.items():
            if old in cls.__dict__:
                warnings.warn(f"{cls.__name__}.{old} is the old name of the hook {new}; rename it",
                              DeprecationWarning, stacklevel=2)
                if new not in cls.__dict__:
                    setattr(cls, new, cls.__dict__[old])

    def before_task(self, trainer: Trainer, t: int) -> None: ...

    def after_growth(self, trainer: Trainer, plan: Any) -> None: ...

    def before_epochs(self, trainer: Trainer, t: int) -> None: ...

    def train_indices(self, trainer: Trainer, t: int, indices: torch.Tensor) -> torch.Tensor:
        return indices

    def before_epoch(self, trainer: Trainer, t: int, epoch: int) -> None: ...

    def loss(self, trainer: Trainer, batch: Batch) -> torch.Tensor | None:
        return None

    def after_backward(self, trainer: Trainer, batch: Batch) -> None: ...

    def after_epoch(self, trainer: Trainer, t: int, epoch: int, row: dict[str, Any]) -> None: ...

    def after_task(self, trainer: Trainer, t: int, result: dict[str, Any]) -> None: ...

    def after_epoch_done(self, trainer: Trainer, t: int, epoch: int) -> None: ...

    def after_resume(self, trainer: Trainer, t: int, epoch: int) -> None: ...

    def after_task_done(self, trainer: Trainer, t: int) -> None: ...

    def report(self, trainer: Trainer, report: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any], trainer: Trainer) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

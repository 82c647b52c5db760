"""Checkpoints of the whole run, written after every few epochs and every task."""

from __future__ import annotations

import logging

from learngene.checkpoint import save_checkpoint
from learngene.collective.plugins.base import Plugin, Trainer

log = logging.getLogger(__name__)

__all__ = ["CheckpointPlugin"]


class CheckpointPlugin(Plugin):
    """Save the whole run (network, optimizer, every plugin's state) every ``every`` epochs and after each task.

    It writes into the trainer's ``ckpt_dir`` (set by ``fit``), on the main process only.
    """

    name = "checkpoint"
    order = 100  # last: it saves what the other plugins did

    def __init__(self, every: int = 1) -> None:
        self.every = every

    def after_epoch_done(self, trainer: Trainer, t: int, epoch: int) -> None:
        if (epoch + 1) % self.every == 0 and epoch + 1 < trainer.epochs:
            self._save(trainer, t, epoch + 1)

    def after_task_done(self, trainer: Trainer, t: int) -> None:
        self._save(trainer, t + 1, 0)

    def _save(self, trainer: Trainer, task: int, epoch: int) -> None:
        if trainer.ckpt_dir is not None and trainer.dist.is_main:
            path = save_checkpoint(trainer.ckpt_dir, trainer.state_dict(), task=task, epoch=epoch)
            log.debug("checkpoint %s", path)

"""The paper's collective learner, assembled from plugins: recognize the unknown, grow, remember, record.

One task at a time (hooks of :mod:`learngene.collective.plugins`, in this order):

1. *Recognize* (:class:`OpenWorldPlugin`): before seeing labels, score the new task's images with the current
   head; classes whose images mostly fall below the known-class threshold (set at ``openset.tpr`` of held-out
   known images) are reported as unknown. After the task, open-world AUROC on never-trained classes.
2. *Grow* (:class:`GrowthPlugin`): apply the growth schedule's function-preserving plans (triggered by unknown
   classes with ``growth.trigger = "unknown"``); every plugin follows each plan (``after_growth``).
3. *Train*: the trainer's cross-entropy step plus the EWC penalty (:class:`EWCPlugin`), LwF distillation
   (:class:`DistillationPlugin`) and exemplar replay (:class:`ReplayPlugin`), while :class:`RecorderPlugin`
   records per-layer gradient statistics on the task's gradient.
4. *Consolidate*: update the Fisher, fill the exemplar memory; :class:`CheckpointPlugin` saves the run.

The plugins live one per module in :mod:`learngene.collective.plugins`; this module assembles them from a config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from learngene.collective.ewc import EWC
from learngene.collective.plugins import (
    CheckpointPlugin,
    DistillationPlugin,
    EWCPlugin,
    FaultPlugin,
    GrowthPlugin,
    OpenWorldPlugin,
    Plugin,
    RecorderPlugin,
    ReplayPlugin,
)
from learngene.collective.recorder import GradientRecorder
from learngene.collective.trainer import CollectiveTrainer, OptimizerFactory, sgd
from learngene.config import Config
from learngene.data import TaskStream
from learngene.data.transforms import BatchAugment
from learngene.distributed import SINGLE, DistInfo
from learngene.models import create_model
from learngene.models.schedule import GrowthSchedule
from learngene.registry import MODELS
from learngene.runtime import derive_seed, seeded

__all__ = ["build_network", "default_plugins", "from_config"]


def build_network(cfg: Config, stream: TaskStream) -> nn.Module:
    """The configured model with a head for the first task; its initial weights depend on the seed only."""
    MODELS.check(cfg.model.name, "model.name")
    with seeded(derive_seed(cfg.seed, "init")):
        return create_model(
            cfg.model.name,
            in_channels=stream.data.channels,
            image_size=stream.data.image_size,
            num_classes=len(stream[0].labels),
            hidden=cfg.model.hidden,
            dropout=cfg.model.dropout,
        )


def from_config(cfg: Config, stream: TaskStream, input_spec: dict[str, Any] | None = None, *, device: torch.device | str = "cpu",
                dist: DistInfo = SINGLE, plugins: Sequence[Plugin] = (),
                optimizer: OptimizerFactory | None = None) -> CollectiveTrainer:
    """The paper's collective learner as ``cfg`` describes it: network, optimizer factory, configured plugins.

    ``plugins`` (your own) run after the configured ones, before fault injection and checkpointing; ``optimizer``
    replaces the configured SGD.
    """
    t = cfg.train
    return CollectiveTrainer(
        build_network(cfg, stream),
        stream,
        input_spec=input_spec,
        plugins=[*default_plugins(cfg), *plugins],
        optimizer=optimizer or sgd(t.lr, t.momentum, t.weight_decay),
        epochs=t.epochs,
        batch_size=t.batch_size,
        loss_scope=t.loss_scope,
        augment=BatchAugment(cfg.data.augment),
        seed=cfg.seed,
        amp=t.amp,
        channels_last=t.channels_last,
        on_nonfinite=t.on_nonfinite,
        device=device,
        dist=dist,
        config=cfg.to_dict(),
    )


def default_plugins(cfg: Config) -> list[Plugin]:
    """The plugins ``cfg`` asks for, in the order that reproduces the paper's learner."""
    g = cfg.growth
    schedule = GrowthSchedule(mode=g.mode, step=g.step, max_width=g.max_width, deepen_every=g.deepen_every,
                              noise=g.noise)
    return [
        OpenWorldPlugin(cfg.openset.method, cfg.openset.tpr, cfg.openset.class_fraction),
        GrowthPlugin(schedule, trigger=g.trigger, seed=cfg.seed),
        EWCPlugin(EWC(cfg.train.ewc_lambda, decay=cfg.train.ewc_decay, normalize=True),
                  fisher_samples=cfg.train.fisher_samples, seed=cfg.seed),
        ReplayPlugin(cfg.train.memory_per_class, seed=cfg.seed),
        DistillationPlugin(cfg.train.distill, cfg.train.distill_temperature),
        RecorderPlugin(GradientRecorder(threshold=cfg.record.threshold, signed=cfg.record.signed)),
        FaultPlugin(),
        CheckpointPlugin(cfg.train.checkpoint_every),
    ]

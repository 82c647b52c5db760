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
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from learngene.collective.ewc import EWC
from learngene.collective.memory import ExemplarMemory
from learngene.collective.openset import evaluate_open_set, flag_unknown_classes, knownness, threshold_at_tpr
from learngene.collective.plugins import Plugin
from learngene.collective.recorder import GradientRecorder
from learngene.collective.trainer import Batch, CollectiveTrainer, OptimizerFactory, sgd
from learngene.config import Config
from learngene.data import TaskStream
from learngene.data.transforms import BatchAugment
from learngene.distributed import SINGLE, DistInfo, weighted_mean_
from learngene.faults import maybe_kill
from learngene.models import create_model
from learngene.models.schedule import GrowthSchedule
from learngene.registry import MODELS
from learngene.runtime import derive_seed, generator, seeded

log = logging.getLogger(__name__)

__all__ = [
    "CheckpointPlugin",
    "DistillationPlugin",
    "EWCPlugin",
    "FaultPlugin",
    "GrowthPlugin",
    "OpenWorldPlugin",
    "RecorderPlugin",
    "ReplayPlugin",
    "build_network",
    "default_plugins",
    "from_config",
]


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


class OpenWorldPlugin(Plugin):
    """Recognize unknown classes before each task; measure open-world AUROC on never-trained classes after it."""

    name = "openset"

    def __init__(self, method: str = "msp", tpr: float = 0.95, class_fraction: float = 0.2) -> None:
        self.method, self.tpr, self.class_fraction = method, tpr, class_fraction

    def before_task(self, trainer: CollectiveTrainer, t: int) -> None:
        if t == 0:
            return
        stream, batches = trainer.stream, trainer.batches
        exp = stream[t]
        known = knownness(batches.logits(trainer.network, stream.seen_test_indices(t - 1)), self.method)
        thr = threshold_at_tpr(known, self.tpr)
        train_targets = stream.targets(exp.train_indices)
        scores = knownness(batches.logits(trainer.network, exp.train_indices), self.method)
        by_class = {c: scores[train_targets.to(scores.device) == lab] for c, lab in zip(exp.classes, exp.labels)}
        flags = flag_unknown_classes(by_class, thr, min_fraction=self.class_fraction)
        truth = {c: c in exp.new_classes for c in exp.classes}
        trainer.current["recognition"] = {
            "threshold": float(thr),
            "recognized_unknown": [c for c in exp.classes if flags[c]],
            "truly_new": list(exp.new_classes),
            "recognition_accuracy": sum(flags[c] == truth[c] for c in exp.classes) / len(exp.classes),
            "fraction_below_threshold": {c: float((v < thr).float().mean()) for c, v in by_class.items()},
        }

    @torch.no_grad()
    def after_task(self, trainer: CollectiveTrainer, t: int, result: dict[str, Any]) -> None:
        ow = trainer.stream.open_world_test_indices
        if not len(ow):
            return
        seen = torch.tensor(trainer.seen_labels(t), device=trainer.device)
        known = trainer.batches.logits(trainer.network, trainer.stream.seen_test_indices(t))[:, seen]
        unknown = trainer.batches.logits(trainer.network, ow)[:, seen]
        result["open_world"] = evaluate_open_set(known, unknown, self.method).to_dict()


class GrowthPlugin(Plugin):
    """Widen/deepen the network before a task by a :class:`GrowthSchedule`, function-preserving.

    ``trigger="unknown"`` grows only when the open-world plugin recognized an unknown class, ``"always"`` before
    every task after the first, ``"never"`` not at all.
    """

    name = "growth"

    def __init__(self, schedule: GrowthSchedule, trigger: str = "unknown", seed: int = 0) -> None:
        self.schedule, self.trigger, self.seed = schedule, trigger, seed

    def before_task(self, trainer: CollectiveTrainer, t: int) -> None:
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


class EWCPlugin(Plugin):
    """Elastic weight consolidation across tasks; its anchors and Fisher follow every growth step."""

    name = "ewc"

    def __init__(self, ewc: EWC, fisher_samples: int = 200, seed: int = 0) -> None:
        self.ewc, self.fisher_samples, self.seed = ewc, fisher_samples, seed

    def after_growth(self, trainer: CollectiveTrainer, plan: Any) -> None:
        self.ewc.on_growth(plan)

    def loss(self, trainer: CollectiveTrainer, batch: Batch) -> torch.Tensor:
        return self.ewc.penalty(trainer.network)

    def penalty_grads(self, trainer: CollectiveTrainer, names: list[str]) -> dict[str, torch.Tensor] | None:
        """The penalty's own gradient, so gradient statistics can measure the task's gradient alone."""
        return self.ewc.penalty_grads(trainer.network, names=names) if self.ewc.active else None

    def after_task(self, trainer: CollectiveTrainer, t: int, result: dict[str, Any]) -> None:
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

    def load_state_dict(self, state: dict[str, Any], trainer: CollectiveTrainer) -> None:
        self.ewc.load_state_dict(state)
        self.ewc.to(trainer.device)


class ReplayPlugin(Plugin):
    """A small exemplar memory: ``per_class`` images of every finished class replayed with later tasks."""

    name = "memory"

    def __init__(self, per_class: int, seed: int = 0) -> None:
        self.memory, self.seed = ExemplarMemory(per_class), seed

    def train_indices(self, trainer: CollectiveTrainer, t: int, indices: torch.Tensor) -> torch.Tensor:
        replay = self.memory.indices(exclude_labels=set(trainer.stream[t].labels))
        return torch.cat([indices, replay]) if len(replay) else indices

    def after_task(self, trainer: CollectiveTrainer, t: int, result: dict[str, Any]) -> None:
        exp = trainer.stream[t]
        self.memory.add(exp.train_indices, trainer.stream.targets(exp.train_indices),
                        generator(derive_seed(self.seed, "memory", t)))
        result["memory"] = self.memory.summary()

    def report(self, trainer: CollectiveTrainer, report: dict[str, Any]) -> None:
        report["memory"] = self.memory.summary()

    def state_dict(self) -> dict[str, Any]:
        return {"memory": json.dumps(self.memory.state_dict())}

    def load_state_dict(self, state: dict[str, Any], trainer: CollectiveTrainer) -> None:
        self.memory.load_state_dict(json.loads(state["memory"]))


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

    def before_epochs(self, trainer: CollectiveTrainer, t: int) -> None:
        self.teacher = _frozen(copy.deepcopy(trainer.network)) if t > 0 and self.weight > 0 else None

    def loss(self, trainer: CollectiveTrainer, batch: Batch) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        old = torch.tensor(trainer.seen_labels(batch.t - 1), device=trainer.device)
        temp = self.temperature
        with torch.no_grad():
            target = F.softmax(self.teacher(batch.x).float()[:, old] / temp, dim=1)
        student = F.log_softmax(batch.logits_all.float()[:, old] / temp, dim=1)
        return self.weight * (F.kl_div(student, target, reduction="batchmean") * temp * temp)

    def after_task(self, trainer: CollectiveTrainer, t: int, result: dict[str, Any]) -> None:
        self.teacher = None

    def state_dict(self) -> dict[str, Any] | None:
        if self.teacher is None:
            return None
        return {"config": json.dumps(self.teacher.config()),
                "weights": {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any], trainer: CollectiveTrainer) -> None:
        from learngene.models import model_from_config

        teacher = model_from_config(json.loads(state["config"]))
        teacher.load_state_dict(state["weights"])
        self.teacher = _frozen(teacher.to(trainer.device))  # resumed mid-task: the network at the task's start


class RecorderPlugin(Plugin):
    """Per-layer gradient statistics on the task's gradient (the EWC pull towards the old anchor taken out)."""

    name = "recorder"

    def __init__(self, recorder: GradientRecorder) -> None:
        self.recorder = recorder

    def after_growth(self, trainer: CollectiveTrainer, plan: Any) -> None:
        self.recorder.on_growth(plan)  # split units keep a statistic comparable with their source's

    def before_epochs(self, trainer: CollectiveTrainer, t: int) -> None:
        self.recorder.attach(trainer.network)

    def after_backward(self, trainer: CollectiveTrainer, batch: Batch) -> None:
        exclude = None
        for p in trainer.plugins:
            grads = getattr(p, "penalty_grads", None)
            if grads is not None:
                exclude = grads(trainer, self.recorder.param_names)
        self.recorder.after_backward(exclude=exclude)

    def after_epoch(self, trainer: CollectiveTrainer, t: int, epoch: int, row: dict[str, Any]) -> None:
        # gradients were all-reduced by DDP before the recorder saw them, so its statistics agree across ranks
        stats = self.recorder.end_epoch(t, epoch)
        if stats:
            row["mean_grad_fraction"] = float(sum(s["fraction"] for s in stats.values()) / len(stats))

    def state_dict(self) -> dict[str, Any]:
        return self.recorder.state_dict()

    def load_state_dict(self, state: dict[str, Any], trainer: CollectiveTrainer) -> None:
        self.recorder.load_state_dict(state)
        self.recorder.attach(trainer.network)


class FaultPlugin(Plugin):
    """Kill the process at a named point when ``LEARNGENE_KILL_AT=point[:n]`` is set (crash/resume tests)."""

    name = "faults"
    order = 90  # after the others' work, before the checkpoint

    def after_growth(self, trainer: CollectiveTrainer, plan: Any) -> None:
        maybe_kill("growth")

    def after_backward(self, trainer: CollectiveTrainer, batch: Batch) -> None:
        maybe_kill("batch")

    def on_task_end(self, trainer: CollectiveTrainer, t: int) -> None:
        maybe_kill("task_end")


class CheckpointPlugin(Plugin):
    """Save the whole run (network, optimizer, every plugin's state) every ``every`` epochs and after each task.

    It writes into the trainer's ``ckpt_dir`` (set by ``fit``), on the main process only.
    """

    name = "checkpoint"
    order = 100  # last: it saves what the other plugins did

    def __init__(self, every: int = 1) -> None:
        self.every = every

    def on_epoch_end(self, trainer: CollectiveTrainer, t: int, epoch: int) -> None:
        if (epoch + 1) % self.every == 0 and epoch + 1 < trainer.epochs:
            self._save(trainer, t, epoch + 1)

    def on_task_end(self, trainer: CollectiveTrainer, t: int) -> None:
        self._save(trainer, t + 1, 0)

    def _save(self, trainer: CollectiveTrainer, task: int, epoch: int) -> None:
        from learngene.checkpoint import save_checkpoint

        if trainer.ckpt_dir is not None and trainer.dist.is_main:
            path = save_checkpoint(trainer.ckpt_dir, trainer.state_dict(), task=task, epoch=epoch)
            log.debug("checkpoint %s", path)


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

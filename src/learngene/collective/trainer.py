"""The collective trainer: a plain ``nn.Module`` learns a task stream; everything else is a plugin.

The trainer owns only what every continual learner needs: batches of the stream's images, the optimizer (built
by a factory at the start of every task, so it learns about parameters added by growth), the cross-entropy
step with AMP and a non-finite guard, new head units for new classes, the accuracy matrices and the
checkpointable state. Recognizing unknown classes, growth, EWC, replay, distillation, gradient statistics,
checkpoints and fault injection are plugins (:mod:`learngene.collective.plugins.base` documents the lifecycle);
:func:`learngene.collective.learner.from_config` assembles the paper's learner from a config.

The data order, augmentation and dropout of an epoch depend only on (seed, task, epoch), drawn inside
:func:`~learngene.runtime.seeded` so the caller's global RNG is left as it was, and a resumed run repeats
exactly what the killed one would have done.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from learngene import __version__
from learngene.collective.batches import Batches
from learngene.collective.metrics import AccuracyMatrix
from learngene.collective.plugins.base import Batch, Plugin
from learngene.data import TaskStream
from learngene.data.transforms import BatchAugment
from learngene.distributed import SINGLE, DistInfo, all_reduce_sum, all_true, broadcast_buffers_
from learngene.errors import CheckpointError, ConfigError, NonFiniteError
from learngene.models.growth import plan_expand_classes
from learngene.models.width import effective_widths, width_report
from learngene.runtime import (
    autocast,
    derive_seed,
    generator,
    grad_scaler,
    machine_info,
    progress_bar,
    seeded,
)

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
CHECKPOINT_FORMAT = "learngene-checkpoint/v2"


def sgd(lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4) -> OptimizerFactory:
    """The default optimizer factory: SGD with momentum (the paper's optimizer)."""

    def make(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    return make


class CollectiveTrainer:
    """Trains ``network`` (an ``nn.Module`` with ``num_classes``) on a :class:`TaskStream`, task after task.

    ``optimizer`` is a factory ``params -> Optimizer`` called at the start of every task; ``plugins`` extend
    every step (see :mod:`learngene.collective.plugins`). ``loss_scope="task"`` scores the current task's
    classes only, ``"all"`` every class seen so far. ``input_spec`` (normalization) defaults to the statistics
    of the stream's source classes.
    """

    def __init__(
        self,
        network: nn.Module,
        stream: TaskStream,
        *,
        input_spec: dict[str, Any] | None = None,
        plugins: Sequence[Plugin] = (),
        optimizer: OptimizerFactory | None = None,
        epochs: int = 10,
        batch_size: int = 64,
        loss_scope: str = "task",
        augment: BatchAugment | None = None,
        seed: int = 0,
        amp: bool = False,
        channels_last: bool = False,
        on_nonfinite: str = "stop",
        device: torch.device | str = "cpu",
        dist: DistInfo = SINGLE,
        config: dict[str, Any] | None = None,
    ):
        if loss_scope not in ("task", "all"):
            raise ConfigError(f"loss_scope must be 'task' or 'all', got {loss_scope!r}")
        if on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
        if epochs < 1 or batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
        self.device = torch.device(device)
        if amp and self.device.type != "cuda":
            raise ConfigError("train.amp = true needs a CUDA device here; set train.amp = false or use --device cuda")
        if not isinstance(network, nn.Module) or not hasattr(network, "num_classes"):
            raise ConfigError(
                f"the collective network must be an nn.Module with a num_classes attribute, got {type(network).__name__}"
            )
        self.network = network.to(self.device)
        self.stream = stream
        self.data = stream.data
        # normalization from the source classes only, unless given
        self.spec = input_spec if input_spec is not None else stream.data.input_spec(stream.split.source)
        self.dist = dist
        self.plugins = sorted(plugins, key=lambda p: p.order)  # stable: ties keep the given order
        names = [p.name for p in self.plugins]
        if len(set(names)) != len(names):
            raise ConfigError(f"plugin names must be unique (they key the checkpoint), got {names}")
        self.optimizer_factory = optimizer or sgd()
        self.epochs, self.batch_size, self.loss_scope = epochs, batch_size, loss_scope
        self.augment, self.seed, self.amp = augment, seed, amp
        self.channels_last, self.on_nonfinite = channels_last, on_nonfinite
        self.config = config  # what the run was started with: a resume must match it
        self.batches = Batches(self.data, self.spec, self.device, channels_last)
        n = len(stream)
        self.acc_task = AccuracyMatrix(n)  # task-aware: argmax over the task's own classes
        self.acc_class = AccuracyMatrix(n)  # class-incremental: argmax over every class seen so far
        self.tasks: list[dict[str, Any]] = []
        self.current: dict[str, Any] = {}  # the record of the task being learned (plugins read and add)
        self.position = {"task": 0, "epoch": 0}  # next thing to do
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler = grad_scaler(self.device, amp)
        self._ddp: nn.Module | None = None
        self.ckpt_dir: Path | None = None
        self._apply_layout()

    def plugin(self, name: str) -> Plugin | None:
        """The plugin called ``name``, or None."""
        return next((p for p in self.plugins if p.name == name), None)

    def _call(self, hook: str, *args: Any) -> None:
        for p in self.plugins:
            getattr(p, hook)(self, *args)

    # ------------------------------------------------------------------ network bookkeeping
    @property
    def trainable(self) -> nn.Module:
        """The module to run forward/backward through: a DDP wrapper under torchrun, rebuilt after each growth."""
        if not self.dist.enabled:
            return self.network
        if self._ddp is None or self._ddp.module is not self.network:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.network, device_ids=ids)
        return self._ddp

    def apply_growth(self, plan: Any) -> None:
        """Apply a function-preserving plan to the network and tell every plugin (``after_growth``)."""
        plan.apply(self.network)
        self._call("after_growth", plan)

    def network_changed(self) -> None:
        """After growth: parameters moved to the device, the memory layout and the DDP wrapper renewed."""
        self.network.to(self.device)
        self._apply_layout()
        self._ddp = None  # growth replaced modules and parameters: the old DDP wrapper (and its buckets) is stale

    def _apply_layout(self) -> None:
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)

    def seen_labels(self, upto: int) -> list[int]:
        labels: set[int] = set()
        for exp in self.stream.experiences[: upto + 1]:
            labels.update(exp.labels)
        return sorted(labels)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def kept_checkpoint(self) -> str:
        from learngene.checkpoint import has_checkpoint

        if self.ckpt_dir is not None and has_checkpoint(self.ckpt_dir):
            return f"The last good checkpoint is kept in {self.ckpt_dir}."
        return "No checkpoint was written yet."

    # ------------------------------------------------------------------ one task
    def start_task(self, t: int) -> None:
        exp = self.stream[t]
        self.current = {"task": t, "recognition": None, "growth": []}
        self._call("before_task", t)
        n_seen = len(self.seen_labels(t))
        if n_seen > self.network.num_classes:
            if not hasattr(self.network, "expand_classes"):
                raise ConfigError(
                    f"task {t + 1} brings the classes seen to {n_seen} but {type(self.network).__name__} has "
                    f"{self.network.num_classes} outputs and no expand_classes(); build it with num_classes >= "
                    f"{len(self.stream.split.source)} (every source class) or use an expandable model"
                )
            self.apply_growth(plan_expand_classes(self.network, n_seen, generator(derive_seed(self.seed, "classes", t))))
            self.network_changed()
        self.optimizer = self.optimizer_factory(self.network.parameters())
        self.tasks.append(
            {
                "task": t,
                "classes": list(exp.classes),
                "labels": list(exp.labels),
                "new_classes": list(exp.new_classes),
                "recognition": self.current["recognition"],
                "growth": self.current["growth"],
                "widths": list(getattr(self.network, "widths", [])),
                "params": self.num_params(),
                "epochs": [],
            }
        )
        self._call("before_epochs", t)

    def train_indices(self, t: int) -> torch.Tensor:
        idx = self.stream[t].train_indices
        for p in self.plugins:
            idx = p.train_indices(self, t, idx)
        return idx

    def train_epoch(self, t: int, epoch: int) -> dict[str, float]:
        seed = derive_seed(self.seed, "epoch", t, epoch)
        with seeded(seed, self.device):  # dropout draws depend only on (seed, task, epoch)
            return self._train_epoch(t, epoch, seed)

    def _train_epoch(self, t: int, epoch: int, seed: int) -> dict[str, float]:
        exp = self.stream[t]
        gen = generator(seed)
        task_labels = torch.tensor(exp.labels, device=self.device)
        remap = torch.full((max(self.network.num_classes, max(exp.labels) + 1),), -1, dtype=torch.long)
        remap[torch.tensor(exp.labels)] = torch.arange(len(exp.labels))
        remap = remap.to(self.device)
        model = self.trainable
        model.train()
        total, correct, loss_sum, skipped = 0, 0, 0.0, 0
        assert self.optimizer is not None
        self._call("before_epoch", t, epoch)
        train_idx = self.train_indices(t)
        if self.dist.enabled:
            # every rank takes its DistributedSampler shard of the same seeded order; the global batch stays
            # batch_size (split across ranks), so the averaged gradient is that of one big batch
            from torch.utils.data import DistributedSampler

            sampler = DistributedSampler(range(len(train_idx)), num_replicas=self.dist.world_size,
                                         rank=self.dist.rank, shuffle=True, seed=seed % (2**31))
            local = train_idx[torch.tensor(list(sampler), dtype=torch.long)]
            per_rank = max(1, math.ceil(self.batch_size / self.dist.world_size))
            batches = self.batches.iterate(local, per_rank, None, self.augment, aug_gen=gen)
        else:
            batches = self.batches.iterate(train_idx, self.batch_size, gen, self.augment)
        for b, (idx, x) in enumerate(batches):
            y = self.stream.targets(idx).to(self.device, non_blocking=True)
            batch = Batch(t=t, epoch=epoch, index=b, indices=idx, x=x, y=y)
            with autocast(self.device, self.amp):
                logits = logits_all = model(x)
                if self.loss_scope == "task":
                    logits = logits[:, task_labels]
                    y_used = remap[y]
                else:
                    y_used = y
                batch.logits, batch.logits_all, batch.y = logits, logits_all, y_used
                ce = F.cross_entropy(logits.float(), y_used)
                loss = ce
                for p in self.plugins:
                    term = p.loss(self, batch)
                    if term is not None:
                        loss = loss + term
            batch.loss = loss
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            grads = [p.grad for p in self.network.parameters() if p.grad is not None]
            gnorm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else loss.detach()
            loss_ok = bool(torch.isfinite(loss.detach()))
            if self.scaler.is_enabled() and all_true(self.dist, loss_ok, self.device) and not all_true(
                    self.dist, bool(torch.isfinite(gnorm)), self.device):
                # an fp16 gradient overflow: GradScaler skips this step and lowers its scale, as it is built to
                self.scaler.step(self.optimizer)
                self.scaler.update()
                skipped += 1
                continue
            finite = all_true(self.dist, bool(loss_ok & bool(torch.isfinite(gnorm))), self.device)
            if not finite:
                where = f"task {t + 1}/{len(self.stream)}, epoch {epoch + 1}, batch {b + 1}"  # counted from 1
                what = "loss" if not torch.isfinite(loss.detach()) else "gradient"
                if self.on_nonfinite == "stop":
                    raise NonFiniteError(
                        f"non-finite {what} ({float(loss.detach())}) at {where}; the run stopped. "
                        f"{self.kept_checkpoint()} Try a lower learning rate (train.lr), a smaller "
                        "train.ewc_lambda, or train.on_nonfinite = 'skip' to skip such batches, and start again "
                        "with --overwrite."
                    )
                skipped += 1
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler.is_enabled():
                    self.scaler.update()  # unscale_ was called: the scaler must close this step before the next
                continue
            self._call("after_backward", batch)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += float(ce.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == y_used).sum())
            total += len(idx)
        broadcast_buffers_(self.dist, self.network)  # one model on every rank from here on (see the function)
        loss_sum, correct, total, skipped = all_reduce_sum(
            self.dist, [loss_sum, float(correct), float(total), float(skipped)], self.device)
        total, correct, skipped = int(total), int(correct), int(skipped)
        row: dict[str, Any] = {
            "epoch": epoch,
            "loss": loss_sum / max(total, 1),
            "train_acc": correct / max(total, 1),
            "skipped_batches": skipped,
            "images": total,
        }
        self._call("after_epoch", t, epoch, row)
        self.tasks[-1]["epochs"].append(row)
        return row

    @torch.no_grad()
    def evaluate(self, t: int) -> dict[str, Any]:
        """Fill row t of the accuracy matrices (task-aware and class-incremental) on every task seen so far."""
        seen_t = torch.tensor(self.seen_labels(t), device=self.device)
        for j in range(t + 1):
            ej = self.stream[j]
            logits = self.batches.logits(self.network, ej.test_indices)
            y = self.stream.targets(ej.test_indices).to(self.device)
            lab = torch.tensor(ej.labels, device=self.device)
            pred_task = lab[logits[:, lab].argmax(1)]
            pred_all = seen_t[logits[:, seen_t].argmax(1)]
            self.acc_task.set(t, j, float((pred_task == y).float().mean()))
            self.acc_class.set(t, j, float((pred_all == y).float().mean()))
        return {
            "acc_task_aware": self.acc_task.row(t)[: t + 1],
            "acc_class_incremental": self.acc_class.row(t)[: t + 1],
            "average_accuracy": self.acc_task.average_accuracy(t),
            "average_accuracy_class_incremental": self.acc_class.average_accuracy(t),
            "forgetting": self.acc_task.forgetting(t),
            "forgetting_class_incremental": self.acc_class.forgetting(t),
        }

    def end_task(self, t: int) -> dict[str, Any]:
        result = self.evaluate(t)
        if hasattr(self.network, "features"):  # distinct channels of the conv stack: copies counted once
            result["effective_widths"] = effective_widths(self.network)
        self._call("after_task", t, result)
        return result

    # ------------------------------------------------------------------ state for checkpoints
    def state_dict(self) -> dict[str, Any]:
        plugins = {}
        for p in self.plugins:
            state = p.state_dict()
            if state is not None:
                plugins[p.name] = state
        return {
            "format": CHECKPOINT_FORMAT,
            "version": __version__,
            "config": json.dumps(self.config, sort_keys=True),
            "position": dict(self.position),
            # the shape record rebuilds a grown network; a model without config() keeps its own architecture
            "network_config": json.dumps(self.network.config() if hasattr(self.network, "config") else None),
            "network": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scaler": self.scaler.state_dict(),
            "plugins": plugins,
            "acc_task": json.dumps(self.acc_task.to_dict()),
            "acc_class": json.dumps(self.acc_class.to_dict()),
            "tasks": json.dumps(self.tasks),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from learngene.models import model_from_config

        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                "this checkpoint was not written by this version of learngene's collective trainer "
                f"(format {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r}); start the run again without "
                "--resume (with --overwrite to reuse its directory)"
            )
        if json.loads(state["config"]) != json.loads(json.dumps(self.config, sort_keys=True)):
            raise CheckpointError(
                "the checkpoint was written with a different configuration; resume with the same --preset/--config "
                "and --set overrides, or start a new run in another --out directory"
            )
        shape = json.loads(state["network_config"])
        if shape is not None:
            self.network = model_from_config(shape)
        self.network.load_state_dict(state["network"])
        self.network_changed()
        saved = state.get("plugins", {})
        for p in self.plugins:
            if p.name in saved:
                p.load_state_dict(saved[p.name], self)
        self.optimizer = self.optimizer_factory(self.network.parameters())
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.acc_task = AccuracyMatrix.from_dict(json.loads(state["acc_task"]))
        self.acc_class = AccuracyMatrix.from_dict(json.loads(state["acc_class"]))
        self.tasks = json.loads(state["tasks"])
        self.position = dict(state["position"])

    # ------------------------------------------------------------------ the loop
    def fit(
        self,
        ckpt_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        on_epoch: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Learn every remaining task of the stream; returns the collective report.

        ``ckpt_dir`` is where a :class:`~learngene.collective.learner.CheckpointPlugin` writes (and ``resume``
        reads) the run's checkpoints.
        """
        from learngene.checkpoint import has_checkpoint, load_latest

        self.ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else None
        if resume:
            if ckpt_dir is None or not has_checkpoint(ckpt_dir):
                raise CheckpointError(f"--resume given but no checkpoint found in {ckpt_dir}; start without --resume")
            self.load_state_dict(load_latest(ckpt_dir))
            self._call("after_resume", self.position["task"], self.position["epoch"])
        n = len(self.stream)
        while self.position["task"] < n:
            t, start_epoch = self.position["task"], self.position["epoch"]
            if start_epoch == 0 and (not self.tasks or self.tasks[-1]["task"] != t):
                self.start_task(t)
            bar = progress_bar(range(start_epoch, self.epochs), desc=f"task {t + 1}/{n}",
                               enabled=progress and self.dist.is_main)
            tick = time.perf_counter()
            for epoch in bar:
                row = self.train_epoch(t, epoch)
                bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_acc']:.2f}")
                self.position = {"task": t, "epoch": epoch + 1}
                self._call("after_epoch_done", t, epoch)
                if on_epoch is not None:
                    on_epoch(t, epoch)
            bar.close()
            result = self.end_task(t)
            self.tasks[-1].update(result)
            self.tasks[-1]["train_seconds"] = self.tasks[-1].get("train_seconds", 0.0) + time.perf_counter() - tick
            self.position = {"task": t + 1, "epoch": 0}
            self._call("after_task_done", t)
            if self.dist.is_main:
                ow = result.get("open_world", {})
                msg = (f"task {t + 1}/{n}: avg acc {result['average_accuracy']:.3f} "
                       f"(class-IL {result['average_accuracy_class_incremental']:.3f}), forgetting "
                       f"{result['forgetting']:.3f}, open-world AUROC {ow.get('auroc', math.nan):.3f}, "
                       f"params {self.num_params():,}")
                log.info(msg)
        return self.report()

    def report(self) -> dict[str, Any]:
        last = self.tasks[-1] if self.tasks else {}
        out = {
            "version": __version__,
            "seed": self.seed,
            "config": self.config,
            "machine": {**machine_info(self.device), "world_size": self.dist.world_size},
            "split": self.stream.split.to_dict(),
            "input_spec": self.spec,
            "n_tasks": len(self.stream),
            "tasks": self.tasks,
            "accuracy_matrix_task_aware": self.acc_task.to_dict(),
            "accuracy_matrix_class_incremental": self.acc_class.to_dict(),
            "forgetting_curve": [t.get("forgetting") for t in self.tasks],
            "average_accuracy_curve": [t.get("average_accuracy") for t in self.tasks],
            "open_world": last.get("open_world"),
            "images_seen": sum(r.get("images", 0) for task in self.tasks for r in task["epochs"]),
            "final": {
                "average_accuracy": last.get("average_accuracy"),
                "average_accuracy_class_incremental": last.get("average_accuracy_class_incremental"),
                "forgetting": last.get("forgetting"),
                **(width_report(self.network) if hasattr(self.network, "widths") else
                   {"params": self.num_params()}),
            },
        }
        self._call("report", out)
        return out

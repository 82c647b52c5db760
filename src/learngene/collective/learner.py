"""The collective model learning a task stream: recognize the unknown, grow, train with EWC, record gradients.

One task at a time:

1. *Recognize*: before seeing labels, score the new task's images with the current head; classes whose
   images mostly fall below the known-class threshold (set at ``openset.tpr`` of held-out known images)
   are reported as unknown. Unknown classes are what triggers growth (``growth.trigger = "unknown"``).
2. *Grow*: apply the growth schedule's function-preserving plans and replay them on the EWC anchors;
   add head units for the new classes; build a fresh optimizer (it must learn about the new parameters).
3. *Train*: SGD on the task's images with the EWC penalty, recording per-layer gradient statistics.
4. *Consolidate and evaluate*: update the Fisher, fill the accuracy matrix, measure open-world AUROC.

Checkpoints are written after every ``train.checkpoint_every`` epochs and after every task; the data order,
augmentation and dropout of an epoch depend only on (seed, task, epoch), so a resumed run repeats exactly
what the killed one would have done.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from learngene import __version__
from learngene.checkpoint import has_checkpoint, load_latest, save_checkpoint
from learngene.collective.ewc import EWC
from learngene.collective.memory import ExemplarMemory
from learngene.collective.metrics import AccuracyMatrix
from learngene.collective.openset import evaluate_open_set, flag_unknown_classes, knownness, threshold_at_tpr
from learngene.collective.recorder import GradientRecorder
from learngene.config import Config, config_from_dict
from learngene.data import ImageSet, TaskStream
from learngene.data.transforms import BatchAugment, normalize
from learngene.distributed import SINGLE, DistInfo, all_reduce_sum, all_true, weighted_mean_
from learngene.errors import CheckpointError, ConfigError, NonFiniteError
from learngene.faults import maybe_kill
from learngene.models import create_model, model_from_config
from learngene.models.growth import GrowthPlan, GrowthSchedule, plan_expand_classes
from learngene.models.width import effective_widths, width_report
from learngene.runtime import autocast, derive_seed, generator, grad_scaler, machine_info

Progress = Callable[[str], None]


def _frozen(module: nn.Module) -> nn.Module:
    """A module in eval mode whose parameters take no gradient (the distillation teacher)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class Batches:
    """Feeds normalized (optionally augmented) batches from an in-memory ImageSet to a device."""

    def __init__(
        self, data: ImageSet, spec: dict[str, Any], device: torch.device, channels_last: bool = False
    ):
        self.data = data
        self.mean = spec["mean"]
        self.std = spec["std"]
        self.device = device
        self.channels_last = channels_last

    def prepare(
        self, idx: torch.Tensor, augment: BatchAugment | None = None, gen: torch.Generator | None = None
    ):
        x = self.data.images[idx]
        if augment is not None:
            x = augment(x, generator=gen)
        x = normalize(x.to(self.device, non_blocking=True), self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def iterate(
        self,
        idx: torch.Tensor,
        batch_size: int,
        shuffle_gen: torch.Generator | None = None,
        augment: BatchAugment | None = None,
        aug_gen: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = idx[torch.randperm(len(idx), generator=shuffle_gen)] if shuffle_gen is not None else idx
        aug_gen = aug_gen if aug_gen is not None else shuffle_gen
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            yield chunk, self.prepare(chunk, augment, aug_gen)

    @torch.no_grad()
    def logits(
        self, model: nn.Module, idx: torch.Tensor, batch_size: int = 256, amp: bool = False
    ) -> torch.Tensor:
        model.eval()
        outs = []
        for _, x in self.iterate(idx, batch_size):
            with autocast(self.device, amp):
                outs.append(model(x).float())
        if not outs:
            return torch.empty(0, model.num_classes, device=self.device)
        return torch.cat(outs)


class CollectiveModel:
    """An expandable network that learns a stream of tasks, grows for unknown classes and remembers with EWC."""

    def __init__(
        self,
        cfg: Config,
        stream: TaskStream,
        spec: dict[str, Any],
        device: torch.device | str = "cpu",
        dist: DistInfo = SINGLE,
    ):
        self.cfg = cfg
        self.dist = dist
        self.stream = stream
        self.data = stream.data
        self.spec = spec
        self.device = torch.device(device)
        if cfg.train.amp and self.device.type != "cuda":
            raise ConfigError(
                "train.amp = true needs a CUDA device here; set train.amp = false or use --device cuda"
            )
        first_ways = len(stream[0].labels)
        torch.manual_seed(derive_seed(cfg.seed, "init"))  # the initial weights depend on the seed only
        self.network = create_model(
            cfg.model.name,
            in_channels=self.data.channels,
            image_size=self.data.image_size,
            num_classes=first_ways,
            hidden=cfg.model.hidden,
            dropout=cfg.model.dropout,
        ).to(self.device)
        self.ewc = EWC(cfg.train.ewc_lambda, decay=cfg.train.ewc_decay, normalize=True)
        self.recorder = GradientRecorder(threshold=cfg.record.threshold, signed=cfg.record.signed)
        self.schedule = GrowthSchedule(
            mode=cfg.growth.mode,
            step=cfg.growth.step,
            max_width=cfg.growth.max_width,
            deepen_every=cfg.growth.deepen_every,
            noise=cfg.growth.noise,
        )
        self.memory = ExemplarMemory(cfg.train.memory_per_class)
        self.teacher: nn.Module | None = None  # the model as it was before the current task (distillation)
        self.batches = Batches(self.data, spec, self.device, cfg.train.channels_last)
        self.augment = BatchAugment(cfg.data.augment)
        n = len(stream)
        self.acc_task = AccuracyMatrix(n)  # task-aware: argmax over the task's own classes
        self.acc_class = AccuracyMatrix(n)  # class-incremental: argmax over every class seen so far
        self.tasks: list[dict[str, Any]] = []
        self.position = {"task": 0, "epoch": 0}  # next thing to do
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler = grad_scaler(self.device, cfg.train.amp)
        self._ddp: nn.Module | None = None
        self._ckpt_dir: Path | None = None

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

    def _kept(self) -> str:
        if self._ckpt_dir is not None and has_checkpoint(self._ckpt_dir):
            return f"The last good checkpoint is kept in {self._ckpt_dir}."
        return "No checkpoint was written yet."

    def _invalidate_wrapper(self) -> None:
        # growth replaced modules and parameters: the old DDP wrapper (and its buckets) is stale
        self._ddp = None

    # ------------------------------------------------------------------ building blocks
    def _make_optimizer(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        return torch.optim.SGD(
            self.network.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
        )

    def _apply_layout(self) -> None:
        if self.cfg.train.channels_last:
            self.network.to(memory_format=torch.channels_last)

    def seen_labels(self, upto: int) -> list[int]:
        labels: set[int] = set()
        for exp in self.stream.experiences[: upto + 1]:
            labels.update(exp.labels)
        return sorted(labels)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    # ------------------------------------------------------------------ step 1: recognize unknown classes
    def recognize(self, t: int) -> dict[str, Any]:
        """Which classes of task t does the current model (trained on tasks < t) take for unknown?"""
        exp = self.stream[t]
        cfgo = self.cfg.openset
        known_idx = self.stream.seen_test_indices(t - 1)
        known = knownness(self.batches.logits(self.network, known_idx), cfgo.method)
        thr = threshold_at_tpr(known, cfgo.tpr)
        train_targets = self.stream.targets(exp.train_indices)
        scores = knownness(self.batches.logits(self.network, exp.train_indices), cfgo.method)
        by_class = {
            c: scores[train_targets.to(scores.device) == lab] for c, lab in zip(exp.classes, exp.labels)
        }
        flags = flag_unknown_classes(by_class, thr, min_fraction=cfgo.class_fraction)
        truth = {c: c in exp.new_classes for c in exp.classes}
        correct = sum(flags[c] == truth[c] for c in exp.classes)
        return {
            "threshold": float(thr),
            "recognized_unknown": [c for c in exp.classes if flags[c]],
            "truly_new": list(exp.new_classes),
            "recognition_accuracy": correct / len(exp.classes),
            "fraction_below_threshold": {c: float((v < thr).float().mean()) for c, v in by_class.items()},
        }

    # ------------------------------------------------------------------ step 2: grow
    def grow(self, t: int, recognized: dict[str, Any] | None) -> list[dict[str, Any]]:
        trigger = self.cfg.growth.trigger
        if t == 0 or trigger == "never":
            return []
        if trigger == "unknown" and recognized is not None and not recognized["recognized_unknown"]:
            return []
        gen = generator(derive_seed(self.cfg.seed, "growth", t))
        plans: list[GrowthPlan] = self.schedule.plans_for(self.network, t, generator=gen)
        for plan in plans:
            plan.apply(self.network)
            maybe_kill("growth")
            self.ewc.on_growth(plan)
            self.recorder.on_growth(plan)  # split units keep a statistic comparable with their source's
        self.network.to(self.device)
        self._apply_layout()
        self.recorder.attach(self.network)
        self._invalidate_wrapper()
        return [plan.to_dict() for plan in plans]

    def start_task(self, t: int) -> None:
        exp = self.stream[t]
        recognized = self.recognize(t) if t > 0 else None
        growth = self.grow(t, recognized)
        n_seen = len(self.seen_labels(t))
        if n_seen > self.network.num_classes:
            plan = plan_expand_classes(
                self.network, n_seen, generator(derive_seed(self.cfg.seed, "classes", t))
            )
            plan.apply(self.network)
            self.ewc.on_growth(plan)
            self.recorder.on_growth(plan)
            self.network.to(self.device)
            self._invalidate_wrapper()
        self.recorder.attach(self.network)
        self.optimizer = self._make_optimizer()
        self.teacher = self._snapshot_teacher(t)
        self.tasks.append(
            {
                "task": t,
                "classes": list(exp.classes),
                "labels": list(exp.labels),
                "new_classes": list(exp.new_classes),
                "recognition": recognized,
                "growth": growth,
                "widths": list(self.network.widths),
                "params": self.num_params(),
                "epochs": [],
            }
        )

    def _snapshot_teacher(self, t: int) -> nn.Module | None:
        """LwF: a frozen copy of the network as it starts task t (growth kept its function on old classes)."""
        if t == 0 or self.cfg.train.distill <= 0:
            return None
        return _frozen(copy.deepcopy(self.network))

    def train_indices(self, t: int) -> torch.Tensor:
        """Task t's training images plus the exemplars of earlier classes (replay), if there is a memory."""
        exp = self.stream[t]
        replay = self.memory.indices(exclude_labels=set(exp.labels))
        return torch.cat([exp.train_indices, replay]) if len(replay) else exp.train_indices

    def _distill_loss(self, logits: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
        """KL(teacher || student) on the old classes' logits at temperature T, scaled by T^2 (Hinton et al.)."""
        assert self.teacher is not None
        old = torch.tensor(self.seen_labels(t - 1), device=self.device)
        temp = self.cfg.train.distill_temperature
        with torch.no_grad():
            target = F.softmax(self.teacher(x).float()[:, old] / temp, dim=1)
        student = F.log_softmax(logits.float()[:, old] / temp, dim=1)
        return F.kl_div(student, target, reduction="batchmean") * temp * temp

    # ------------------------------------------------------------------ step 3: train
    def train_epoch(self, t: int, epoch: int) -> dict[str, float]:
        cfgt = self.cfg.train
        exp = self.stream[t]
        seed = derive_seed(self.cfg.seed, "epoch", t, epoch)
        torch.manual_seed(seed)  # dropout draws depend only on (seed, task, epoch)
        gen = generator(seed)
        task_labels = torch.tensor(exp.labels, device=self.device)
        remap = torch.full((max(self.network.num_classes, max(exp.labels) + 1),), -1, dtype=torch.long)
        remap[torch.tensor(exp.labels)] = torch.arange(len(exp.labels))
        remap = remap.to(self.device)
        model = self.trainable
        model.train()
        total, correct, loss_sum, skipped = 0, 0, 0.0, 0
        assert self.optimizer is not None
        train_idx = self.train_indices(t)
        if self.dist.enabled:
            # every rank takes its DistributedSampler shard of the same seeded order; the global batch stays
            # train.batch_size (split across ranks), so the averaged gradient is that of one big batch
            from torch.utils.data import DistributedSampler

            sampler = DistributedSampler(range(len(train_idx)), num_replicas=self.dist.world_size,
                                         rank=self.dist.rank, shuffle=True, seed=seed % (2**31))
            local = train_idx[torch.tensor(list(sampler), dtype=torch.long)]
            per_rank = max(1, math.ceil(cfgt.batch_size / self.dist.world_size))
            batches = self.batches.iterate(local, per_rank, None, self.augment, aug_gen=gen)
        else:
            batches = self.batches.iterate(train_idx, cfgt.batch_size, gen, self.augment)
        for b, (idx, x) in enumerate(batches):
            y = self.stream.targets(idx).to(self.device, non_blocking=True)
            with autocast(self.device, cfgt.amp):
                logits = logits_all = model(x)
                if cfgt.loss_scope == "task":
                    logits = logits[:, task_labels]
                    y_used = remap[y]
                else:
                    y_used = y
                ce = F.cross_entropy(logits.float(), y_used)
                loss = ce + self.ewc.penalty(self.network)
                if self.teacher is not None:
                    loss = loss + cfgt.distill * self._distill_loss(logits_all, x, t)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            grads = [p.grad for p in self.network.parameters() if p.grad is not None]
            gnorm = (
                torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else loss.detach()
            )
            finite = all_true(self.dist, bool(torch.isfinite(loss.detach()) & torch.isfinite(gnorm)), self.device)
            if not finite:
                where = f"task {t}, epoch {epoch}, batch {b}"
                what = "loss" if not torch.isfinite(loss.detach()) else "gradient"
                if cfgt.on_nonfinite == "stop":
                    raise NonFiniteError(
                        f"non-finite {what} ({float(loss.detach())}) at {where}; the run stopped. {self._kept()} "
                        f"Try a lower learning rate (train.lr = {cfgt.lr}), a smaller train.ewc_lambda, or "
                        "train.on_nonfinite = 'skip' to skip such batches, and start again with --overwrite."
                    )
                skipped += 1
                self.optimizer.zero_grad(set_to_none=True)
                continue
            # the statistic measures the task's gradient: the EWC pull towards the old anchor is taken out
            self.recorder.after_backward(
                exclude=self.ewc.penalty_grads(self.network, names=self.recorder.param_names)
                if self.ewc.active else None
            )
            maybe_kill("batch")
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += float(ce.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == y_used).sum())
            total += len(idx)
        # gradients were all-reduced by DDP before the recorder saw them, so its statistics agree across ranks
        stats = self.recorder.end_epoch(t, epoch)
        loss_sum, correct, total, skipped = all_reduce_sum(
            self.dist, [loss_sum, float(correct), float(total), float(skipped)], self.device)
        total, correct, skipped = int(total), int(correct), int(skipped)
        row = {
            "epoch": epoch,
            "loss": loss_sum / max(total, 1),
            "train_acc": correct / max(total, 1),
            "skipped_batches": skipped,
            "images": total,
        }
        if stats:
            row["mean_grad_fraction"] = float(sum(s["fraction"] for s in stats.values()) / len(stats))
        self.tasks[-1]["epochs"].append(row)
        return row

    # ------------------------------------------------------------------ step 4: consolidate + evaluate
    def end_task(self, t: int) -> dict[str, Any]:
        exp = self.stream[t]
        n = min(self.cfg.train.fisher_samples, len(exp.train_indices))
        gen = generator(derive_seed(self.cfg.seed, "fisher", t))
        pick = exp.train_indices[torch.randperm(len(exp.train_indices), generator=gen)[:n]]
        pick = pick[self.dist.rank :: self.dist.world_size]  # each rank its share; the Fisher is averaged below
        x = self.batches.prepare(pick)
        y = self.stream.targets(pick).to(self.device)
        self.ewc.consolidate(self.network, x, y, reduce=lambda f: weighted_mean_(self.dist, f, len(pick)))
        self.memory.add(exp.train_indices, self.stream.targets(exp.train_indices),
                        generator(derive_seed(self.cfg.seed, "memory", t)))
        self.teacher = None
        result = self.evaluate(t)
        result["effective_widths"] = effective_widths(self.network)
        result["memory"] = self.memory.summary()
        return result

    @torch.no_grad()
    def evaluate(self, t: int) -> dict[str, Any]:
        seen = self.seen_labels(t)
        seen_t = torch.tensor(seen, device=self.device)
        for j in range(t + 1):
            ej = self.stream[j]
            logits = self.batches.logits(self.network, ej.test_indices)
            y = self.stream.targets(ej.test_indices).to(self.device)
            lab = torch.tensor(ej.labels, device=self.device)
            pred_task = lab[logits[:, lab].argmax(1)]
            pred_all = seen_t[logits[:, seen_t].argmax(1)]
            self.acc_task.set(t, j, float((pred_task == y).float().mean()))
            self.acc_class.set(t, j, float((pred_all == y).float().mean()))
        known_logits = self.batches.logits(self.network, self.stream.seen_test_indices(t))[:, seen_t]
        result: dict[str, Any] = {
            "acc_task_aware": self.acc_task.row(t)[: t + 1],
            "acc_class_incremental": self.acc_class.row(t)[: t + 1],
            "average_accuracy": self.acc_task.average_accuracy(t),
            "average_accuracy_class_incremental": self.acc_class.average_accuracy(t),
            "forgetting": self.acc_task.forgetting(t),
            "forgetting_class_incremental": self.acc_class.forgetting(t),
        }
        ow = self.stream.open_world_test_indices
        if len(ow):
            unknown_logits = self.batches.logits(self.network, ow)[:, seen_t]
            result["open_world"] = evaluate_open_set(
                known_logits, unknown_logits, self.cfg.openset.method
            ).to_dict()
        return result

    # ------------------------------------------------------------------ state for checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "learngene-checkpoint/v1",
            "version": __version__,
            "config": json.dumps(self.cfg.to_dict(), sort_keys=True),
            "position": dict(self.position),
            "network_config": json.dumps(self.network.config()),
            "teacher_config": json.dumps(self.teacher.config() if self.teacher is not None else None),
            "network": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scaler": self.scaler.state_dict(),
            "ewc": self.ewc.state_dict(),
            "memory": json.dumps(self.memory.state_dict()),
            "teacher": (
                {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()}
                if self.teacher is not None else None
            ),
            "recorder": self.recorder.state_dict(),
            "acc_task": json.dumps(self.acc_task.to_dict()),
            "acc_class": json.dumps(self.acc_class.to_dict()),
            "tasks": json.dumps(self.tasks),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != "learngene-checkpoint/v1":
            raise CheckpointError("this checkpoint was not written by learngene's collective trainer")
        saved = config_from_dict(json.loads(state["config"]))
        if saved.to_dict() != self.cfg.to_dict():
            raise CheckpointError(
                "the checkpoint was written with a different configuration; resume with the same --preset/--config "
                "and --set overrides, or start a new run in another --out directory"
            )
        self.network = model_from_config(json.loads(state["network_config"]))
        self._invalidate_wrapper()
        self.network.load_state_dict(state["network"])
        self.network.to(self.device)
        self._apply_layout()
        self.recorder.load_state_dict(state["recorder"])
        self.recorder.attach(self.network)
        self.ewc.load_state_dict(state["ewc"])
        self.ewc.to(self.device)
        self.memory.load_state_dict(json.loads(state["memory"]))
        self.teacher = None
        if state.get("teacher") is not None:  # resumed mid-task: the teacher is the network at the task's start
            teacher = model_from_config(json.loads(state["teacher_config"]))
            teacher.load_state_dict(state["teacher"])
            self.teacher = _frozen(teacher.to(self.device))
        self.optimizer = self._make_optimizer()
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.acc_task = AccuracyMatrix.from_dict(json.loads(state["acc_task"]))
        self.acc_class = AccuracyMatrix.from_dict(json.loads(state["acc_class"]))
        self.tasks = json.loads(state["tasks"])
        self.position = dict(state["position"])

    # ------------------------------------------------------------------ the loop
    def learn(
        self,
        ckpt_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        on_epoch: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Learn every remaining task of the stream; returns the collective report."""
        from tqdm.auto import tqdm

        self._ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else None
        if resume:
            if ckpt_dir is None or not has_checkpoint(ckpt_dir):
                raise CheckpointError(
                    f"--resume given but no checkpoint found in {ckpt_dir}; start without --resume"
                )
            self.load_state_dict(load_latest(ckpt_dir))
        cfgt = self.cfg.train
        n = len(self.stream)
        while self.position["task"] < n:
            t, start_epoch = self.position["task"], self.position["epoch"]
            if start_epoch == 0 and (not self.tasks or self.tasks[-1]["task"] != t):
                self.start_task(t)
            bar = tqdm(
                range(start_epoch, cfgt.epochs),
                desc=f"task {t + 1}/{n}",
                disable=not (progress and self.dist.is_main),
                leave=False,
                dynamic_ncols=True,
            )
            tick = time.perf_counter()
            for epoch in bar:
                row = self.train_epoch(t, epoch)
                bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_acc']:.2f}")
                self.position = {"task": t, "epoch": epoch + 1}
                if (
                    ckpt_dir is not None
                    and self.dist.is_main
                    and (epoch + 1) % cfgt.checkpoint_every == 0
                    and epoch + 1 < cfgt.epochs
                ):
                    save_checkpoint(ckpt_dir, self.state_dict(), task=t, epoch=epoch + 1)
                if on_epoch is not None:
                    on_epoch(t, epoch)
            bar.close()
            result = self.end_task(t)
            maybe_kill("task_end")
            self.tasks[-1].update(result)
            self.tasks[-1]["train_seconds"] = (
                self.tasks[-1].get("train_seconds", 0.0) + time.perf_counter() - tick
            )
            self.position = {"task": t + 1, "epoch": 0}
            if ckpt_dir is not None and self.dist.is_main:
                save_checkpoint(ckpt_dir, self.state_dict(), task=t + 1, epoch=0)
            if progress and self.dist.is_main:
                ow = result.get("open_world", {})
                tqdm.write(
                    f"task {t + 1}/{n}: avg acc {result['average_accuracy']:.3f} "
                    f"(class-IL {result['average_accuracy_class_incremental']:.3f}), forgetting "
                    f"{result['forgetting']:.3f}, open-world AUROC {ow.get('auroc', math.nan):.3f}, "
                    f"params {self.num_params():,}"
                )
        return self.report()

    def report(self) -> dict[str, Any]:
        last = self.tasks[-1] if self.tasks else {}
        return {
            "version": __version__,
            "seed": self.cfg.seed,
            "config": self.cfg.to_dict(),
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
            "memory": self.memory.summary(),
            "images_seen": sum(r.get("images", 0) for task in self.tasks for r in task["epochs"]),
            "final": {
                "average_accuracy": last.get("average_accuracy"),
                "average_accuracy_class_incremental": last.get("average_accuracy_class_incremental"),
                "forgetting": last.get("forgetting"),
                **width_report(self.network),
            },
        }

"""Recognize unknown classes before each task; open-world AUROC on never-trained classes after it."""

from __future__ import annotations

from typing import Any

import torch

from learngene.collective.openset import evaluate_open_set, flag_unknown_classes, knownness, threshold_at_tpr
from learngene.collective.plugins.base import Plugin, Trainer

__all__ = ["OpenWorldPlugin"]


class OpenWorldPlugin(Plugin):
    """Recognize unknown classes before each task; measure open-world AUROC on never-trained classes after it."""

    name = "openset"

    def __init__(self, method: str = "msp", tpr: float = 0.95, class_fraction: float = 0.2) -> None:
        self.method, self.tpr, self.class_fraction = method, tpr, class_fraction

    def before_task(self, trainer: Trainer, t: int) -> None:
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
    def after_task(self, trainer: Trainer, t: int, result: dict[str, Any]) -> None:
        ow = trainer.stream.open_world_test_indices
        if not len(ow):
            return
        seen = torch.tensor(trainer.seen_labels(t), device=trainer.device)
        known = trainer.batches.logits(trainer.network, trainer.stream.seen_test_indices(t))[:, seen]
        unknown = trainer.batches.logits(trainer.network, ow)[:, seen]
        result["open_world"] = evaluate_open_set(known, unknown, self.method).to_dict()

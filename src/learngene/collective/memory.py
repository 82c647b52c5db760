"""A small exemplar memory: a few training images per class seen, replayed while later tasks are learned.

Why: with EWC alone the stream forgets most of what earlier tasks taught (a loss over every class seen collapses
without replay). Keeping ``per_class`` images of each class and mixing them into later tasks' epochs lets the
loss cover every class seen so far, which is what makes the collective model's features approach those of joint
training (``../shared/docs/MEASUREMENTS.md``: 5 exemplars per class close most of the gap on Omniglot).

Exemplars are drawn uniformly at random per class with a seeded generator (a strong, simple baseline; herding
brings little at a few images per class). The memory stores indices into the stream's image set, never copies.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from learngene.errors import CheckpointError


class ExemplarMemory:
    """``per_class`` training-image indices for every class the stream has shown so far."""

    def __init__(self, per_class: int) -> None:
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 0:
            raise ValueError(f"memory per_class must be an integer >= 0, got {per_class!r}")
        self.per_class = per_class
        self._by_label: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_label.values())

    @property
    def labels(self) -> list[int]:
        return sorted(self._by_label)

    def add(self, indices: Tensor, targets: Tensor, generator: torch.Generator | None = None) -> None:
        """Keep up to ``per_class`` of ``indices`` (image indices) for each label in ``targets`` not yet stored.

        A class met again in a later task keeps its first exemplars, so the memory never grows past
        ``per_class`` images per class.
        """
        if self.per_class == 0:
            return
        if indices.shape != targets.shape:
            raise ValueError(f"indices {tuple(indices.shape)} and targets {tuple(targets.shape)} must match")
        for lab in sorted(set(targets.tolist())):
            if lab in self._by_label:
                continue
            pool = indices[targets == lab]
            pick = torch.randperm(len(pool), generator=generator)[: self.per_class]
            self._by_label[int(lab)] = pool[pick.sort().values].clone()

    def indices(self, exclude_labels: set[int] | None = None) -> Tensor:
        """All stored image indices (classes in ``exclude_labels`` left out), in label order."""
        parts = [v for lab, v in sorted(self._by_label.items()) if not exclude_labels or lab not in exclude_labels]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)

    def state_dict(self) -> dict[str, Any]:
        return {"per_class": self.per_class, "by_label": {str(k): v.tolist() for k, v in self._by_label.items()}}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if int(d.get("per_class", -1)) != self.per_class:
            raise CheckpointError(
                f"the checkpoint's exemplar memory keeps {d.get('per_class')} images per class, the config "
                f"{self.per_class}; resume with the same train.memory_per_class"
            )
        self._by_label = {int(k): torch.tensor(v, dtype=torch.long) for k, v in d["by_label"].items()}

    def summary(self) -> dict[str, int]:
        return {"per_class": self.per_class, "classes": len(self._by_label), "images": len(self)}

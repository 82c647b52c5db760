"""Continual-learning metrics with one exact definition each (these are easy to confuse).

``R[i][j]`` is the accuracy on task ``j`` measured right after training task ``i`` (only ``j <= i``).

* average accuracy after task ``i``: ``mean_{j<=i} R[i][j]``
* forgetting after task ``i`` (Chaudhry et al., 2018): ``mean_{j<i} (max_{j<=l<i} R[l][j] - R[i][j])``
  -- how far each old task fell below its best earlier accuracy; 0 after the first task
* backward transfer after task ``i``: ``mean_{j<i} (R[i][j] - R[j][j])`` -- negative = forgetting relative
  to the accuracy right after learning the task (Lopez-Paz & Ranzato, 2017)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from learngene.errors import DataError

__all__ = ["AccuracyMatrix", "accuracy"]


def accuracy(logits: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    if logits.dim() != 2 or targets.dim() != 1 or logits.shape[0] != targets.shape[0]:
        raise DataError(
            f"accuracy expects logits [N, n_classes] and targets [N], got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    if targets.numel() == 0:
        raise DataError("accuracy of an empty set is undefined; evaluate on at least one image")
    return float((logits.argmax(dim=1) == targets.to(logits.device)).double().mean())


class AccuracyMatrix:
    """``R[i][j]`` = accuracy on task ``j`` after training task ``i`` (``j <= i``; NaN above the diagonal)."""

    def __init__(self, n_tasks: int) -> None:
        if not isinstance(n_tasks, int) or n_tasks < 1:
            raise DataError(f"AccuracyMatrix needs n_tasks >= 1, got {n_tasks!r}")
        self.n_tasks = n_tasks
        self._r: list[list[float]] = [[math.nan] * n_tasks for _ in range(n_tasks)]

    def _check_ij(self, i: int, j: int) -> None:
        if not (0 <= j <= i < self.n_tasks):
            raise DataError(
                f"accuracy index (after task {i}, on task {j}) is invalid: need 0 <= j <= i < {self.n_tasks} "
                "(a task can only be evaluated once it was trained)"
            )

    def set(self, i: int, j: int, acc: float) -> None:
        self._check_ij(i, j)
        acc = float(acc)
        if not math.isfinite(acc):
            raise DataError(
                f"accuracy after task {i} on task {j} is {acc}; evaluation produced a non-finite value"
            )
        self._r[i][j] = acc

    def get(self, i: int, j: int) -> float:
        return self._r[i][j]

    def row(self, i: int) -> list[float]:
        """Row ``i`` of length ``n_tasks`` (NaN for tasks not yet trained or not recorded)."""
        if not 0 <= i < self.n_tasks:
            raise DataError(f"row {i} is out of range for {self.n_tasks} tasks")
        return list(self._r[i])

    def to_tensor(self) -> Tensor:
        return torch.tensor(self._r, dtype=torch.float64)

    def _row_complete(self, i: int) -> bool:
        return all(not math.isnan(v) for v in self._r[i][: i + 1])

    def last_row(self) -> int:
        """Index of the last row whose entries ``j <= i`` are all recorded."""
        for i in range(self.n_tasks - 1, -1, -1):
            if self._row_complete(i):
                return i
        raise DataError("no complete row yet: record R[i][j] for every j <= i after training task i")

    def _resolve(self, i: int | None) -> int:
        if i is None:
            return self.last_row()
        if not 0 <= i < self.n_tasks:
            raise DataError(f"task index {i} is out of range for {self.n_tasks} tasks")
        return i

    def _need(self, i: int, j: int) -> float:
        v = self._r[i][j]
        if math.isnan(v):
            raise DataError(
                f"accuracy on task {j} after task {i} was not recorded; call set({i}, {j}, acc) first"
            )
        return v

    def average_accuracy(self, i: int | None = None) -> float:
        """``mean_{j<=i} R[i][j]``; ``i=None`` uses the last complete row."""
        i = self._resolve(i)
        return sum(self._need(i, j) for j in range(i + 1)) / (i + 1)

    def forgetting(self, i: int | None = None) -> float:
        """``mean_{j<i} (max_{j<=l<i} R[l][j] - R[i][j])``; 0.0 when ``i == 0``."""
        i = self._resolve(i)
        if i == 0:
            return 0.0
        drops = [max(self._need(k, j) for k in range(j, i)) - self._need(i, j) for j in range(i)]
        return sum(drops) / i

    def backward_transfer(self, i: int | None = None) -> float:
        """``mean_{j<i} (R[i][j] - R[j][j])``; 0.0 when ``i == 0``."""
        i = self._resolve(i)
        if i == 0:
            return 0.0
        return sum(self._need(i, j) - self._need(j, j) for j in range(i)) / i

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: missing entries become ``None``."""
        return {
            "n_tasks": self.n_tasks,
            "R": [[None if math.isnan(v) else v for v in row] for row in self._r],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AccuracyMatrix:
        try:
            n = int(d["n_tasks"])
            rows = d["R"]
            m = cls(n)
            if len(rows) != n or any(len(r) != n for r in rows):
                raise ValueError(f"R must be {n}x{n}")
            for i, r in enumerate(rows):
                for j, v in enumerate(r):
                    if v is None or (isinstance(v, float) and math.isnan(v)):
                        continue
                    m.set(i, j, v)
        except (KeyError, TypeError, ValueError, DataError) as exc:
            raise DataError(
                f"malformed accuracy matrix ({exc}); expected {{'n_tasks': n, 'R': n x n list}} as written by "
                "AccuracyMatrix.to_dict()"
            ) from exc
        return m

    def __repr__(self) -> str:
        return f"AccuracyMatrix(n_tasks={self.n_tasks}, R={self.to_dict()['R']})"

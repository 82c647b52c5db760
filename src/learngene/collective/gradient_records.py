"""The gradient statistics a collective training recorded (:class:`GradientRecords`): one record per task and
epoch, with each watched layer's fraction of large gradient entries and gradient norm; read as tensors, saved
as an artifact, kept in checkpoints and drawn as a heatmap. The criterion reads them from here."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from learngene.errors import CheckpointError, ConfigError, DataError

__all__ = ["STATS", "GradientRecords", "check_stat"]

STATS = ("fraction", "grad_norm")


def check_stat(stat: str) -> None:
    if stat not in STATS:
        raise ConfigError(f"unknown gradient statistic {stat!r}; choose one of {', '.join(STATS)}")


class GradientRecords:
    """The recorded statistics, per epoch and layer: views (:meth:`to_tensor`, :meth:`per_task`), files
    (:meth:`save`, :meth:`load`), checkpoint state and the heatmap; :class:`~learngene.collective.recorder.
    GradientRecorder` adds how they are collected during training."""

    def __init__(self, threshold: float = 1e-4, signed: bool = False) -> None:
        if not (isinstance(threshold, int | float) and math.isfinite(threshold) and threshold >= 0):
            raise ConfigError(f"gradient threshold must be a finite number >= 0, got {threshold!r}")
        self.threshold = float(threshold)
        self.signed = bool(signed)
        self.records: list[dict[str, Any]] = []
        self._order: list[str] = []  # union of recorded layer names, in network order
        # growth multiplicities by parameter name, int64 on CPU; a missing entry means all ones
        self._mult_out: dict[str, Tensor] = {}  # per output row (dim 0)
        self._mult_in: dict[str, Tensor] = {}  # per input column (dim 1)

    def _append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._merge_order(record["layers"])

    def _merge_order(self, layers: list[str]) -> None:
        """Union of layer names; a new layer goes right after its predecessor in the record (network order)."""
        for k, name in enumerate(layers):
            if name in self._order:
                continue
            pos = 0
            for prev in reversed(layers[:k]):
                if prev in self._order:
                    pos = self._order.index(prev) + 1
                    break
            self._order.insert(pos, name)

    # -- views -----------------------------------------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        """Every layer seen in any record, in network order (layers added by growth slot in after their predecessor)."""
        return list(self._order)

    @property
    def tasks(self) -> list[int]:
        """Sorted distinct task ids: the row order of :meth:`per_task`."""
        return sorted({r["task"] for r in self.records})

    def to_tensor(self, stat: str = "fraction") -> Tensor:
        """``[n_records, n_layers]`` float64; NaN where a layer did not exist in that record."""
        check_stat(stat)
        col = {n: i for i, n in enumerate(self._order)}
        out = torch.full((len(self.records), len(self._order)), math.nan, dtype=torch.float64)
        for r, rec in enumerate(self.records):
            for name, v in zip(rec["layers"], rec[stat]):
                out[r, col[name]] = v
        return out

    def per_task(self, stat: str = "fraction") -> Tensor:
        """``[n_tasks, n_layers]``: NaN-aware mean over each task's epochs; rows follow :attr:`tasks`."""
        full = self.to_tensor(stat)
        task_of = torch.tensor([r["task"] for r in self.records], dtype=torch.long)
        rows = [full[task_of == t].nanmean(dim=0) for t in self.tasks]
        if not rows:
            return torch.empty(0, len(self._order), dtype=torch.float64)
        return torch.stack(rows)

    # -- persistence -----------------------------------------------------------------------------------------
    def _tensors(self) -> dict[str, Tensor]:
        col = {n: i for i, n in enumerate(self._order)}
        present = torch.zeros(len(self.records), len(self._order), dtype=torch.uint8)
        for r, rec in enumerate(self.records):
            for name in rec["layers"]:
                present[r, col[name]] = 1
        return {
            "fraction": self.to_tensor("fraction"),
            "grad_norm": self.to_tensor("grad_norm"),
            "present": present,
            "task": torch.tensor([r["task"] for r in self.records], dtype=torch.int64),
            "epoch": torch.tensor([r["epoch"] for r in self.records], dtype=torch.int64),
        }

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``gradient_stats.safetensors`` (tensors) and ``gradient_stats.json`` (names, tasks, settings)."""
        from learngene.artifacts import GRADIENT_STATS, save_artifact

        save_artifact(directory, GRADIENT_STATS, self._tensors(), {
            "layer_names": self.layer_names,
            "tasks": [r["task"] for r in self.records],
            "epochs": [r["epoch"] for r in self.records],
            "threshold": self.threshold,
            "signed": self.signed,
            "stats": list(STATS),
            "multiplicity": self._mult_lists(),
        })

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> GradientRecords:
        """Read what :meth:`save` wrote; :class:`DataError` naming the file if it is missing or corrupt."""
        from learngene.artifacts import GRADIENT_STATS, load_artifact

        d = Path(directory)
        if not (d / GRADIENT_STATS.manifest).is_file():
            raise DataError(
                f"gradient statistics not found: {d / GRADIENT_STATS.manifest} is missing; point to the run directory "
                "of a collective training (it writes gradient_stats.json and gradient_stats.safetensors)"
            )
        meta, tensors, _ = load_artifact(d, GRADIENT_STATS)
        try:
            names = [str(n) for n in meta["layer_names"]]
            tasks = [int(t) for t in meta["tasks"]]
            epochs = [int(e) for e in meta["epochs"]]
            rec = cls(threshold=float(meta["threshold"]), signed=bool(meta["signed"]))
            rec._mult_out, rec._mult_in = cls._mult_tensors(meta.get("multiplicity"))
            shape = (len(tasks), len(names))
            for key in ("fraction", "grad_norm", "present"):
                if tuple(tensors[key].shape) != shape:
                    raise ValueError(f"{key} has shape {tuple(tensors[key].shape)}, expected {shape}")
            if tensors["task"].tolist() != tasks or tensors["epoch"].tolist() != epochs:
                raise ValueError("task/epoch ids differ between the json and safetensors files")
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise DataError(
                f"gradient statistics in {d} are inconsistent ({exc}); the two files do not belong together -- "
                "re-run the collective training"
            ) from exc
        frac, norm, present = tensors["fraction"], tensors["grad_norm"], tensors["present"].bool()
        for r, (t, e) in enumerate(zip(tasks, epochs)):
            cols = present[r].nonzero().flatten().tolist()
            rec._append(
                {
                    "task": t,
                    "epoch": e,
                    "layers": [names[c] for c in cols],
                    "fraction": [float(frac[r, c]) for c in cols],
                    "grad_norm": [float(norm[r, c]) for c in cols],
                }
            )
        rec._order = names  # keep the saved column order exactly
        return rec

    def state_dict(self) -> dict[str, Any]:
        """Plain Python (floats, ints, names) for checkpoints; the open epoch's accumulators are not included."""
        return {
            "threshold": self.threshold,
            "signed": self.signed,
            "layer_names": list(self._order),
            "records": [
                {
                    "task": r["task"],
                    "epoch": r["epoch"],
                    "layers": list(r["layers"]),
                    "fraction": list(r["fraction"]),
                    "grad_norm": list(r["grad_norm"]),
                }
                for r in self.records
            ],
            "multiplicity": self._mult_lists(),
        }

    def _mult_lists(self) -> dict[str, dict[str, list[int]]]:
        """Growth multiplicities as plain int lists (checkpoints must give the same numbers on resume)."""
        return {
            "out": {k: [int(v) for v in m.tolist()] for k, m in self._mult_out.items()},
            "in": {k: [int(v) for v in m.tolist()] for k, m in self._mult_in.items()},
        }

    @staticmethod
    def _mult_tensors(d: Any) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Inverse of :meth:`_mult_lists`; ``None`` (older files) means no growth was tracked."""
        if d is None:
            return {}, {}
        parsed: list[dict[str, Tensor]] = []
        for side in ("out", "in"):
            out: dict[str, Tensor] = {}
            for name, values in dict(d[side]).items():
                if isinstance(values, (str, bytes)) or any(
                    isinstance(v, bool) or int(v) != v for v in values
                ):
                    raise ValueError(f"multiplicity of {name!r} must be a list of integers")
                m = torch.tensor([int(v) for v in values], dtype=torch.int64)
                if m.dim() != 1 or not bool((m >= 1).all()):
                    raise ValueError(f"multiplicity of {name!r} must be a list of integers >= 1")
                out[str(name)] = m
            parsed.append(out)
        return parsed[0], parsed[1]

    def load_state_dict(self, d: dict[str, Any]) -> None:
        try:
            threshold, signed = float(d["threshold"]), bool(d["signed"])
            mult_out, mult_in = self._mult_tensors(d.get("multiplicity"))
            records = [
                {
                    "task": int(r["task"]),
                    "epoch": int(r["epoch"]),
                    "layers": [str(n) for n in r["layers"]],
                    "fraction": [float(v) for v in r["fraction"]],
                    "grad_norm": [float(v) for v in r["grad_norm"]],
                }
                for r in d["records"]
            ]
            order = [str(n) for n in d.get("layer_names", [])]
            for r in records:
                if not len(r["layers"]) == len(r["fraction"]) == len(r["grad_norm"]):
                    raise ValueError("a record has lists of different lengths")
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"gradient recorder state is malformed ({exc}); use a checkpoint written by "
                "GradientRecorder.state_dict()"
            ) from exc
        self.threshold, self.signed = threshold, signed
        self._mult_out, self._mult_in = mult_out, mult_in  # takes effect at the next attach()
        self.records = []
        self._order = list(order)
        for r in records:
            self._append(r)

    # -- plotting --------------------------------------------------------------------------------------------
    def plot_heatmap(self, path: str | os.PathLike[str], stat: str = "fraction") -> Any:
        """Layers x tasks heatmap (per-task mean of ``stat``) as a PNG; grey where a layer did not exist."""
        check_stat(stat)
        if not self.records:
            raise DataError("no gradient statistics recorded yet; train at least one epoch before plotting")
        import matplotlib
        import numpy as np

        from learngene.plots import new_figure, save_figure

        data = self.per_task(stat).T.numpy()  # [layers, tasks]
        names, tasks = self.layer_names, self.tasks
        masked = np.ma.masked_invalid(data)
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
        fig = new_figure((max(4.0, 0.6 * len(tasks) + 2.5), max(3.0, 0.35 * len(names) + 1.5)))
        ax = fig.add_subplot(111)
        im = ax.imshow(masked, aspect="auto", cmap=cmap, interpolation="nearest")
        ax.set_xticks(range(len(tasks)), [str(t + 1) for t in tasks])  # counted from 1, as everywhere
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("task")
        ax.set_ylabel("layer")
        if stat == "fraction":
            op = "grad" if self.signed else "|grad|"
            label = f"fraction of {op} > {self.threshold:g}"
        else:
            label = "gradient L2 norm"
        ax.set_title(f"per-layer {stat.replace('_', ' ')} (mean over epochs)")
        fig.colorbar(im, ax=ax, label=label)
        fig.tight_layout()
        save_figure(fig, path)
        return fig

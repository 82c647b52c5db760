"""Figures for reports. Each function takes ``ax=None`` and returns the figure, Avalanche style; Agg backend."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path: str | Path | None):
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        _pyplot().close(fig)
    return fig


def plot_forgetting_curve(report: dict[str, Any], path: str | Path | None = None, ax=None):
    """Average accuracy over seen tasks and forgetting after each task (the forgetting curve)."""
    plt = _pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(6, 3.5))
    ax = ax or fig.add_subplot(111)
    tasks = [t["task"] + 1 for t in report["tasks"]]
    ax.plot(tasks, report["average_accuracy_curve"], "o-", label="avg accuracy (task-aware)")
    ax.plot(tasks, [t.get("average_accuracy_class_incremental") for t in report["tasks"]], "s-",
            label="avg accuracy (class-incremental)")
    ax.plot(tasks, report["forgetting_curve"], "^--", label="forgetting")
    ow = [(t["task"] + 1, t["open_world"]["auroc"]) for t in report["tasks"] if t.get("open_world")]
    if ow:
        ax.plot(*zip(*ow), "d:", label="open-world AUROC")
    ax.set_xlabel("after task")
    ax.set_ylim(0, 1.02)
    ax.set_title("collective model over the stream")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _finish(fig, path)


def plot_accuracy_matrix(matrix: Sequence[Sequence[float]], path: str | Path | None = None, ax=None,
                         title: str = "accuracy matrix R[i][j]"):
    plt = _pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(4.5, 4))
    ax = ax or fig.add_subplot(111)
    data = [[(v if v is not None and not (isinstance(v, float) and math.isnan(v)) else float("nan")) for v in row]
            for row in matrix]
    im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis")
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return _finish(fig, path)


def plot_params(report: dict[str, Any], path: str | Path | None = None, ax=None):
    plt = _pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(5, 3))
    ax = ax or fig.add_subplot(111)
    ax.plot([t["task"] + 1 for t in report["tasks"]], [t["params"] / 1e6 for t in report["tasks"]], "o-")
    ax.set_xlabel("task")
    ax.set_ylabel("parameters (M)")
    ax.set_title("growth of the collective model")
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def plot_curves(curves: dict[str, Sequence[float] | tuple[Sequence[float], Sequence[float]]], path: str | Path | None = None, ax=None,
                xlabel: str = "epoch", ylabel: str = "query accuracy", title: str = "",
                references: dict[str, float] | None = None):
    """One line per method, e.g. accuracy after each epoch (convergence).

    ``references`` are values without a curve (methods that do not train, such as nearest class mean):
    dashed horizontal lines, so they can be read against the curves. Empty curves are skipped.
    """
    plt = _pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(6, 3.5))
    ax = ax or fig.add_subplot(111)
    drawn = 0
    for name, ys in curves.items():
        xs, ys = ys if isinstance(ys, tuple) else (range(1, len(ys) + 1), ys)  # (x, y) pairs or y only
        if len(ys) == 0:
            continue
        ax.plot(list(xs), list(ys), "o-" if len(ys) < 12 else "-", label=name)
        drawn += 1
    for name, value in (references or {}).items():
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            ax.axhline(value, linestyle="--", linewidth=1, color=f"C{drawn % 10}", label=name)
            drawn += 1
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _finish(fig, path)


def plot_bars(means: dict[str, float], cis: dict[str, float], path: str | Path | None = None, ax=None,
              ylabel: str = "accuracy", title: str = ""):
    """Bar chart with 95% confidence intervals."""
    plt = _pyplot()
    fig = ax.figure if ax is not None else plt.figure(figsize=(6.5, 3.5))
    ax = ax or fig.add_subplot(111)
    names = list(means)
    ax.bar(names, [means[n] for n in names], yerr=[cis.get(n, 0.0) for n in names], capsize=4, color="tab:blue")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path)

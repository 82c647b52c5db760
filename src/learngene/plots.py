"""Figures for reports. Each function takes ``ax=None`` and returns the figure, Avalanche style.

Figures are made with matplotlib's object API (``matplotlib.figure.Figure``), never through pyplot, so a library
call leaves the user's backend and open figures alone; files are rendered to memory and written atomically, so a
failed write (a full disk) leaves no partial image behind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def new_figure(figsize: tuple[float, float]):
    """A figure that no pyplot state knows about (garbage-collected like any object)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def save_figure(fig, path: str | Path) -> None:
    """PNG rendered in memory, then written atomically (with fsync) by the package's one writer."""
    import io

    from learngene.safeio import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _finish(fig, path: str | Path | None):
    if path is not None:
        save_figure(fig, path)
    return fig


def _integer_ticks(ax, *axes: str) -> None:
    """Tasks and epochs are counted: no tick at epoch 2.5."""
    from matplotlib.ticker import MaxNLocator

    for name in axes or ("x",):
        getattr(ax, f"{name}axis").set_major_locator(MaxNLocator(integer=True))


def _task_ticks(ax, n: int, *axes: str) -> None:
    """Image axes index tasks from 0; people count them from 1, as the console and the other plots do."""
    from matplotlib.ticker import FuncFormatter

    _integer_ticks(ax, *axes)
    label = FuncFormatter(lambda v, _pos: f"{int(round(v)) + 1}" if 0 <= round(v) < n else "")
    for name in axes:
        getattr(ax, f"{name}axis").set_major_formatter(label)


def _start(ax, figsize: tuple[float, float]):
    fig = ax.figure if ax is not None else new_figure(figsize)
    return fig, (ax or fig.add_subplot(111))


def plot_forgetting_curve(report: dict[str, Any], path: str | Path | None = None, ax=None):
    """Average accuracy over seen tasks and forgetting after each task (the forgetting curve)."""
    fig, ax = _start(ax, (6, 3.5))
    tasks = [t["task"] + 1 for t in report["tasks"]]
    ax.plot(tasks, report["average_accuracy_curve"], "o-", label="avg accuracy (task-aware)")
    ax.plot(tasks, [t.get("average_accuracy_class_incremental") for t in report["tasks"]], "s-",
            label="avg accuracy (class-incremental)")
    ax.plot(tasks, report["forgetting_curve"], "^--", label="forgetting")
    ow = [(t["task"] + 1, t["open_world"]["auroc"]) for t in report["tasks"] if t.get("open_world")]
    if ow:
        ax.plot(*zip(*ow), "d:", label="open-world AUROC")
    ax.set_xlabel("after task")
    ax.set_ylabel("accuracy / forgetting / AUROC")
    _integer_ticks(ax)
    ax.set_ylim(0, 1.02)
    ax.set_title("collective model over the stream")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _finish(fig, path)


def plot_accuracy_matrix(matrix: Sequence[Sequence[float]], path: str | Path | None = None, ax=None,
                         title: str = "accuracy matrix R[i][j]"):
    fig, ax = _start(ax, (4.5, 4))
    data = [[(v if v is not None and not (isinstance(v, float) and math.isnan(v)) else float("nan")) for v in row]
            for row in matrix]
    im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis")
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    _task_ticks(ax, len(data), "x", "y")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return _finish(fig, path)


def plot_params(report: dict[str, Any], path: str | Path | None = None, ax=None):
    fig, ax = _start(ax, (5, 3))
    ax.plot([t["task"] + 1 for t in report["tasks"]], [t["params"] / 1e6 for t in report["tasks"]], "o-")
    ax.set_xlabel("task")
    ax.set_ylabel("parameters (M)")
    _integer_ticks(ax)
    ax.set_title("growth of the collective model")
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def plot_curves(curves: dict[str, Sequence[float] | tuple[Sequence[float], Sequence[float]]], path: str | Path | None = None, ax=None,
                xlabel: str = "epoch", ylabel: str = "query accuracy", title: str = "",
                references: dict[str, float] | None = None, aliases: dict[str, str] | None = None):
    """One line per method, e.g. accuracy after each epoch (convergence).

    ``references`` are values without a curve (methods that do not train, such as nearest class mean):
    dashed horizontal lines, so they can be read against the curves. Empty curves are skipped. ``aliases`` maps
    a method that is a copy of another (``same_as``) to it: the copy gets no line of its own (it would hide the
    original's), and the original's legend entry names it. The legend sits outside the axes.
    """
    aliases = aliases or {}
    copies: dict[str, list[str]] = {}
    for copy_name, original in aliases.items():
        copies.setdefault(original, []).append(copy_name)
    fig, ax = _start(ax, (6, 3.5))
    drawn = 0
    for name, ys in curves.items():
        xs, ys = ys if isinstance(ys, tuple) else (range(1, len(ys) + 1), ys)  # (x, y) pairs or y only
        if len(ys) == 0 or name in aliases:
            continue
        label = name + (f" (= {', '.join(copies[name])})" if name in copies else "")
        ax.plot(list(xs), list(ys), "o-" if len(ys) < 12 else "-", label=label)
        drawn += 1
    for name, value in (references or {}).items():
        if name in aliases:
            continue
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            ax.axhline(value, linestyle="--", linewidth=1, color=f"C{drawn % 10}", label=name)
            drawn += 1
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _integer_ticks(ax)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return _finish(fig, path)


def plot_criterion(candidates: Sequence[dict[str, Any]], selected: Sequence[str], path: str | Path | None = None,
                   ax=None, title: str = "criterion: score of every candidate window"):
    """The scores that chose the learngene, one bar per candidate window, the chosen one marked.

    Windows are named by their layers as the report names them (``features.0, features.1``). Scores in [0, 1]
    (validation: a mean accuracy) get a [0, 1] axis; others (gradient stability: minus the gradient statistic)
    an axis around their own range. The numbers stand right of the axes, clear of the bars. A candidate without
    a score (a fixed choice) is drawn at 0 and labelled so.
    """
    from matplotlib.transforms import blended_transform_factory

    chosen = list(selected)
    labels = [", ".join(c["layers"]) for c in candidates]
    scores = [c.get("score") for c in candidates]
    fig, ax = _start(ax, (7.0, max(2.5, 0.35 * len(candidates) + 1.2)))
    colors = ["tab:orange" if list(c["layers"]) == chosen else "tab:blue" for c in candidates]
    values = [v if isinstance(v, (int, float)) and not math.isnan(v) else 0.0 for v in scores]
    ax.barh(range(len(candidates)), values, color=colors)
    ax.set_yticks(range(len(candidates)), labels)
    right = blended_transform_factory(ax.transAxes, ax.transData)
    for i, (c, v) in enumerate(zip(candidates, scores)):
        frac = c.get("grad_fraction_mean")
        text = ("no score" if not isinstance(v, (int, float)) else f"{v:.3f}") + \
            (f"  (grad fraction {frac:.3f})" if isinstance(frac, (int, float)) else "") + \
            ("  <- chosen" if list(c["layers"]) == chosen else "")
        ax.text(1.02, i, text, va="center", fontsize=7, transform=right)
    ax.invert_yaxis()
    if all(0.0 <= v <= 1.0 for v in values):
        ax.set_xlim(0, 1)
        ax.set_xlabel("criterion score (in [0, 1], higher is better)")
    else:
        low, high = min([*values, 0.0]), max([*values, 0.0])
        pad = 0.05 * (high - low or 1.0)
        ax.set_xlim(low - pad, high + pad)
        ax.set_xlabel("criterion score (higher is better)")
    ax.set_ylabel("candidate window")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _finish(fig, path)


def plot_bars(means: dict[str, float], cis: dict[str, float], path: str | Path | None = None, ax=None,
              ylabel: str = "accuracy", title: str = "", aliases: dict[str, str] | None = None,
              bounds: tuple[float, float] | None = (0.0, 1.0)):
    """Mean with its 95% confidence interval, one horizontal bar per method (long names never overlap); an
    accuracy's error bar stops at ``bounds`` and a bar without an interval (NaN) gets none.

    ``aliases`` maps a method that is a copy of another (``same_as``) to it: one bar, named for both.
    """
    aliases = aliases or {}
    copies: dict[str, list[str]] = {}
    for copy_name, original in aliases.items():
        copies.setdefault(original, []).append(copy_name)
    names = [n for n in means if n not in aliases]
    labels = [n + (f" (= {', '.join(copies[n])})" if n in copies else "") for n in names]
    fig, ax = _start(ax, (6.5, max(2.5, 0.32 * len(names) + 1.2)))
    values = [means[n] if means[n] is not None else float("nan") for n in names]
    lo, hi = bounds if bounds is not None else (-math.inf, math.inf)
    half = [c if isinstance(c := cis.get(n), (int, float)) and math.isfinite(c) else 0.0 for n in names]
    xerr = [[min(h, v - lo) if math.isfinite(v) else 0.0 for v, h in zip(values, half)],
            [min(h, hi - v) if math.isfinite(v) else 0.0 for v, h in zip(values, half)]]
    ax.barh(range(len(names)), values, xerr=xerr, capsize=3, color="tab:blue")
    ax.set_yticks(range(len(names)), labels)
    ax.invert_yaxis()
    if all(0.0 <= v <= 1.0 for v in values if not math.isnan(v)):  # accuracies: the whole scale
        ax.set_xlim(0, 1)
    ax.set_xlabel(ylabel)
    ax.set_ylabel("method")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _finish(fig, path)


def plot_tradeoff(methods: dict[str, dict[str, Any]], x: str = "params", path: str | Path | None = None, ax=None,
                  title: str | None = None, highlight: Sequence[str] = ("learngene",)):
    """Accuracy (mean with its 95% CI as an error bar) against a cost, one point per method, with the Pareto
    frontier drawn: the methods no other method beats on both axes.

    ``x = "params"`` (the model a user keeps) or ``"train_seconds_mean"`` (training time per task). Rows copied
    from another (``same_as``) are drawn once. Why: a method earns its place if it sits on the frontier, and the
    picture shows where it does not.
    """
    fig, ax = _start(ax, (6.5, 4.2))
    pts = []
    for name, row in methods.items():
        if row.get("same_as") or row.get(x) is None or not math.isfinite(row.get("acc_mean", float("nan"))):
            continue
        ci = row.get("acc_ci95")
        err = ci if ci is not None and math.isfinite(ci) else 0.0
        lo, hi = max(0.0, row["acc_mean"] - err), min(1.0, row["acc_mean"] + err)
        pts.append((float(row[x]), float(row["acc_mean"]), lo, hi, name))
    if not pts:
        return _finish(fig, path)
    span = max(p[0] for p in pts) / max(min(p[0] for p in pts), 1e-12)
    log_x = x == "params" and span > 10  # a log axis only where the costs span more than a decade
    def pos(c: float) -> float:  # where a cost lands along the axis, for telling which labels would collide
        return math.log10(max(c, 1e-12)) if log_x else c

    width = (max(pos(p[0]) for p in pts) - min(pos(p[0]) for p in pts)) or 1.0
    placed: list[tuple[float, float]] = []
    for cost, acc, lo, hi, name in sorted(pts, key=lambda p: (p[0], -p[1])):
        strong = name in highlight
        ax.errorbar([cost], [acc], yerr=[[acc - lo], [hi - acc]], fmt="o" if strong else "s",
                    ms=8 if strong else 5, capsize=3, color="tab:red" if strong else "tab:blue", zorder=3)
        # labels of points that (nearly) coincide are stacked instead of printed over each other
        near = sum(1 for c, a in placed if abs(pos(c) - pos(cost)) <= 0.06 * width and abs(a - acc) < 0.03)
        placed.append((cost, acc))
        ax.annotate(name, (cost, acc), textcoords="offset points", xytext=(6, 4 - 10 * near), fontsize=8)
    frontier, best = [], -1.0
    for cost, acc, *_ in sorted(pts, key=lambda p: (p[0], -p[1])):
        if acc > best:
            frontier.append((cost, acc))
            best = acc
    ax.step([c for c, _ in frontier], [a for _, a in frontier], where="post", color="0.6", ls="--", zorder=1,
            label="frontier (no method is both cheaper and more accurate)")
    if x == "params":
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel("parameters of the model" + (" (log scale)" if log_x else ""))
    else:
        ax.set_xlabel("training seconds per task")
    ax.set_ylabel("query accuracy (95% CI)")
    ax.set_ylim(max(0.0, min(p[2] for p in pts) - 0.05), min(1.0, max(p[3] for p in pts) + 0.05))
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    return _finish(fig, path)

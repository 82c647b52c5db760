"""How a transformer run turns trainings into numbers: per-row means and intervals at the level of the randomness,
and paired differences between methods.

The outermost random stage of a transformer run is the learngene seed (``vit.learngene_seeds``: each trains its
own ancestry, auxiliary net and genes); the descendant seeds (``evaluate.seeds``) and the few-shot episodes are
nested in it.  :func:`aggregate` averages within each learngene and takes the Student-t interval over the
learngene means (:func:`learngene.stats.nested_ci95`); with one learngene there is no outer interval, and the
interval over its descendants stands in, labelled as conditional on that learngene (``ci_level``).

Within a learngene seed every method's descendant of a (depth, width, descendant seed) sees the same batches and
augmentation (their seed leaves the method out), so :func:`paired_differences` compares methods on the same draws:
``a - b`` per (learngene, descendant seed), at equal epoch budgets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from learngene.stats import excludes_zero, nested_ci95

__all__ = ["CI_LEARNGENES", "CI_ONE_LEARNGENE", "aggregate", "paired_differences"]

CI_LEARNGENES = "learngenes"
CI_ONE_LEARNGENE = "descendants of one learngene"


def aggregate(groups: Sequence[Sequence[float]]) -> dict[str, Any]:
    """``{"mean", "ci95", "ci_level", "n", ...}`` of values grouped by learngene seed (see the module docstring)."""
    nest = nested_ci95(groups)
    if nest["n"] > 1:
        return {**nest, "ci_level": CI_LEARNGENES}
    # one learngene: its descendants (or episodes) are the only repetition; the interval is conditional on it
    return {**nest, "ci95": nest["tasks_ci95"], "n": nest["tasks_n"], "ci_level": CI_ONE_LEARNGENE,
            "excludes_0": excludes_zero(nest["mean"], nest["tasks_ci95"])}


def _values(row: Mapping[str, Any]) -> dict[tuple[int, int], float]:
    return {(r["learngene_seed"], r["seed"]): r["acc"] for r in row["per_seed"]}


def paired_differences(rows: Sequence[Mapping[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    """``a - b`` for every shape (depth, width) and pair of methods (``a`` later in ``order`` than ``b``), paired by
    learngene and descendant seed: at equal epochs (a budget row of ``b`` where one exists), and each row against a
    from-scratch row of another budget (``b``'s main run: e.g. 10-epoch TLEG against 30-epoch scratch).  A row that
    is a copy of the other (``same_as``: the very same model) is not paired with it."""
    out = []
    by_shape: dict[tuple[int, Any], list[Mapping[str, Any]]] = {}
    for r in rows:
        by_shape.setdefault((r["depth"], r.get("width")), []).append(r)
    rank = {m: i for i, m in enumerate(order)}
    for (depth, width) in sorted(by_shape, key=lambda k: (k[0], k[1] or 0)):
        here = by_shape[(depth, width)]
        for a in here:
            for b in here:
                if rank.get(a["method"], -1) <= rank.get(b["method"], -1):
                    continue
                if a.get("same_as") == b["method"] or b.get("same_as") == a["method"]:
                    continue
                same = a["epochs"] == b["epochs"]
                if not same and (a.get("budget") or b.get("budget") or not b.get("from_scratch")):
                    continue  # unequal budgets only main against main, and only against scratch
                va, vb = _values(a), _values(b)
                keys = [k for k in va if k in vb]
                seeds = sorted({k[0] for k in keys})
                groups = [[va[k] - vb[k] for k in keys if k[0] == s] for s in seeds]
                agg = aggregate(groups)
                out.append({"a": a["method"], "b": b["method"], "depth": depth, "width": width,
                            "epochs_a": a["epochs"], "epochs_b": b["epochs"], "equal_budget": same,
                            "mean": agg["mean"], "ci95": agg["ci95"], "n": agg["n"], "ci_level": agg["ci_level"],
                            "excludes_0": agg["excludes_0"], "per_learngene": agg["means"]})
    return out

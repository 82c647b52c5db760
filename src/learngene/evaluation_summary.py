"""The evaluation's summary of every method's few-shot runs: mean accuracy with its CI at the outermost random
stage, the mean convergence curve, the paired difference to ``scratch`` (and ``ncm-collective`` to ``joint``)
over the (seed, episode) pairs both saw, and the merge of the ranks' shards under torchrun."""

from __future__ import annotations

from typing import Any

from learngene.config import Config
from learngene.stats import excludes_zero, mean_ci95

__all__ = ["merge_shards", "paired_difference", "summarize"]


def paired_difference(runs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and 95% CI of ``accuracy - reference accuracy`` over the (seed, episode) pairs both have.

    Why paired: every method sees the same episodes, and episode difficulty varies far more than the methods
    do, so per-episode differences give a much tighter interval than comparing two independent means.
    """
    ref = {(r["seed"], r["episode"]): r["accuracy"] for r in reference}
    diffs = [r["accuracy"] - ref[(r["seed"], r["episode"])] for r in runs if (r["seed"], r["episode"]) in ref]
    mean, ci = mean_ci95(diffs)
    return {"mean": mean, "ci95": ci, "n": len(diffs), "ci_excludes_0": excludes_zero(mean, ci)}


def summarize(results: dict[str, dict[str, list[dict[str, Any]]]], cfg: Config) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for setting, per in results.items():
        methods: dict[str, Any] = {}
        for m, runs in per.items():
            accs = [r["accuracy"] for r in runs]
            mean, ci = mean_ci95(accs)
            n_epochs = max((len(r["curve"]) for r in runs), default=0)
            curve = [sum(r["curve"][e] for r in runs) / len(runs) for e in range(n_epochs)] if runs else []
            epochs = runs[0]["curve_epochs"] if runs else []
            final = curve[-1] if curve else float("nan")
            to90 = next((epochs[e] for e, v in enumerate(curve) if v >= 0.9 * final), None) if curve else None
            methods[m] = {
                "acc_mean": mean,
                "acc_ci95": ci,
                "n": len(accs),
                "params": runs[0]["params"] if runs else None,
                "inherited_params": runs[0]["inherited_params"] if runs else None,
                "lr": runs[0].get("lr") if runs else None,
                "train_seconds_mean": sum(r["train_seconds"] for r in runs) / max(len(runs), 1),
                "epochs_to_90pct_final": to90,
                "curve": curve,
                "curve_epochs": epochs,
                "accuracies": accs,
                # per (seed, episode): the pairing key of the paired comparisons, and for gene-based methods
                # the fingerprint of the inherited weights the model started from
                "runs": [{k: r[k] for k in ("seed", "episode", "accuracy", "start_sha256") if k in r}
                         for r in runs],
            }
            eces = [r["ece"] for r in runs if r.get("ece") is not None]
            if eces:  # trained rows: how far their softmax scores are from their accuracy (not probabilities)
                methods[m]["ece_mean"] = sum(eces) / len(eces)
            if "scratch" in per and m != "scratch":
                methods[m]["vs_scratch"] = paired_difference(runs, per["scratch"])
            twin = next((r["same_as"] for r in runs if "same_as" in r), None)
            if twin:
                methods[m]["same_as"] = twin
        settings[setting] = {"methods": methods}
        if "ncm-collective" in per and "joint" in per:
            gap = paired_difference(per["ncm-collective"], per["joint"])
            settings[setting]["ncm_collective_minus_joint"] = gap
    headline = cfg.evaluate.headline
    return {
        "headline": headline,
        "methods": settings.get(headline, {}).get("methods", {}),
        "settings": settings,
        "episodes_per_seed": cfg.evaluate.episodes,
        "queries_per_class": cfg.evaluate.queries,
        "seeds": list(cfg.evaluate.seeds),
        # one run has one collective model and one gene: its target tasks are not independent draws of the
        # method, so the interval below is conditional on them (the outer interval needs several collective
        # seeds: bench/seeds.py)
        "ci_level": "target tasks of one collective model",
        "collective_models": 1,
        "ci": "95% Student-t interval over all (episode, seed) target tasks of this one collective model and gene "
              "(conditional on them: the variation between collective models is not in it)",
        "paired_ci": "vs_scratch and ncm_collective_minus_joint: mean and 95% Student-t interval of the "
                     "per-(episode, seed) accuracy differences, on the same tasks",
        "calibration": "ece_mean: expected calibration error of the top softmax score on the query images (15 "
                       "bins), mean over tasks; 0 = a score of 0.9 is right 90% of the time. The scores of "
                       "few-shot models are far from that: they are not probabilities",
    }


def merge_shards(parts: list[dict[str, dict[str, list[dict[str, Any]]]]]) -> dict[str, dict[str, list]]:
    merged: dict[str, dict[str, list]] = {}
    for part in parts:
        for setting, per in part.items():
            dst = merged.setdefault(setting, {})
            for m, runs in per.items():
                dst.setdefault(m, []).extend(runs)
    for per in merged.values():
        for runs in per.values():
            runs.sort(key=lambda r: (r["seed"], r["episode"]))  # one canonical order, however many ranks
    return merged

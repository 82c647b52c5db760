"""Paired transformer runs over learngenes (issue 17): methods share every draw that is not theirs within a learngene
seed, learngene seeds vary the ancestry (and everything after it) but not the class split, the caches know the
seed, equal-budget rows are runs scheduled for their epochs, and paired differences come out of the same draws."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch
from safetensors.torch import load_file

import learngene.vit.run as vit_run
from learngene.config import load_config
from learngene.vit.compare import aggregate, paired_differences

FAST = ["vit.depths=[2]", "vit.ancestry_epochs=1", "vit.aux_epochs=1", "vit.descendant_epochs=1",
        "vit.scratch_epochs=2", "vit.eval_epochs=[0,1]", "evaluate.episodes=2", "evaluate.seeds=[0,1]"]


def _weights(path):
    return load_file(str(path / "cache" / "ancestry" / "model.safetensors"))


def test_methods_share_heads_data_order_and_episodes_within_a_learngene_seed(tmp_path, monkeypatch):
    trainings, episodes = defaultdict(list), defaultdict(list)
    real_fit, real_episode = vit_run.fit, vit_run.train_episode

    def fit(model, batches, epochs, **kw):
        method = kw["desc"].split(" depth ")[0]
        trainings[kw["seed"]].append((method, epochs, batches.generator.initial_seed(), model.head.weight.clone(),
                                      model.embed_dim))
        return real_fit(model, batches, epochs, **kw)

    def train_episode(d, sx, sy, qx, qy, settings, *, seed):
        episodes[seed].append((d.method, d.model.head.weight.clone()))
        return real_episode(d, sx, sy, qx, qy, settings, seed=seed)

    monkeypatch.setattr(vit_run, "fit", fit)
    monkeypatch.setattr(vit_run, "train_episode", train_episode)
    report = vit_run.run_vit(load_config("vit-smoke", None, [*FAST, "vit.budget_epochs=[1]"]), tmp_path / "run",
                             progress=False)
    # 2 learngene seeds x 2 descendant seeds x 2 widths: eight draws, each shared by every method of that width
    # (scratch twice: 2 and 1 epochs; at the ancestry's width weight selection is truncated's copy, not trained)
    assert len(trainings) == 8
    both = [("frequency", 1), ("heur-lg", 1), ("scratch", 1), ("scratch", 2), ("tleg", 1)]
    for runs in trainings.values():
        width = runs[0][4]
        assert all(w == width for *_, w in runs)
        one_method = "truncated" if width == 32 else "weight-selection"
        assert sorted((m, e) for m, e, *_ in runs) == sorted([*both, (one_method, 1)])
        assert len({order for _, _, order, _, _ in runs}) == 1  # one data order and augmentation for all
        assert all(torch.equal(runs[0][3], head) for _, _, _, head, _ in runs)  # one fresh head for all
    assert len({runs[0][2] for runs in trainings.values()}) == 8
    # few-shot: every method's descendant of an episode gets the same seed (2 learngenes x 2 episodes); weight
    # selection at the ancestry's depth and width is truncated's row, not a second training
    assert len(episodes) == 4 and all(len(v) == 5 for v in episodes.values())
    # the paired differences are taken over those shared draws, per learngene seed
    paired = report["descendants"]["paired"]
    one = next(p for p in paired if (p["a"], p["b"], p["epochs_b"], p["width"]) == ("tleg", "scratch", 1, 32))
    rows = {(r["method"], r["epochs"]): r for r in report["descendants"]["rows"] if r["width"] == 32}
    a, b = rows[("tleg", 1)], rows[("scratch", 1)]
    diffs = [x["acc"] - y["acc"] for x, y in zip(a["per_seed"], b["per_seed"])]
    assert one["mean"] == pytest.approx(sum(diffs) / 4) and one["equal_budget"] and one["n"] == 2
    assert not math.isfinite(one["ci95"] if one["ci95"] is not None else float("nan"))  # 2 learngenes: no CI
    assert any(p["epochs_b"] == 2 and not p["equal_budget"] for p in paired)  # 1-epoch tleg vs 2-epoch scratch


def test_learngene_seeds_vary_the_ancestry_not_the_split_and_the_cache_knows_the_seed(tmp_path):
    cfg = ["evaluate.methods=['truncated']", "evaluate.seeds=[0]", *FAST[:2], "vit.descendant_epochs=1",
           "evaluate.episodes=1", "vit.budget_epochs=[]"]
    both = vit_run.run_vit(load_config("vit-smoke", None, [*cfg, "vit.learngene_seeds=[0, 1]"]), tmp_path / "a",
                           progress=False)
    first, second = _weights(tmp_path / "a"), _weights(tmp_path / "a" / "lineages" / "seed-1")
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert [lin["learngene_seed"] for lin in both["lineages"]] == [0, 1]
    assert both["lineages"][0]["ancestry"]["fingerprint"] != both["lineages"][1]["ancestry"]["fingerprint"]
    # a run of seed 1 alone into the first run's directory: the root's seed-0 ancestry is not reused for it ...
    alone = vit_run.run_vit(load_config("vit-smoke", None, [*cfg, "vit.learngene_seeds=[1]"]), tmp_path / "a",
                            progress=False)
    assert not alone["ancestry"]["cached"] and alone["split"] == both["split"]
    # ... and it trains exactly the ancestry that seed 1 had in the two-seed run (the seed decides it)
    again = _weights(tmp_path / "a")
    assert all(torch.equal(again[k], second[k]) for k in second)


def test_aggregate_uses_the_outer_stage_and_labels_one_learngene():
    two = aggregate([[0.5, 0.7], [0.6, 0.8]])
    assert two["n"] == 2 and math.isnan(two["ci95"]) and two["ci_level"] == "learngenes"
    three = aggregate([[0.5], [0.6], [0.7]])
    assert three["ci95"] > 0 and three["mean"] == pytest.approx(0.6) and three["ci_level"] == "learngenes"
    one = aggregate([[0.5, 0.6, 0.7]])  # one learngene: the interval over its descendants, labelled conditional
    assert one["ci95"] == pytest.approx(three["ci95"]) and one["ci_level"] == "descendants of one learngene"


def test_paired_differences_match_seeds_and_budgets():
    def row(method, epochs, accs, budget=False, scratch=False):
        return {"method": method, "depth": 2, "epochs": epochs, "budget": budget, "from_scratch": scratch,
                "per_seed": [{"learngene_seed": lg, "seed": 0, "acc": a} for lg, a in enumerate(accs)]}

    rows = [row("scratch", 30, [0.4, 0.5, 0.6], scratch=True), row("scratch", 10, [0.2, 0.3, 0.3], True, True),
            row("tleg", 10, [0.5, 0.6, 0.6])]
    out = {(p["a"], p["b"], p["epochs_b"]): p for p in paired_differences(rows, ["scratch", "tleg"])}
    assert set(out) == {("tleg", "scratch", 10), ("tleg", "scratch", 30)}
    assert out[("tleg", "scratch", 10)]["mean"] == pytest.approx(0.3) and out[("tleg", "scratch", 10)]["excludes_0"]
    assert out[("tleg", "scratch", 30)]["mean"] == pytest.approx(0.2 / 3) and out[("tleg", "scratch", 30)]["n"] == 3

"""Fair baselines (issue 17, point 3): every trained method may get its own lr chosen on pseudo-tasks, and
ProtoNet's lr and logit scale are tuned the same way; the report says which methods share individual.lr."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import learngene.tune as t
from learngene.config import load_config
from learngene.errors import ConfigError
from learngene.evaluate import learning_rates
from learngene.report import lr_line
from learngene.tune import parse_param, tune


def test_each_method_can_have_its_own_lr_and_the_report_says_which_share():
    cfg = load_config("smoke", overrides=["evaluate.method_lr.scratch=0.1", "evaluate.method_lr.finetune=0.02"])
    assert cfg.evaluate.method_lr == {"scratch": 0.1, "finetune": 0.02}  # one override keeps the other entry
    rates = learning_rates(cfg, ["learngene", "scratch", "finetune", "ncm-collective", "protonet"])
    assert rates == {"own": {"scratch": 0.1, "finetune": 0.02}, "shared": ["learngene"],
                     "individual_lr": cfg.individual.lr}
    line = lr_line(rates)
    assert "own (evaluate.method_lr): scratch 0.1, finetune 0.02" in line and "shared by learngene" in line
    with pytest.raises(ConfigError, match="does not train on the target task"):
        load_config("smoke", overrides=["evaluate.method_lr.protonet=0.1"])


def test_a_preset_with_method_lr_loads_before_the_methods_are_registered():
    """`import learngene; load_config("omniglot")` in a fresh interpreter: the omniglot preset names methods in
    evaluate.method_lr before learngene.evaluate (which registers them) was imported."""
    import subprocess
    import sys

    code = ("from learngene.config import load_config; from learngene.registry import METHODS; "
            "assert not METHODS.names(); print(sorted(load_config('omniglot').evaluate.method_lr))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "scratch" in out.stdout


def test_evaluate_refuses_an_unknown_method_lr_the_config_could_not_check(monkeypatch):
    from learngene.evaluate import evaluate_methods
    from learngene.registry import METHODS

    cfg = load_config("smoke")
    cfg.evaluate.method_lr = {"no-such-method": 0.1}  # as a config built before registration would hold it
    assert METHODS.names()
    with pytest.raises(ConfigError, match="no-such-method"):
        evaluate_methods(cfg, None, [], None, None, [], {})


SMALL = ["stream.tasks=2", "train.epochs=1", "individual.epochs=2"]


def test_tune_gives_a_trained_method_its_own_lr(tmp_path, monkeypatch):
    calls = []
    real = t.run_collective
    monkeypatch.setattr(t, "run_collective", lambda *a, **k: calls.append(1) or real(*a, **k))
    summary = tune(load_config("smoke", overrides=SMALL), [parse_param("evaluate.method_lr.scratch=0.003,0.3")],
                   tmp_path / "t", setting="3way1shot", episodes=2, score="individual", method="scratch",
                   progress=False)
    assert len(calls) == 1  # one collective model for both trials
    assert {r["overrides"][0]: r["method"] for r in summary["rows"]} == {
        "evaluate.method_lr.scratch=0.003": "scratch", "evaluate.method_lr.scratch=0.3": "scratch"}
    trials = sorted((tmp_path / "t" / "trials").glob("*.json"))
    lrs = sorted(__import__("json").loads(p.read_text())["result"]["individual"]["lr"] for p in trials)
    assert lrs == [0.003, 0.3]  # each trial trained scratch at its own lr
    assert "`scratch` method" in summary["score"] and "scratch 3way1shot" in (tmp_path / "t" / "tune.md").read_text()
    with pytest.raises(ConfigError, match="--score individual"):
        tune(load_config("smoke"), [], tmp_path / "u", method="scratch", progress=False)


def test_tune_chooses_protonets_lr_and_scale_on_pseudo_tasks(tmp_path):
    summary = tune(load_config("smoke", overrides=SMALL),
                   [parse_param("baseline.protonet_lr=0.005,0.1"), parse_param("baseline.protonet_scale=10")],
                   tmp_path / "t", setting="3way1shot", episodes=3, score="individual", method="protonet",
                   progress=False)
    rows = summary["rows"]
    assert len(rows) == 2 and all(r["method"] == "protonet" and 0.0 <= r["individual"] <= 1.0 for r in rows)
    assert all(r["scratch"] is None and r["gene"] == [] for r in rows)  # nearest class mean: no gene, no scratch
    caches = list((tmp_path / "t" / "runs").glob("*/baselines-tune/*/protonet/model.safetensors"))
    assert len(caches) == 2  # one ProtoNet per lr, trained on the stream's (source) classes
    a, b = (load_file(c) for c in caches)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # trained at their own lr: different weights

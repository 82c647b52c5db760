"""The collective model end to end on the smoke preset (tiny): growth, EWC, recognition, resume."""

import json

import pytest
import torch

from learngene.collective.learner import CollectiveModel
from learngene.config import load_config
from learngene.errors import CheckpointError, NonFiniteError
from learngene.pipeline import run_collective
from learngene.prepare import input_spec, load_data, make_split, make_stream


@pytest.fixture(scope="module")
def smoke():
    cfg = load_config("smoke")
    data = load_data(cfg)
    return cfg, data


def _model(cfg, data):
    split = make_split(cfg, data)
    stream = make_stream(cfg, data, split)
    return CollectiveModel(cfg, stream, input_spec(data, split.source))


def test_collective_smoke_run(tmp_path, smoke):
    cfg, data = smoke
    report = run_collective(cfg, tmp_path / "run", progress=False, data=data)
    assert len(report["tasks"]) == cfg.stream.tasks
    # the network grew (the first task never grows; later ones grow when unknown classes are recognized)
    widths = [t["widths"] for t in report["tasks"]]
    assert widths[-1] != widths[0] or all(not t["growth"] for t in report["tasks"])
    assert report["tasks"][-1]["params"] >= report["tasks"][0]["params"]
    for t in report["tasks"][1:]:
        assert set(t["recognition"]) >= {"recognized_unknown", "truly_new", "threshold"}
    last = report["tasks"][-1]
    assert len(last["acc_task_aware"]) == cfg.stream.tasks
    assert 0.0 <= last["open_world"]["auroc"] <= 1.0
    assert last["acc_task_aware"][-1] > 0.3  # far above chance (0.2) on the task just learned
    out = tmp_path / "run"
    for name in (
        "collective.json",
        "config.json",
        "stream.json",
        "gradient_stats.safetensors",
        "gradient_stats.json",
        "model/model.safetensors",
        "model/config.json",
        "plots/forgetting_curve.png",
        "plots/gradient_heatmap.png",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "collective.json").read_text())
    assert saved["forgetting_curve"] == report["forgetting_curve"]


def test_ewc_penalty_acts_during_training(smoke):
    cfg, data = smoke
    model = _model(cfg, data)
    model.start_task(0)
    model.train_epoch(0, 0)
    model.end_task(0)
    assert model.ewc.active
    assert float(model.ewc.penalty(model.network).detach()) == 0.0  # right after consolidation: at the anchor
    model.start_task(1)
    model.train_epoch(1, 0)
    assert (
        float(model.ewc.penalty(model.network).detach()) > 0.0
    )  # training task 1 moved away and is being pulled back


def test_resume_matches_uninterrupted(tmp_path, smoke):
    cfg, data = smoke
    full = run_collective(cfg, tmp_path / "full", progress=False, data=data)

    class Stop(Exception):
        pass

    # interrupt after task 1 epoch 0 (a mid-task checkpoint exists for epoch 1)
    m = _model(cfg, data)

    def kill(t, e):
        if (t, e) == (1, 0):
            raise Stop

    (tmp_path / "part").mkdir()
    with pytest.raises(Stop):
        m.learn(ckpt_dir=tmp_path / "part" / "checkpoints", progress=False, on_epoch=kill)
    m2 = _model(cfg, data)
    resumed = m2.learn(ckpt_dir=tmp_path / "part" / "checkpoints", resume=True, progress=False)
    for a, b in zip(full["tasks"], resumed["tasks"]):
        assert a["widths"] == b["widths"]
        assert a["acc_task_aware"] == pytest.approx(b["acc_task_aware"], abs=1e-6)
        assert [r["loss"] for r in a["epochs"]] == pytest.approx([r["loss"] for r in b["epochs"]], rel=1e-5)


def test_resume_without_checkpoint_is_clear(tmp_path, smoke):
    cfg, data = smoke
    with pytest.raises(CheckpointError, match="--resume"):
        run_collective(cfg, tmp_path / "none", resume=True, progress=False, data=data)


def test_nonfinite_loss_stops_with_location(smoke):
    cfg, data = smoke
    cfg = load_config("smoke", overrides=["train.lr=1e30"])
    model = _model(cfg, data)
    model.start_task(0)
    with pytest.raises(NonFiniteError, match=r"task 0, epoch \d+, batch \d+.*lower learning rate"):
        for e in range(3):
            model.train_epoch(0, e)


def test_nonfinite_skip_mode(smoke):
    cfg, data = smoke
    cfg = load_config("smoke", overrides=["train.lr=1e30", "train.on_nonfinite='skip'"])
    model = _model(cfg, data)
    model.start_task(0)
    rows = [model.train_epoch(0, e) for e in range(3)]
    assert sum(r["skipped_batches"] for r in rows) > 0
    assert all(torch.isfinite(p).all() for p in model.network.parameters())

"""The collective model end to end on the smoke preset (tiny): growth, EWC, recognition, resume."""

import json

import pytest
import torch

from learngene.collective.learner import from_config
from learngene.collective_run import run_collective
from learngene.config import load_config
from learngene.errors import CheckpointError, ConfigError, NonFiniteError
from learngene.prepare import input_spec, load_data, make_split, make_stream


@pytest.fixture(scope="module")
def smoke():
    cfg = load_config("smoke")
    data = load_data(cfg)
    return cfg, data


def _model(cfg, data):
    split = make_split(cfg, data)
    stream = make_stream(cfg, data, split)
    return from_config(cfg, stream, input_spec(data, split.source))


def test_collective_smoke_run(tmp_path, smoke):
    cfg, data = smoke
    report = run_collective(cfg, tmp_path / "run", progress=False, data=data)
    assert len(report["tasks"]) == cfg.stream.tasks
    # the smoke stream brings new classes every task, so the network must have grown before tasks 1 and 2
    widths = [t["widths"] for t in report["tasks"]]
    assert all(t["growth"] for t in report["tasks"][1:])
    assert all(sum(b) > sum(a) for a, b in zip(widths, widths[1:]))
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
        "model/network.json",
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
    assert model.plugin("ewc").ewc.active
    assert float(model.plugin("ewc").ewc.penalty(model.network).detach()) == 0.0  # right after consolidation: at the anchor
    model.start_task(1)
    model.train_epoch(1, 0)
    assert (
        float(model.plugin("ewc").ewc.penalty(model.network).detach()) > 0.0
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
        m.fit(ckpt_dir=tmp_path / "part" / "checkpoints", progress=False, on_epoch=kill)
    m2 = _model(cfg, data)
    resumed = m2.fit(ckpt_dir=tmp_path / "part" / "checkpoints", resume=True, progress=False)
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
    with pytest.raises(NonFiniteError, match=r"task 1/\d+, epoch \d+, batch \d+.*lower learning rate"):
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


def test_growth_noise_reaches_every_plan(smoke):
    cfg, data = smoke
    cfg = load_config("smoke", overrides=["growth.noise=0.2"])
    model = _model(cfg, data)
    assert model.plugin("growth").schedule.noise == 0.2
    report = model.fit(progress=False)
    plans = [p for t in report["tasks"] for p in t["growth"] if p["kind"] == "widen"]
    assert len(plans) == cfg.stream.tasks - 1
    assert all(p["noise"] == 0.2 and p["noise_std"] > 0 for p in plans)


def _copies_diverged(model, block: int, old_width: int) -> dict[str, float]:
    """Smallest max-difference between a replica and its closest original channel, per tensor kind."""
    b = model.network.features[block]
    out = {}
    for name, t in (("conv", b.conv.weight), ("bn_weight", b.bn.weight), ("bn_bias", b.bn.bias)):
        t = t.detach().reshape(t.shape[0], -1)
        d = (t[old_width:, None, :] - t[None, :old_width, :]).abs().amax(-1).amin(-1)  # [replicas]
        out[name] = float(d.min())
    return out


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_widened_copies_diverge_under_training(smoke, noise):
    cfg, data = smoke
    cfg = load_config("smoke", overrides=[f"growth.noise={noise}", "stream.tasks=2", "train.epochs=3"])
    model = _model(cfg, data)
    report = model.fit(progress=False)
    (plan,) = report["tasks"][1]["growth"]
    diff = _copies_diverged(model, plan["layer"], plan["old_width"])
    if noise == 0.0:  # without noise a copy and its source get the same gradient for ever
        assert max(diff.values()) < 1e-6, diff
        assert report["final"]["effective_widths"][plan["layer"]] == plan["old_width"]
    else:  # conv and BN parameters of every replica moved away from every original channel
        assert min(diff.values()) > 1e-4, diff
        assert report["final"]["effective_widths"] == report["final"]["widths"]
        assert report["final"]["effective_params"] == report["final"]["params"]


def test_default_growth_leaves_no_duplicate_channels(smoke):
    cfg, data = smoke
    report = _model(cfg, data).fit(progress=False)
    assert report["final"]["effective_widths"] == report["final"]["widths"]
    assert all(t["effective_widths"] == t["widths"] for t in report["tasks"][1:])


def test_memory_replays_earlier_classes(smoke):
    cfg, data = smoke
    cfg = load_config("smoke", overrides=["train.loss_scope='all'", "train.memory_per_class=3"])
    model = _model(cfg, data)
    model.start_task(0)
    model.train_epoch(0, 0)
    assert model.end_task(0)["memory"] == {"per_class": 3, "classes": 5, "images": 15}
    model.start_task(1)
    idx = model.train_indices(1)
    exp0, exp1 = model.stream[0], model.stream[1]
    assert len(idx) == len(exp1.train_indices) + 3 * len(set(exp0.labels) - set(exp1.labels))
    replay = set(idx.tolist()) - set(exp1.train_indices.tolist())
    assert replay <= set(exp0.train_indices.tolist())  # exemplars are training images, never test images
    assert model.train_epoch(1, 0)["images"] == len(idx)
    assert model.end_task(1)["memory"] == {"per_class": 3, "classes": 10, "images": 30}


def test_memory_needs_a_loss_over_every_class():
    with pytest.raises(ConfigError, match="loss_scope"):
        load_config("smoke", overrides=["train.memory_per_class=3"])


def test_distillation_pulls_towards_the_previous_model(smoke):
    cfg, data = smoke
    cfg = load_config("smoke", overrides=["train.distill=1.0"])
    model = _model(cfg, data)
    model.start_task(0)
    model.train_epoch(0, 0)
    model.end_task(0)
    assert model.plugin("distill").teacher is None
    model.start_task(1)
    assert model.plugin("distill").teacher is not None
    x = model.batches.prepare(model.stream[1].train_indices[:8])
    model.network.eval()
    with torch.no_grad():
        assert _kd(model, x) == pytest.approx(0.0, abs=1e-6)
    model.train_epoch(1, 0)
    model.network.eval()
    with torch.no_grad():
        assert _kd(model, x) > 1e-6


def _kd(model, x):
    from learngene.collective.plugins import Batch

    batch = Batch(t=1, epoch=0, index=0, indices=torch.arange(len(x)), x=x, y=torch.zeros(len(x)),
                  logits_all=model.network(x))
    return float(model.plugin("distill").loss(model, batch)) / model.plugin("distill").weight


def test_resume_with_memory_and_distillation_matches(tmp_path, smoke):
    cfg, data = smoke
    cfg = load_config("smoke", overrides=["train.loss_scope='all'", "train.memory_per_class=2", "train.distill=0.5"])
    full = _model(cfg, data).fit(progress=False)

    class Stop(Exception):
        pass

    def kill(t, e):
        if (t, e) == (2, 0):
            raise Stop

    with pytest.raises(Stop):
        _model(cfg, data).fit(ckpt_dir=tmp_path / "ck", progress=False, on_epoch=kill)
    resumed = _model(cfg, data).fit(ckpt_dir=tmp_path / "ck", resume=True, progress=False)
    for a, b in zip(full["tasks"], resumed["tasks"]):
        assert a["acc_task_aware"] == pytest.approx(b["acc_task_aware"], abs=1e-6)
        assert [r["loss"] for r in a["epochs"]] == pytest.approx([r["loss"] for r in b["epochs"]], rel=1e-5)
    assert full["memory"] == resumed["memory"]

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learngene.collective.recorder import GradientRecorder, layer_name
from learngene.errors import CheckpointError, DataError, LearngeneError, ModelError


class Block(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    """VGG-like naming: ``features.{i}.conv``/``.bn`` and a ``classifier``."""

    def __init__(self, widths: list[int], n_classes: int = 3) -> None:
        super().__init__()
        layers, cin = [], 1
        for w in widths:
            layers.append(Block(cin, w))
            cin = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def set_grads(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    grads = {}
    for n, p in model.named_parameters():
        p.grad = torch.randn(p.shape, generator=g) * 1e-4
        grads[n] = p.grad.clone()
    return grads


def test_layer_names():
    assert layer_name("features.3.conv.weight") == "features.3"
    assert layer_name("0.weight") == "0"
    assert layer_name("features.3.conv.bias") == "features.3.conv.bias"
    rec = GradientRecorder()
    rec.attach(Net([2, 3]))
    assert rec.attached == ["features.0", "features.1"]  # only 4-D conv kernels by default


@pytest.mark.parametrize("signed", [False, True])
def test_fraction_and_norm_match_direct_computation(signed):
    torch.manual_seed(0)
    model = Net([2, 3])
    rec = GradientRecorder(threshold=1e-4, signed=signed)
    rec.attach(model)
    g1 = set_grads(model, 1)
    rec.after_backward()
    g2 = set_grads(model, 2)
    rec.after_backward()
    out = rec.end_epoch(task=0, epoch=0)
    for layer in ("features.0", "features.1"):
        per_batch = []
        for g in (g1, g2):
            w = g[f"{layer}.conv.weight"]
            hit = w > 1e-4 if signed else w.abs() > 1e-4
            per_batch.append((hit.double().mean().item(), w.double().norm().item()))
        assert out[layer]["fraction"] == pytest.approx(sum(b[0] for b in per_batch) / 2, abs=1e-12)
        assert out[layer]["grad_norm"] == pytest.approx(sum(b[1] for b in per_batch) / 2, rel=1e-5)
    # signed and unsigned really differ (random grads are symmetric around 0)
    assert 0.05 < out["features.0"]["fraction"] < 0.95
    rec2 = rec.records[-1]
    assert rec2["task"] == 0 and rec2["epoch"] == 0 and rec2["layers"] == ["features.0", "features.1"]


def test_real_backward_and_reset_between_epochs():
    torch.manual_seed(0)
    model = Net([2, 2])
    rec = GradientRecorder(threshold=1e-3)
    rec.attach(model)
    x, y = torch.randn(4, 1, 5, 5), torch.tensor([0, 1, 2, 0])
    F.cross_entropy(model(x), y).backward()
    rec.after_backward()
    w = model.features[1].conv.weight.grad
    first = rec.end_epoch(0, 0)
    assert first["features.1"]["fraction"] == pytest.approx((w.abs() > 1e-3).double().mean().item())
    assert first["features.1"]["grad_norm"] == pytest.approx(w.norm().item(), rel=1e-5)
    model.features[1].conv.weight.grad = torch.zeros_like(w)
    rec.after_backward()  # only this batch counts in epoch 1
    second = rec.end_epoch(0, 1)
    assert second["features.1"] == {"fraction": 0.0, "grad_norm": 0.0}
    assert len(rec.records) == 2


def test_growth_new_layer_and_wider_layer_with_nan_padding():
    small = Net([2, 3])
    rec = GradientRecorder()
    rec.attach(small)
    set_grads(small, 0)
    rec.after_backward()
    rec.end_epoch(0, 0)

    big = Net([4, 3, 3])  # widened features.0, new layer features.2
    rec.attach(big)
    g = set_grads(big, 1)
    rec.after_backward()
    out = rec.end_epoch(1, 0)
    w0 = g["features.0.conv.weight"]
    assert out["features.0"]["fraction"] == pytest.approx((w0.abs() > 1e-4).double().mean().item())

    # a layer inserted in the middle (deepening) slots in after its predecessor
    named = nn.Module()
    named.features = nn.ModuleDict({"0": Block(1, 4), "0b": Block(4, 4), "1": Block(4, 3)})
    rec.attach(named)
    set_grads(named, 2)
    rec.after_backward()
    rec.end_epoch(2, 0)

    assert rec.layer_names == ["features.0", "features.0b", "features.1", "features.2"]
    t = rec.to_tensor()
    assert t.shape == (3, 4)
    assert torch.isnan(t[0, 1]) and torch.isnan(t[0, 3]) and torch.isnan(t[1, 1]) and torch.isnan(t[2, 3])
    assert not torch.isnan(t[1, 3]) and not torch.isnan(t[2, 1])
    pt = rec.per_task("grad_norm")
    assert pt.shape == (3, 4) and rec.tasks == [0, 1, 2]


def test_missing_grad_counts_no_batch():
    model = Net([2, 2])
    rec = GradientRecorder()
    rec.attach(model)
    set_grads(model, 0)
    model.features[0].conv.weight.grad = None  # frozen/unused layer
    rec.after_backward()
    out = rec.end_epoch(0, 0)
    assert math.isnan(out["features.0"]["fraction"]) and math.isnan(out["features.0"]["grad_norm"])
    assert not math.isnan(out["features.1"]["fraction"])


def test_per_task_is_nan_aware_mean_over_epochs():
    rec = GradientRecorder()
    rec.load_state_dict(
        {
            "threshold": 1e-4,
            "signed": False,
            "records": [
                {"task": 0, "epoch": 0, "layers": ["a"], "fraction": [0.2], "grad_norm": [1.0]},
                {
                    "task": 0,
                    "epoch": 1,
                    "layers": ["a", "b"],
                    "fraction": [0.4, 0.8],
                    "grad_norm": [3.0, 2.0],
                },
                {
                    "task": 1,
                    "epoch": 0,
                    "layers": ["a", "b"],
                    "fraction": [0.1, float("nan")],
                    "grad_norm": [1, 1],
                },
            ],
        }
    )
    pt = rec.per_task("fraction")
    torch.testing.assert_close(pt[0], torch.tensor([0.3, 0.8], dtype=torch.float64))
    assert pt[1, 0].item() == pytest.approx(0.1) and torch.isnan(pt[1, 1])


def test_save_load_round_trip_and_errors(tmp_path):
    model = Net([2, 3])
    rec = GradientRecorder(threshold=2e-4, signed=True)
    rec.attach(model)
    for task in range(2):
        if task == 1:
            model = Net([2, 3, 2])
            rec.attach(model)
        for epoch in range(2):
            set_grads(model, 10 * task + epoch)
            rec.after_backward()
            rec.end_epoch(task, epoch)
    rec.save(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "gradient_stats.json").read_text())
    assert meta["layer_names"] == rec.layer_names and meta["tasks"] == [0, 0, 1, 1]
    back = GradientRecorder.load(tmp_path / "run")
    assert (back.threshold, back.signed) == (2e-4, True)
    assert back.layer_names == rec.layer_names
    assert [r["layers"] for r in back.records] == [r["layers"] for r in rec.records]
    for stat in ("fraction", "grad_norm"):
        torch.testing.assert_close(back.to_tensor(stat), rec.to_tensor(stat), equal_nan=True)

    with pytest.raises(DataError, match="gradient_stats"):
        GradientRecorder.load(tmp_path / "nowhere")
    (tmp_path / "run" / "gradient_stats.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="tampered: sha256 mismatch"):  # checked like every artifact
        GradientRecorder.load(tmp_path / "run")
    rec.save(tmp_path / "run2")
    meta["tasks"] = [0]
    (tmp_path / "run2" / "gradient_stats.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="was edited after learngene wrote it: 'tasks' differs"):
        GradientRecorder.load(tmp_path / "run2")
    # written so by another tool, checksums and all: the recorder's own check still refuses it
    from learngene.artifacts import GRADIENT_STATS, fields_sha256

    reserved = ("format", "version", "fields_sha256", "tensors", "sha256")
    meta["fields_sha256"] = fields_sha256(GRADIENT_STATS, {k: v for k, v in meta.items() if k not in reserved})
    (tmp_path / "run2" / "gradient_stats.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="inconsistent"):
        GradientRecorder.load(tmp_path / "run2")


def test_state_dict_round_trip_weights_only(tmp_path):
    model = Net([2])
    rec = GradientRecorder()
    rec.attach(model)
    set_grads(model, 0)
    rec.after_backward()
    rec.end_epoch(0, 0)
    rec.end_epoch(0, 1)  # an epoch without batches: NaN, must survive the round trip
    torch.save(rec.state_dict(), tmp_path / "r.pt")
    other = GradientRecorder()
    other.load_state_dict(torch.load(tmp_path / "r.pt", weights_only=True))
    torch.testing.assert_close(other.to_tensor(), rec.to_tensor(), equal_nan=True)
    assert other.layer_names == rec.layer_names
    with pytest.raises(CheckpointError):
        other.load_state_dict({"threshold": 1e-4})


def test_heatmap_written(tmp_path):
    model = Net([2, 3])
    rec = GradientRecorder()
    with pytest.raises(DataError, match="no gradient statistics"):
        rec.plot_heatmap(tmp_path / "h.png")
    rec.attach(model)
    for task in range(2):
        set_grads(model, task)
        rec.after_backward()
        rec.end_epoch(task, 0)
    out = tmp_path / "plots" / "heat.png"
    rec.plot_heatmap(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000


def test_usage_errors():
    rec = GradientRecorder()
    with pytest.raises(LearngeneError, match="attach"):
        rec.after_backward()
    with pytest.raises(ModelError, match="layer_filter"):
        rec.attach(nn.Linear(2, 2))

"""The layer-wise fast path of diagonal_fisher: same numbers as the per-sample loop, and it steps aside for
models it does not understand (the vmap path takes over)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learngene.collective import fisher as ewc_mod
from learngene.collective.fisher import diagonal_fisher, diagonal_fisher_loop
from learngene.models import create_model


def _nontrivial_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


def _data(n: int, c: int, size: int, classes: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in b:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-4, msg=k)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record whether the layer-wise path completed on each call."""
    calls: list[bool] = []
    real = ewc_mod._layerwise_fisher_sums

    def wrapped(*args, **kwargs):
        done = real(*args, **kwargs)
        calls.append(done)
        return done

    monkeypatch.setattr(ewc_mod, "_layerwise_fisher_sums", wrapped)
    return calls


@pytest.mark.parametrize("channels_last", [False, True])
def test_layerwise_matches_loop_on_test_vgg(monkeypatch, channels_last):
    torch.manual_seed(0)
    model = _nontrivial_bn(create_model("test_vgg", in_channels=2, num_classes=4))
    x, y = _data(7, 2, 16, 4)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    calls = _spy(monkeypatch)
    fast = diagonal_fisher(model, x, y, batch_size=3)  # 3 + 3 + 1
    assert calls == [True]
    ref = diagonal_fisher_loop(model, x, y)
    _assert_same(fast, ref)
    assert model.training  # flags restored
    assert all(p.grad is None for p in model.parameters())  # .grad left alone


def test_layerwise_with_filter_and_frozen_layers(monkeypatch):
    torch.manual_seed(1)
    model = _nontrivial_bn(create_model("vgg4", in_channels=1, image_size=16, num_classes=3, widths=[8, 8, 8, 8]))
    model.features[0].conv.weight.requires_grad_(False)
    x, y = _data(5, 1, 16, 3)
    calls = _spy(monkeypatch)

    def only_bias_and_bn(name: str, p: nn.Parameter) -> bool:
        return name.endswith("bias") or ".bn." in name

    fast = diagonal_fisher(model, x, y, params=only_bias_and_bn)
    ref = diagonal_fisher_loop(model, x, y, params=only_bias_and_bn)
    assert calls == [True]
    _assert_same(fast, ref)
    assert "features.0.conv.weight" not in fast


def test_layerwise_bn1d_and_linear_only_model(monkeypatch):
    torch.manual_seed(2)
    model = _nontrivial_bn(nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)))
    x, y = _data(6, 3, 2, 3)
    calls = _spy(monkeypatch)
    _assert_same(diagonal_fisher(model, x, y, batch_size=4), diagonal_fisher_loop(model, x, y))
    assert calls == [True]


class Opaque(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.lin(torch.relu(self.lin(x.flatten(1))))))


def test_unknown_module_uses_vmap(monkeypatch):
    torch.manual_seed(3)
    model = Opaque(_nontrivial_bn(create_model("test_vgg", in_channels=1, num_classes=3)))
    x, y = _data(4, 1, 16, 3)
    calls = _spy(monkeypatch)
    _assert_same(diagonal_fisher(model, x, y), diagonal_fisher_loop(model, x, y))
    assert calls == []  # never tried: the root module is not a known sample-wise layer


def test_inplace_after_layer_falls_back(monkeypatch):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.ReLU(inplace=True), nn.Linear(5, 3))
    x, y = _data(5, 2, 2, 3)
    calls = _spy(monkeypatch)
    _assert_same(diagonal_fisher(model, x, y), diagonal_fisher_loop(model, x, y))
    assert calls == [False]  # tried, saw the in-place ReLU change the Linear's output, handed over to vmap


def test_module_called_twice_falls_back(monkeypatch):
    torch.manual_seed(5)
    model = nn.Sequential(Shared())
    x, y = _data(5, 1, 2, 3)
    ref = diagonal_fisher_loop(model, x, y)  # first: a broken vmap path would corrupt the model
    _assert_same(diagonal_fisher(model, x, y), ref)
    # Shared is not a known module type: the vmap path is used from the start
    lin = nn.Linear(4, 4)
    twice = nn.Sequential(nn.Flatten(), lin, nn.ReLU(), lin, nn.ReLU(), nn.Linear(4, 3))
    calls = _spy(monkeypatch)
    ref = diagonal_fisher_loop(twice, x, y)
    _assert_same(diagonal_fisher(twice, x, y), ref)
    assert calls == [False]  # the shared Linear fires its hook twice per forward


def test_shared_module_keeps_its_parameters():
    """functional_call (vmap path) on a module registered twice must not leave plain tensors behind."""
    torch.manual_seed(6)
    lin = nn.Linear(4, 4)
    model = nn.Sequential(Opaque(nn.Flatten()), lin, nn.ReLU(), lin, nn.ReLU(), nn.Linear(4, 3))
    x, y = _data(5, 1, 2, 3)
    w, b = lin.weight, lin.bias
    ref = diagonal_fisher_loop(model, x, y)
    _assert_same(diagonal_fisher(model, x, y), ref)
    assert lin.weight is w and lin.bias is b and isinstance(lin.weight, nn.Parameter)
    _assert_same(diagonal_fisher_loop(model, x, y), ref)  # the model still trains the same parameters

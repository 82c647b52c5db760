from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learngene.collective.ewc import EWC
from learngene.collective.fisher import diagonal_fisher, diagonal_fisher_loop
from learngene.errors import CheckpointError, ConfigError, DataError, ModelError


class Tiny(nn.Module):
    """conv + BN feature extractor and a ``classifier`` head, named like the real collective model."""

    def __init__(self, width: int = 4, n_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(width * 4, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def make_model(width: int = 4, seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    m = Tiny(width)
    bn = m.features[1]
    with torch.no_grad():  # non-trivial BN state: eval-mode Fisher must use these, not batch statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return m


def make_data(n: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_vmap_fisher_equals_per_sample_loop():
    model = make_model()
    model.train()
    x, y = make_data(10)
    bn_before = model.features[1].running_mean.clone()
    fast = diagonal_fisher(model, x, y, batch_size=4)  # 4 + 4 + 2: chunk remainder covered
    ref = diagonal_fisher_loop(model, x, y)
    assert set(fast) == {n for n, _ in model.named_parameters()}
    for name in ref:
        assert fast[name].shape == ref[name].shape
        torch.testing.assert_close(fast[name], ref[name], atol=1e-5, rtol=1e-4)
    assert all(bool((f >= 0).all()) for f in fast.values())
    assert sum(float(f.sum()) for f in fast.values()) > 1e-4  # not trivially zero
    assert model.training and model.features[1].training  # flags restored
    torch.testing.assert_close(model.features[1].running_mean, bn_before)  # BN stats untouched


def test_fisher_is_mean_of_squared_per_sample_grads_and_batch_independent():
    model = make_model()
    x, y = make_data(3)
    f1 = diagonal_fisher(model, x, y, batch_size=1)
    f3 = diagonal_fisher(model, x, y, batch_size=64)
    model.eval()
    w = model.classifier.weight
    expected = torch.zeros_like(w)
    for i in range(3):
        (g,) = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), [w])
        expected += g.pow(2) / 3
    torch.testing.assert_close(f1["classifier.weight"], expected, atol=1e-6, rtol=1e-5)
    for name in f1:
        torch.testing.assert_close(f1[name], f3[name], atol=1e-6, rtol=1e-5)


def test_fisher_respects_filter_keeps_grads_and_submodule_flags():
    model = make_model()
    model.train()
    model.features[1].eval()  # a deliberately frozen BN must stay in eval mode
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    fisher = diagonal_fisher(model, *make_data(4), params=lambda n, p: n.startswith("features.0"))
    assert set(fisher) == {"features.0.weight", "features.0.bias"}
    assert not any(f.requires_grad for f in fisher.values())  # not tied to the unselected params' graph
    assert all(bool((p.grad == 7.0).all()) for p in model.parameters())
    assert model.training and not model.features[1].training


def test_fisher_bad_input_is_a_clear_error():
    model = make_model()
    x, y = make_data(4)
    with pytest.raises(DataError, match="outputs 3 classes"):
        diagonal_fisher(model, x, y + 5)
    with pytest.raises(DataError, match="at least one sample"):
        diagonal_fisher(model, x[:0], y[:0])
    with pytest.raises(DataError, match="one entry per input"):
        diagonal_fisher(model, x, y[:2])
    with pytest.raises(ModelError, match="no trainable parameter"):
        diagonal_fisher(model, x, y, params=lambda n, p: False)


def manual_penalty(model: nn.Module, ewc: EWC) -> torch.Tensor:
    total = torch.zeros(())
    params = dict(model.named_parameters())
    for name, a in ewc.anchor.items():
        total = total + (ewc.fisher[name] * (params[name].detach() - a) ** 2).sum()
    return total * ewc.lam / 2


def test_penalty_zero_before_consolidate_then_pulls_back():
    model = make_model()
    ewc = EWC(lam=50.0)
    p0 = ewc.penalty(model)
    assert not ewc.active and p0.dim() == 0 and p0.item() == 0.0
    assert p0.device == next(model.parameters()).device

    ewc.consolidate(model, *make_data(16), batch_size=8)
    assert ewc.active
    assert not any(n.startswith("classifier.") for n in ewc.anchor)  # the growing head is free by default
    assert ewc.penalty(model).item() == 0.0  # at the anchor

    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    assert ewc.penalty(model).item() == 0.0  # classifier excluded
    torch.manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("features"):
                p.add_(0.3 * torch.randn_like(p))
    pen = ewc.penalty(model)
    assert pen.item() > 0
    torch.testing.assert_close(pen.detach(), manual_penalty(model, ewc))

    def dist() -> float:
        params = dict(model.named_parameters())
        return sum(float((params[n].detach() - a).pow(2).sum()) for n, a in ewc.anchor.items())

    fmax = max(float(f.max()) for f in ewc.fisher.values())
    opt = torch.optim.SGD(
        [p for n, p in model.named_parameters() if n in ewc.anchor], lr=0.5 / (ewc.lam * fmax)
    )
    start = dist()
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = ewc.penalty(model)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert dist() < start
    assert losses[-1] < losses[0]


def test_consolidate_accumulates_with_decay():
    model = make_model()
    x, y = make_data(8)
    f_new = diagonal_fisher(model, x, y, params=lambda n, p: not n.startswith("classifier."))
    ewc = EWC(lam=1.0, decay=0.5)
    ewc.consolidate(model, x, y)
    ewc.consolidate(model, x, y)
    assert ewc.n_consolidations == 2
    for name, f in f_new.items():
        torch.testing.assert_close(ewc.fisher[name], 1.5 * f)


class PadPlan:
    """Fake growth plan: widens every ``features.0``/``features.1`` tensor by ``extra`` output units."""

    def __init__(self, extra: int = 2) -> None:
        self.extra = extra
        self.kinds: list[str] = []

    def transform_state(self, state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
        self.kinds.append(kind)
        out = {}
        for name, t in state.items():
            pad = torch.zeros((self.extra, *t.shape[1:]), dtype=t.dtype)
            out[name] = torch.cat([t, pad]) if name.startswith(("features.0", "features.1")) else t
        return out


def grow(model: Tiny, width: int) -> Tiny:
    """A wider copy: old units copied into the leading slice, new units random."""
    big = make_model(width, seed=5)
    with torch.no_grad():
        for (n, p), (_, q) in zip(model.named_parameters(), big.named_parameters()):
            if n.startswith("features"):
                q[tuple(slice(0, s) for s in p.shape)] = p
    return big


def test_on_growth_keeps_shapes_consistent():
    model = make_model(4)
    ewc = EWC(lam=10.0)
    ewc.consolidate(model, *make_data(8))
    plan = PadPlan(2)
    ewc.on_growth(plan)
    assert plan.kinds == ["param", "importance"]
    big = grow(model, 6)
    params = dict(big.named_parameters())
    for name, a in ewc.anchor.items():
        assert a.shape == params[name].shape == ewc.fisher[name].shape
    assert ewc.penalty(big).item() == 0.0  # new units carry zero importance
    with torch.no_grad():
        big.features[0].weight[4:].add_(1.0)  # new units are free
    assert ewc.penalty(big).item() == 0.0
    with torch.no_grad():
        big.features[0].weight[:4].add_(0.5)
    assert ewc.penalty(big).item() > 0


def test_on_growth_rejects_non_plan_and_inconsistent_plan():
    ewc = EWC(lam=1.0)
    ewc.on_growth(object())  # nothing consolidated yet: no-op
    ewc.consolidate(make_model(), *make_data(4))
    with pytest.raises(ConfigError, match="transform_state"):
        ewc.on_growth(object())

    class Bad:
        def transform_state(self, state, kind):
            return {k: (torch.cat([v, v]) if kind == "param" else v) for k, v in state.items()}

    with pytest.raises(ModelError, match="grow both alike"):
        ewc.on_growth(Bad())


def test_overlap_slice_fallback_without_plan():
    model = make_model(4)
    x, y = make_data(8)
    ewc = EWC(lam=3.0)
    ewc.consolidate(model, x, y)
    old_f = ewc.fisher
    big = grow(model, 6)  # grew, but on_growth was not called
    assert ewc.penalty(big).item() == 0.0
    with torch.no_grad():
        big.features[0].weight[4:].add_(1.0)
    assert ewc.penalty(big).item() == 0.0
    with torch.no_grad():
        big.features[0].weight[:4].add_(0.25)
    expected = 3.0 / 2 * (old_f["features.0.weight"] * 0.25**2).sum()
    torch.testing.assert_close(ewc.penalty(big).detach(), expected)

    # consolidating on the grown model adds the old Fisher on the overlap only
    f_new = diagonal_fisher(big, x, y, params=lambda n, p: not n.startswith("classifier."))
    ewc.consolidate(big, x, y)
    merged = ewc.fisher["features.0.weight"]
    torch.testing.assert_close(merged[:4], f_new["features.0.weight"][:4] + old_f["features.0.weight"])
    torch.testing.assert_close(merged[4:], f_new["features.0.weight"][4:])


def test_rank_change_is_a_model_error():
    ewc = EWC(lam=1.0, params=lambda n, p: n == "classifier.bias")
    model = make_model()
    ewc.consolidate(model, *make_data(4))
    model.classifier.bias = nn.Parameter(torch.zeros(3, 1))
    with pytest.raises(ModelError, match="on_growth"):
        ewc.penalty(model)


def test_state_dict_round_trip_weights_only(tmp_path):
    model = make_model()
    ewc = EWC(lam=7.0, decay=0.9)
    ewc.consolidate(model, *make_data(6))
    with torch.no_grad():
        model.features[0].weight.add_(0.1)
    path = tmp_path / "ewc.pt"
    torch.save(ewc.state_dict(), path)
    other = EWC(lam=0.0)
    other.load_state_dict(torch.load(path, weights_only=True))
    assert (other.lam, other.decay, other.n_consolidations) == (7.0, 0.9, 1)
    torch.testing.assert_close(other.penalty(model), ewc.penalty(model))
    with pytest.raises(CheckpointError, match="state_dict"):
        other.load_state_dict({"lam": 1.0})


def test_set_reference_anchors_current_params():
    model = make_model()
    imp = {"features.0.weight": torch.full_like(model.features[0].weight, 2.0)}
    ewc = EWC(lam=1.0)
    ewc.set_reference(model, imp)
    assert ewc.active and ewc.penalty(model).item() == 0.0
    with torch.no_grad():
        model.features[0].weight.add_(0.5)
        model.features[0].bias.add_(5.0)  # not referenced: free
    expected = 0.5 * (2.0 * 0.25 * model.features[0].weight.numel())
    assert ewc.penalty(model).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ModelError, match="no parameter named"):
        ewc.set_reference(model, {"nope.weight": torch.ones(1)})
    with pytest.raises(ModelError, match="shape"):
        ewc.set_reference(model, {"features.0.weight": torch.ones(2)})


def test_bad_hyperparameters():
    with pytest.raises(ConfigError):
        EWC(lam=-1.0)
    with pytest.raises(ConfigError):
        EWC(lam=1.0, decay=float("nan"))

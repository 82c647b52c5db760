"""The gradient statistic must not measure the growth schedule, nor the EWC pull (issue 9).

A function-preserving Net2Net step leaves the network's function (and so what it still has to learn) as it
was; the recorder's per-layer numbers must stay put too. The models run in float64 so that the only
differences left between the grown and the original network are rounding at ~1e-15, far below the gap
between the threshold and the nearest gradient entry.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learngene.collective.ewc import EWC
from learngene.collective.recorder import GradientRecorder
from learngene.errors import CheckpointError, ConfigError, ModelError
from learngene.models import create_model
from learngene.models.growth import GrowthPlan, plan_deepen, plan_expand_classes, plan_widen
from learngene.models.vgg import ExpandableVGG

Stats = dict[str, dict[str, float]]


def make_net(seed: int = 0) -> ExpandableVGG:
    torch.manual_seed(seed)
    return create_model("test_vgg", dropout=0.0).double()  # no dropout: two forwards see the same function


def batch(seed: int = 1, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g, dtype=torch.float64), torch.randint(0, 5, (n,), generator=g)


def backward(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, extra: Callable[[], torch.Tensor] | None = None
):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    if extra is not None:
        loss = loss + extra()
    loss.backward()


def measure(model: nn.Module, rec: GradientRecorder, x: torch.Tensor, y: torch.Tensor) -> Stats:
    rec.attach(model)
    backward(model, x, y)
    rec.after_backward()
    return rec.end_epoch(0, 0)


def threshold_for(model: nn.Module, layer: int, x: torch.Tensor, y: torch.Tensor) -> float:
    """Between the two middle |grad| entries of ``layer``: a fraction near 1/2 that rounding cannot flip."""
    backward(model, x, y)
    v = model.features[layer].conv.weight.grad.abs().flatten().sort().values
    mid = v.numel() // 2
    model.zero_grad(set_to_none=True)
    return float((v[mid - 1] * v[mid]).sqrt())


def assert_same(got: Stats, want: Stats) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name]["fraction"] == pytest.approx(want[name]["fraction"], abs=1e-9), name
        assert got[name]["grad_norm"] == pytest.approx(want[name]["grad_norm"], rel=1e-9), name


def grow(model: ExpandableVGG, plans: list[Callable[[ExpandableVGG], GrowthPlan]], rec: GradientRecorder):
    for make in plans:
        plan = make(model)
        plan.apply(model)
        rec.on_growth(plan)


@pytest.mark.parametrize(
    ("layer", "width"),
    [
        (0, 8),  # every unit split in two; features.1 is the (conv) consumer
        (1, 10),  # 6 -> 10: four units split in two, two kept (unequal counts)
        (1, 17),  # 6 -> 17: units split in two and in three
        (2, 13),  # last block: the consumer is head.fc0 (linear, 2x2 columns per channel)
    ],
)
def test_widening_leaves_the_statistic_unchanged(layer, width):
    net = make_net()
    net.train()  # replicated channels get identical batch statistics: preserved in train mode too
    x, y = batch()
    thr = threshold_for(net, layer, x, y)
    before = measure(net, GradientRecorder(thr), x, y)

    grown, rec = copy.deepcopy(net), GradientRecorder(thr)
    grow(grown, [lambda m: plan_widen(m, layer, width, generator=torch.Generator().manual_seed(3))], rec)
    with torch.no_grad():
        torch.testing.assert_close(grown(x), net(x), rtol=1e-12, atol=1e-12)  # really function-identical

    assert_same(measure(grown, rec, x, y), before)

    # without the correction the widened layer's numbers do move: the test really exercises it
    raw = measure(grown, GradientRecorder(thr), x, y)
    name = f"features.{layer}"
    assert raw[name]["fraction"] < before[name]["fraction"] - 0.1
    assert raw[name]["grad_norm"] < before[name]["grad_norm"] * 0.9
    if layer + 1 < len(net.features):  # the conv consumer's columns are duplicated: its norm grows
        assert raw[f"features.{layer + 1}"]["grad_norm"] > before[f"features.{layer + 1}"]["grad_norm"] * 1.1


def test_growth_noise_makes_the_invariance_approximate():
    """The README and recorder docstring say: exact only without noise. With the default noise 0.05 the copies'
    gradients differ, and the corrected statistic moves a little (not by the split's factor)."""
    net = make_net()
    net.train()
    x, y = batch()
    thr = threshold_for(net, 1, x, y)
    before = measure(net, GradientRecorder(thr), x, y)["features.1"]
    grown, rec = copy.deepcopy(net), GradientRecorder(thr)
    grow(grown, [lambda m: plan_widen(m, 1, 10, generator=torch.Generator().manual_seed(3), noise=0.05)], rec)
    after = measure(grown, rec, x, y)["features.1"]
    assert before["fraction"] == 0.5 and 0.001 < abs(after["fraction"] - 0.5) < 0.05
    assert after["grad_norm"] == pytest.approx(before["grad_norm"], rel=0.05) and after["grad_norm"] != before["grad_norm"]


def test_successive_widenings_of_a_layer_and_its_neighbour():
    net = make_net()
    net.train()
    x, y = batch()
    thr = threshold_for(net, 1, x, y)
    before = measure(net, GradientRecorder(thr), x, y)
    g = torch.Generator().manual_seed(5)
    grown, rec = copy.deepcopy(net), GradientRecorder(thr)
    grow(
        grown,
        [
            lambda m: plan_widen(m, 1, 9, generator=g),  # some units x2
            lambda m: plan_widen(m, 1, 23, generator=g),  # copies of copies: multiplicities 2..6
            lambda m: plan_widen(m, 0, 7, generator=g),  # features.1 now has input AND output multiplicities
        ],
        rec,
    )
    m_out, _ = rec.multiplicities("features.1.conv.weight")
    assert m_out is not None and max(m_out) >= 4 and len(set(m_out)) >= 3  # a non-trivial mix of splits
    assert_same(measure(grown, rec, x, y), before)
    raw = measure(grown, GradientRecorder(thr), x, y)
    assert raw["features.1"]["fraction"] < before["features.1"]["fraction"] - 0.1


def test_deepen_shifts_and_inherits_multiplicities():
    """Deepening keeps the eval-mode function: grown + deepened must read like the plain net deepened alike."""
    net = make_net()
    net.eval()  # the identity block's BatchNorm is the identity in eval mode only
    x, y = batch()
    thr = threshold_for(net, 1, x, y)
    plain_before = measure(net, GradientRecorder(thr), x, y)

    ref, ref_rec = copy.deepcopy(net), GradientRecorder(thr)
    grow(ref, [lambda m: plan_deepen(m, 0), lambda m: plan_deepen(m, 2)], ref_rec)
    want = measure(ref, ref_rec, x, y)
    # the existing layers' numbers do not move under deepening (renamed: features.1 -> features.2, ...)
    for old, new in (
        ("features.0", "features.0"),
        ("features.1", "features.2"),
        ("features.2", "features.4"),
    ):
        assert want[new]["fraction"] == pytest.approx(plain_before[old]["fraction"], abs=1e-9)
        assert want[new]["grad_norm"] == pytest.approx(plain_before[old]["grad_norm"], rel=1e-9)

    g = torch.Generator().manual_seed(7)
    grown, rec = copy.deepcopy(net), GradientRecorder(thr)
    grow(
        grown,
        [
            lambda m: plan_widen(m, 1, 11, generator=g),
            lambda m: plan_deepen(m, 0),  # the widened block moves to features.2: its bookkeeping must follow
            lambda m: plan_deepen(m, 2),  # inserted after the widened block: its units are copies too
        ],
        rec,
    )
    with torch.no_grad():
        torch.testing.assert_close(grown(x), ref(x), rtol=1e-12, atol=1e-12)
    assert rec.multiplicities("features.1.conv.weight") == (None, None)  # the fresh identity block
    assert_same(measure(grown, rec, x, y), want)
    raw = measure(grown, GradientRecorder(thr), x, y)
    assert raw["features.2"]["fraction"] < want["features.2"]["fraction"] - 0.1  # the shifted widened block
    assert raw["features.2"]["grad_norm"] < 0.9 * want["features.2"]["grad_norm"]
    # the block inheriting its multiplicities (rows 1/m, duplicated columns: only the fraction shows it)
    assert raw["features.3"]["fraction"] < 0.6 * want["features.3"]["fraction"]


def test_classes_plan_changes_nothing_and_unknown_plans_are_refused():
    net = make_net()
    rec = GradientRecorder()
    grow(net, [lambda m: plan_widen(m, 2, 12, generator=torch.Generator().manual_seed(0))], rec)
    state = rec.state_dict()["multiplicity"]
    rec.on_growth(plan_expand_classes(net, 9, torch.Generator().manual_seed(1)))
    assert rec.state_dict()["multiplicity"] == state
    with pytest.raises(ConfigError, match="widen/deepen/classes"):
        rec.on_growth(object())


def test_missed_growth_step_is_reported_at_attach():
    net = make_net()
    rec = GradientRecorder()
    grow(net, [lambda m: plan_widen(m, 1, 9, generator=torch.Generator().manual_seed(0))], rec)
    widen_again = plan_widen(net, 1, 12, generator=torch.Generator().manual_seed(1))
    widen_again.apply(net)  # ... but the recorder is not told
    with pytest.raises(ModelError, match="on_growth"):
        rec.attach(net)


def test_frozen_grown_layer_and_partial_batches():
    """The weighted path follows the layer positions when some watched layer has no gradient."""
    net = make_net()
    net.train()
    x, y = batch()
    thr = threshold_for(net, 2, x, y)
    before = measure(net, GradientRecorder(thr), x, y)
    grown, rec = copy.deepcopy(net), GradientRecorder(thr)
    grow(grown, [lambda m: plan_widen(m, 2, 16, generator=torch.Generator().manual_seed(2))], rec)
    rec.attach(grown)
    backward(grown, x, y)
    grown.features[1].conv.weight.grad = None
    rec.after_backward()
    out = rec.end_epoch(0, 0)
    assert out["features.1"]["grad_norm"] != out["features.1"]["grad_norm"]  # NaN: no batch
    for name in ("features.0", "features.2"):
        assert out[name]["fraction"] == pytest.approx(before[name]["fraction"], abs=1e-9)
        assert out[name]["grad_norm"] == pytest.approx(before[name]["grad_norm"], rel=1e-9)


def test_multiplicities_survive_state_dict_and_save(tmp_path):
    net = make_net()
    net.train()
    x, y = batch()
    thr = threshold_for(net, 1, x, y)
    rec = GradientRecorder(thr)
    g = torch.Generator().manual_seed(4)
    grow(net, [lambda m: plan_widen(m, 1, 10, generator=g), lambda m: plan_widen(m, 0, 6, generator=g)], rec)
    want = measure(net, rec, x, y)

    torch.save(rec.state_dict(), tmp_path / "r.pt")
    resumed = GradientRecorder()
    resumed.load_state_dict(torch.load(tmp_path / "r.pt", weights_only=True))
    assert resumed.multiplicities("features.1.conv.weight") == rec.multiplicities("features.1.conv.weight")
    assert_same(measure(net, resumed, x, y), want)

    rec.save(tmp_path / "run")
    loaded = GradientRecorder.load(tmp_path / "run")
    assert_same(measure(net, loaded, x, y), want)

    # older checkpoints have no multiplicities: all ones, as before
    old = rec.state_dict()
    del old["multiplicity"]
    legacy = GradientRecorder(thr)
    legacy.load_state_dict(old)
    assert legacy.multiplicities("features.1.conv.weight") == (None, None)
    bad = rec.state_dict()
    bad["multiplicity"]["out"]["features.1.conv.weight"][0] = 0
    with pytest.raises(CheckpointError, match="multiplicity"):
        GradientRecorder().load_state_dict(bad)


# -- EWC: the recorded gradient is the task loss's --------------------------------------------------------------
def consolidated(net: ExpandableVGG, lam: float = 40.0, normalize: bool = False, seed: int = 9) -> EWC:
    """An EWC anchored at the current net, then the net moved away so the penalty is far from zero."""
    ewc = EWC(lam, normalize=normalize)
    x, y = batch(seed=seed, n=12)
    ewc.consolidate(net, x, y, batch_size=6)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    return ewc


def autograd_of_penalty(ewc: EWC, net: nn.Module) -> dict[str, torch.Tensor]:
    params = dict(net.named_parameters())
    names = [n for n in params if n in ewc.anchor]
    grads = torch.autograd.grad(ewc.penalty(net), [params[n] for n in names])
    return dict(zip(names, grads))


@pytest.mark.parametrize("normalize", [False, True])
def test_penalty_grads_equal_autograd(normalize):
    net = make_net()
    net.eval()
    ewc = consolidated(net, normalize=normalize)
    got, want = ewc.penalty_grads(net), autograd_of_penalty(ewc, net)
    assert set(got) == set(want) and not any(n.startswith("classifier") for n in got)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-15)
    assert float(sum(g.abs().sum() for g in got.values())) > 0
    sub = ewc.penalty_grads(net, names=["features.1.conv.weight"])
    assert list(sub) == ["features.1.conv.weight"]
    assert EWC(1.0).penalty_grads(net) == {} and EWC(0.0).penalty_grads(net) == {}


@pytest.mark.parametrize("tell_ewc", [True, False])
def test_penalty_grads_after_growth(tell_ewc):
    """Shapes change: mapped anchors (on_growth told) or overlap slices (it was not) -- autograd agrees."""
    net = make_net()
    net.eval()
    ewc = consolidated(net)
    g = torch.Generator().manual_seed(11)
    steps: list[Callable[[ExpandableVGG], GrowthPlan]] = [
        lambda m: plan_widen(m, 1, 10, generator=g),
        lambda m: plan_deepen(m, 0),
        lambda m: plan_widen(m, 0, 7, generator=g),
    ]
    for make in steps:
        plan = make(net)
        plan.apply(net)
        if tell_ewc:
            ewc.on_growth(plan)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    got, want = ewc.penalty_grads(net), autograd_of_penalty(ewc, net)
    assert set(got) == set(want)
    shapes_differ = False
    for name in want:
        assert got[name].shape == dict(net.named_parameters())[name].shape
        shapes_differ |= ewc.anchor[name].shape != got[name].shape
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-15)
    assert shapes_differ != tell_ewc  # the overlap path is really taken when EWC was not told


@pytest.mark.parametrize("grown", [False, True])
def test_excluding_the_ewc_gradient_gives_the_cross_entropy_statistic(grown):
    net = make_net()
    net.train()
    ewc = consolidated(net, lam=50.0, normalize=True)  # Fisher max 1: a pull comparable to the task gradient
    x, y = batch()
    rec = GradientRecorder()
    if grown:
        g = torch.Generator().manual_seed(13)
        for make in (lambda m: plan_widen(m, 1, 11, generator=g), lambda m: plan_widen(m, 0, 6, generator=g)):
            plan = make(net)
            plan.apply(net)
            ewc.on_growth(plan)
            rec.on_growth(plan)
    rec.threshold = threshold_for(net, 1, x, y)
    want = measure(net, rec, x, y)  # cross-entropy only

    rec.attach(net)
    backward(net, x, y, extra=lambda: ewc.penalty(net))
    rec.after_backward(exclude=ewc.penalty_grads(net, names=rec.param_names))
    assert_same(rec.end_epoch(0, 1), want)

    backward(net, x, y, extra=lambda: ewc.penalty(net))
    rec.after_backward()  # the penalty's pull is large here: without the exclusion the numbers differ
    with_pull = rec.end_epoch(0, 2)
    assert (
        abs(with_pull["features.1"]["grad_norm"] - want["features.1"]["grad_norm"])
        > 0.1 * want["features.1"]["grad_norm"]
    )

    rec.attach(net)
    backward(net, x, y)
    with pytest.raises(ModelError, match="excluded gradient"):
        rec.after_backward(exclude={"features.1.conv.weight": torch.zeros(3)})

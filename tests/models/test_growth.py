from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from learngene.errors import ConfigError, ModelError
from learngene.models import (
    ExpandableVGG,
    GrowthPlan,
    GrowthSchedule,
    create_model,
    deepen,
    expand_classes,
    paper_schedule,
    plan_deepen,
    plan_expand_classes,
    plan_widen,
    widen,
)

PAPER_FINAL = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def settled(name: str = "test_vgg", seed: int = 0, **kw) -> ExpandableVGG:
    """A model whose BatchNorm parameters and running statistics are far from their defaults."""
    torch.manual_seed(seed)
    m = create_model(name, **kw)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
        m.train()
        for _ in range(3):
            m(torch.randn(8, m.in_channels, m.image_size, m.image_size) * 2 + 1)
    return m.eval()


def inputs(m: ExpandableVGG, n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, m.in_channels, m.image_size, m.image_size, generator=gen(seed)) * 2 + 1


def assert_same_function(before: torch.Tensor, model: ExpandableVGG, x: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=1e-5)


def outputs(model: ExpandableVGG, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


# ---------------------------------------------------------------------------------------- widen
def test_widen_middle_layer_preserves_function_and_copies_bn():
    m = settled()
    x = inputs(m)
    before = outputs(m, x)
    old_bn = copy.deepcopy(m.features[1].bn)
    plan = widen(m, 1, 10, generator=gen())
    assert m.widths == [4, 10, 8] and m.features[2].conv.in_channels == 10
    assert_same_function(before, m, x)
    bn = m.features[1].bn
    src = plan.full_index
    for name in ("weight", "bias", "running_mean", "running_var"):
        torch.testing.assert_close(getattr(bn, name), getattr(old_bn, name)[src])
    # the paper's code left these uninitialised: new channels must carry the replicated statistics
    assert not torch.allclose(bn.running_var[6:], torch.ones(4))


def test_widen_preserves_train_mode_outputs_too():
    m = settled(dropout=0.0)
    x = inputs(m)
    m.train()
    before = m(x).detach()
    widen(m, 0, 7, generator=gen(3))
    m.train()
    torch.testing.assert_close(m(x).detach(), before, rtol=0, atol=1e-5)


@pytest.mark.parametrize("hidden", [(16,), ()])
def test_widen_last_conv_layer_channel_major_consumer(hidden):
    m = settled(hidden=hidden)
    assert m.spatial == 2  # every channel owns 4 flattened columns
    x = inputs(m)
    before = outputs(m, x)
    plan = widen(m, 2, 13, generator=gen(2))
    assert plan.consumer == ("head.fc0" if hidden else "classifier") and plan.spatial == 4
    assert m.feature_dim == 13 * 4
    assert_same_function(before, m, x)


def test_widen_several_times_in_a_row_including_more_than_double():
    m = settled()
    x = inputs(m)
    before = outputs(m, x)
    g = gen(4)
    for layer, width in [(0, 5), (1, 20), (2, 9), (0, 12), (2, 30), (1, 21)]:
        plan = widen(m, layer, width, generator=g)
        assert_same_function(before, m, x)
    assert m.widths == [12, 21, 30]
    assert int(plan.counts.max()) >= 1
    counts = widen(m, 0, 40, generator=g).counts  # 12 -> 40: each unit copied 3 or 4 times, balanced
    assert counts.sum() == 40 and counts.min() >= 3 and counts.max() <= 4
    assert_same_function(before, m, x)


def test_widen_with_noise_breaks_symmetry_but_keeps_function():
    m = settled()
    x = inputs(m)
    before = outputs(m, x)
    plan = widen(m, 1, 12, generator=gen(5), noise=0.1)
    assert plan.noise_std > 0 and plan.seed is not None
    assert_same_function(before, m, x)
    w = m.features[2].conv.weight
    u = int(plan.mapping[0])
    assert not torch.allclose(w[:, 6], w[:, u])  # replica and original now differ in the consumer


def test_widen_keeps_dtype_device_and_mode():
    m = settled().double()
    m.train()
    widen(m, 1, 8, generator=gen())
    assert m.features[1].conv.weight.dtype == torch.float64
    assert m.features[2].conv.weight.dtype == torch.float64
    assert m.features[1].training and m.features[2].conv.training


def test_widen_errors():
    m = create_model("test_vgg")
    with pytest.raises(ModelError, match="larger than its current 6"):
        plan_widen(m, 1, 6)
    with pytest.raises(ModelError, match=r"0\.\.2"):
        plan_widen(m, 3, 10)
    with pytest.raises(ModelError, match="noise"):
        plan_widen(m, 1, 10, noise=-1.0)
    with pytest.raises(ModelError, match="ExpandableVGG"):
        plan_widen(nn.Linear(2, 2), 0, 4)  # type: ignore[arg-type]


def test_plan_applied_twice_or_out_of_order_is_refused():
    m = create_model("test_vgg")
    plan = plan_widen(m, 1, 8, generator=gen())
    plan.apply(m)
    with pytest.raises(ModelError, match="order"):
        plan.apply(m)
    with pytest.raises(ModelError, match="keyed like the model"):
        plan.transform_state(m.state_dict())
    d = plan_deepen(create_model("test_vgg"), 0)
    deepen(m, 2)
    with pytest.raises(ModelError, match="conv blocks"):
        d.apply(m)


# ---------------------------------------------------------------------------------------- deepen
@pytest.mark.parametrize("after", [0, 1, 2])
def test_deepen_preserves_eval_function(after):
    m = settled()
    x = inputs(m)
    before = outputs(m, x)
    pools = m.pools
    deepen(m, after)
    assert len(m.features) == 4
    assert m.conv_layer_names() == ["features.0", "features.1", "features.2", "features.3"]
    new = m.features[after + 1]
    assert not new.has_pool and new.in_channels == new.out_channels == m.widths[after]
    assert m.pools == [p + 1 if p > after else p for p in pools]
    assert m.spatial == 2
    assert_same_function(before, m, x)


def test_deepen_then_widen_new_block_and_neighbours():
    m = settled()
    x = inputs(m)
    before = outputs(m, x)
    g = gen(7)
    deepen(m, 1)
    widen(m, 2, 11, generator=g)  # the inserted block
    widen(m, 1, 9, generator=g)  # its producer
    deepen(m, 3)  # after the last block
    widen(m, 4, 10, generator=g)
    assert m.widths == [4, 9, 11, 8, 10]
    assert_same_function(before, m, x)


# ---------------------------------------------------------------------------------------- transform_state
def _plans(m: ExpandableVGG) -> list:
    return [
        lambda: plan_widen(m, 0, 7, generator=gen(1)),
        lambda: plan_widen(m, 2, 11, generator=gen(2), noise=0.05),
        lambda: plan_deepen(m, 1),
        lambda: plan_deepen(m, 2),
        lambda: plan_expand_classes(m, 9, generator=gen(3)),
    ]


@pytest.mark.parametrize("which", range(5))
def test_transform_state_param_equals_new_state_dict(which):
    m = settled()
    old = {k: v.clone() for k, v in m.state_dict().items()}
    plan = _plans(m)[which]()
    plan.apply(m)
    new = plan.transform_state(old, kind="param")
    assert list(new) == list(m.state_dict()) or set(new) == set(m.state_dict())
    for k, v in m.state_dict().items():
        torch.testing.assert_close(new[k], v, rtol=0, atol=0, msg=k)
    # JSON round trip replays the same step on a fresh copy of the old model
    replay = GrowthPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    clone = settled()
    replay.apply(clone)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(clone.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_transform_state_subsets_pass_through_and_ignore_missing():
    m = create_model("test_vgg")
    plan = plan_widen(m, 1, 9, generator=gen())
    only_weights = {k: v for k, v in m.named_parameters() if k.endswith("weight")}
    only_weights["unrelated.thing"] = torch.ones(3)
    out = plan.transform_state(only_weights, kind="importance")
    assert set(out) == set(only_weights)
    assert out["features.1.conv.weight"].shape == (9, 4, 3, 3)
    assert out["features.2.conv.weight"].shape == (8, 9, 3, 3)
    assert out["features.0.conv.weight"] is only_weights["features.0.conv.weight"]
    assert torch.equal(out["unrelated.thing"], torch.ones(3))
    with pytest.raises(ModelError, match="kind"):
        plan.transform_state(only_weights, kind="fisher")
    with pytest.raises(ModelError, match="tensor"):
        plan.transform_state({"features.1.conv.weight": [1, 2]})  # type: ignore[dict-item]


def _per_sample_grads(
    model: ExpandableVGG, x: torch.Tensor, y: torch.Tensor
) -> list[dict[str, torch.Tensor]]:
    model.eval()
    out = []
    for i in range(len(x)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        out.append({k: p.grad.detach().clone() for k, p in model.named_parameters()})
    return out


@pytest.mark.parametrize("which", range(4))
def test_grad_and_importance_transforms_match_the_grown_network(which):
    """Replaying gradients / squared gradients equals recomputing them on the grown network (widen, deepen)."""
    m = settled().double()
    x = inputs(m, n=5).double()
    y = torch.tensor([0, 1, 2, 3, 4])
    old = _per_sample_grads(m, x, y)
    plan = _plans(m)[which]()
    if plan.kind == "widen" and plan.noise_std > 0:
        plan.noise_std, plan.seed = 0.0, None  # exactness holds without symmetry-breaking noise
    plan.apply(m)
    new = _per_sample_grads(m, x, y)
    grad_old = {k: sum(g[k] for g in old) / len(old) for k in old[0]}
    fisher_old = {k: sum(g[k] ** 2 for g in old) / len(old) for k in old[0]}
    grad_new = {k: sum(g[k] for g in new) / len(new) for k in new[0]}
    fisher_new = {k: sum(g[k] ** 2 for g in new) / len(new) for k in new[0]}
    g_t = plan.transform_state(grad_old, kind="grad")
    f_t = plan.transform_state(fisher_old, kind="importance")
    assert set(f_t) == set(fisher_new) == set(g_t)
    inserted = f"features.{plan.layer + 1}." if plan.kind == "deepen" else None
    for k in fisher_new:
        assert f_t[k].shape == g_t[k].shape == fisher_new[k].shape, k
        if inserted and k.startswith(inserted):
            # the identity block is new: nothing learned there yet, so replayed importance/grad is 0
            assert torch.count_nonzero(f_t[k]) == 0 and torch.count_nonzero(g_t[k]) == 0
            continue
        torch.testing.assert_close(f_t[k], fisher_new[k], rtol=1e-7, atol=1e-12, msg=k)
        torch.testing.assert_close(g_t[k], grad_new[k], rtol=1e-7, atol=1e-12, msg=k)


def test_classes_plan_importance_pads_new_rows_with_zeros():
    m = create_model("test_vgg", num_classes=3)
    plan = plan_expand_classes(m, 5, generator=gen())
    f = {k: torch.rand_like(v) + 0.1 for k, v in m.named_parameters()}
    out = plan.transform_state(f, kind="importance")
    assert out["classifier.weight"].shape == (5, 16) and out["classifier.bias"].shape == (5,)
    assert torch.equal(out["classifier.weight"][:3], f["classifier.weight"])
    assert torch.count_nonzero(out["classifier.weight"][3:]) == 0
    assert out["features.0.conv.weight"] is f["features.0.conv.weight"]


def test_importance_scaling_rule_on_a_widen():
    m = create_model("test_vgg")
    plan = plan_widen(m, 1, 12, generator=gen())  # 6 -> 12: every unit copied exactly once (count 2)
    ones = {k: torch.ones_like(v) for k, v in m.named_parameters()}
    f = plan.transform_state(ones, kind="importance")
    g = plan.transform_state(ones, kind="grad")
    p = plan.transform_state(ones, kind="param")
    assert torch.all(f["features.1.conv.weight"] == 0.25) and torch.all(f["features.1.bn.bias"] == 0.25)
    assert torch.all(g["features.1.conv.weight"] == 0.5)
    assert torch.all(p["features.1.conv.weight"] == 1.0)
    assert torch.all(f["features.2.conv.weight"] == 1.0) and torch.all(p["features.2.conv.weight"] == 0.5)


# ---------------------------------------------------------------------------------------- classes
def test_expand_classes_plan_keeps_old_logits():
    m = settled(num_classes=3)
    x = inputs(m)
    before = outputs(m, x)
    plan = expand_classes(m, 7, generator=gen())
    after = outputs(m, x)
    assert after.shape == (6, 7) and plan.to_dict()["fan_in"] == 16
    torch.testing.assert_close(after[:, :3], before, rtol=0, atol=1e-6)
    with pytest.raises(ModelError, match="never removed"):
        plan_expand_classes(m, 5)


# ---------------------------------------------------------------------------------------- plan records
def test_plan_to_dict_is_json_and_from_dict_validates():
    m = create_model("test_vgg")
    plan = plan_widen(m, 0, 6, generator=gen())
    d = plan.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["mapping"] == plan.mapping.tolist() and len(d["mapping"]) == 2
    back = GrowthPlan.from_dict(d)
    assert torch.equal(back.mapping, plan.mapping) and back.describe() == plan.describe()
    assert back == plan and back != plan_widen(m, 0, 7, generator=gen())
    with pytest.raises(ModelError, match="malformed"):
        GrowthPlan.from_dict({"kind": "widen"})
    with pytest.raises(ModelError, match="entries"):
        GrowthPlan.from_dict({**d, "mapping": [0]})
    with pytest.raises(ModelError, match="kind"):
        GrowthPlan.from_dict({**d, "kind": "shrink"})


# ---------------------------------------------------------------------------------------- schedules
def test_paper_schedule_reaches_paper_widths_and_param_counts():
    sched = paper_schedule()
    assert sorted(sched) == list(range(1, 21)) and all(len(v) == 1 for v in sched.values())
    layers = [sched[t][0][0] for t in range(1, 21)]
    assert layers == sorted(layers)  # shallow to deep
    m = create_model("vgg13_paper", num_classes=5)
    assert sum(p.numel() for p in m.parameters()) == 5_049_413  # paper: ~5.1M
    schedule = GrowthSchedule("paper")
    g = gen()
    assert schedule.plans_for(m, 0, generator=g) == []
    for t in range(1, 22):
        for plan in schedule.plans_for(m, t, generator=g):
            plan.apply(m)
    assert m.widths == PAPER_FINAL
    # Measured: 16,303,173 with 5 classes; 16,400,548 with the 100 classes seen after 20 tasks (paper: ~16.4M)
    assert sum(p.numel() for p in m.parameters()) == 16_303_173
    m.expand_classes(100)
    assert sum(p.numel() for p in m.parameters()) == 16_400_548


def test_round_robin_schedule_caps_and_skips():
    m = create_model("test_vgg")
    sched = GrowthSchedule("round_robin", step=3, max_width=8)
    g = gen()
    seen = []
    for t in range(1, 8):
        plans = sched.plans_for(m, t, generator=g)
        for p in plans:
            p.apply(m)
        seen.append([(p.layer, p.new_width) for p in plans])
    # t1: block0 4->7, t2: block1 6->8, t3: block2 at cap -> passes to block0 7->8, then all capped
    assert seen[:3] == [[(0, 7)], [(1, 8)], [(0, 8)]]
    assert seen[3:] == [[], [], [], []]
    assert m.widths == [8, 8, 8]


def test_round_robin_layers_and_deepen_every():
    m = settled()
    x = inputs(m)
    before = outputs(m, x)
    sched = GrowthSchedule("round_robin", step=2, max_width=64, deepen_every=2, layers=[2])
    g = gen()
    kinds = []
    for t in range(1, 5):
        plans = sched.plans_for(m, t, generator=g)
        kinds.append([p.kind for p in plans])
        for p in plans:
            p.apply(m)
    assert kinds == [["widen"], ["widen", "deepen"], ["widen"], ["widen", "deepen"]]
    assert len(m.features) == 5
    assert_same_function(before, m, x)
    assert GrowthSchedule("none").plans_for(m, 3) == []


def test_schedule_config_errors():
    with pytest.raises(ConfigError, match="mode"):
        GrowthSchedule("sometimes")
    with pytest.raises(ConfigError, match="step"):
        GrowthSchedule(step=0)
    with pytest.raises(ConfigError, match="deepen_every"):
        GrowthSchedule("paper", deepen_every=2)
    with pytest.raises(ConfigError, match="layers"):
        GrowthSchedule(layers=[])
    with pytest.raises(ModelError, match="13-block"):
        GrowthSchedule("paper").plans_for(create_model("test_vgg"), 1)
    with pytest.raises(ModelError, match="do not exist"):
        GrowthSchedule(layers=[5]).plans_for(create_model("test_vgg"), 1)
    with pytest.raises(ConfigError, match="task_index"):
        GrowthSchedule().plans_for(create_model("test_vgg"), -1)

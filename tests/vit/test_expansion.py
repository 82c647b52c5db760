"""Expansion rules, the auxiliary ExpandedViT, descendants by materialisation, and the learngene round trip."""

from __future__ import annotations

import json

import pytest
import torch

from learngene.errors import GeneError, ModelError
from learngene.models.expansion import (
    ExpandedViT,
    ExpansionRule,
    LinearRule,
    StackRule,
    StagewiseRule,
    rule_from_spec,
)
from learngene.models.registry import model_from_config


def test_linear_rule_coefficients_are_tleg():
    c = LinearRule().coefficients(4)
    assert torch.equal(c, torch.tensor([[1, 0], [1, 0.25], [1, 0.5], [1, 0.75]], dtype=torch.float64))
    assert LinearRule().init_roles() == ["base", "delta"]
    with pytest.raises(ModelError, match="exactly 2 templates"):
        LinearRule(3)
    with pytest.raises(ModelError, match="depth must be an integer >= 1"):
        LinearRule().coefficients(0)


def test_stagewise_rule_maps_layers_to_stages():
    rule = StagewiseRule(2)
    assert rule.stage_map(6) == [0, 0, 0, 1, 1, 1]
    assert StagewiseRule(3).stage_map(7) == [0, 0, 0, 1, 1, 2, 2]
    c = rule.coefficients(3)
    assert torch.equal(c, torch.tensor([[1, 0], [1, 0], [0, 1]], dtype=torch.float64))
    with pytest.raises(ModelError, match="needs depth >= 3"):
        StagewiseRule(3).coefficients(2)


def test_stack_rule_is_identity_at_its_own_depth_only():
    assert torch.equal(StackRule(3).coefficients(3), torch.eye(3, dtype=torch.float64))
    with pytest.raises(ModelError, match="builds depth 3 only"):
        StackRule(3).coefficients(4)


def test_rule_specs_and_configs_round_trip():
    for rule in (LinearRule(), StagewiseRule(3), StackRule(4)):
        assert ExpansionRule.from_config(json.loads(json.dumps(rule.to_config()))) == rule
    assert rule_from_spec("stagewise:3") == StagewiseRule(3)
    assert rule_from_spec("stack", depth=5) == StackRule(5)
    assert rule_from_spec("linear") == LinearRule()
    with pytest.raises(ModelError, match="unknown expansion rule 'wave'"):
        rule_from_spec("wave")


def test_block_weight_matches_hand_computation(tiny_cfg):
    aux = ExpandedViT(tiny_cfg, "linear", depth=4, seed=0)
    templates = dict(aux.templates.named_parameters())
    weights = aux.block_weights(4)
    for name, t in templates.items():
        assert torch.equal(weights[2][name], t[0] + 0.5 * t[1]), name
        assert torch.equal(weights[0][name], t[0]), name
    desc = aux.materialize(4)
    assert torch.equal(
        desc.blocks[2].attn.qkv.weight,
        templates["attn.qkv.weight"][0] + 0.5 * templates["attn.qkv.weight"][1],
    )
    # a 6-deep descendant of the same learngene: block 3 of 6 is T0 + 0.5 T1 as well
    assert torch.equal(aux.materialize(6).blocks[3].mlp.fc1.weight, weights[2]["mlp.fc1.weight"])


def test_template_initialisation_follows_tleg(tiny_cfg):
    aux = ExpandedViT(tiny_cfg, "linear", seed=0)
    t = aux.templates
    assert torch.equal(t.norm1.weight[0], torch.ones(32)) and torch.equal(t.norm1.weight[1], torch.zeros(32))
    assert torch.equal(t.attn.qkv.bias, torch.zeros(2, 96))
    w = t.mlp.fc1.weight
    assert w.shape == (2, 128, 32)
    assert 0.015 < float(w[0].detach().std()) < 0.025 and 0.015 < float(w[1].detach().std()) < 0.025
    assert not torch.equal(w[0], w[1])
    sws = ExpandedViT(tiny_cfg, "stagewise:3", seed=0)
    assert torch.equal(sws.templates.norm2.weight, torch.ones(3, 32))  # every stage starts like a block


def test_seeded_construction_is_reproducible(tiny_cfg):
    a, b = ExpandedViT(tiny_cfg, seed=1), ExpandedViT(tiny_cfg, seed=1)
    c = ExpandedViT(tiny_cfg, seed=2)
    sa, sb, sc = a.templates_state_dict(True), b.templates_state_dict(True), c.templates_state_dict(True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["templates.attn.qkv.weight"], sc["templates.attn.qkv.weight"])


@pytest.mark.parametrize("rule", ["linear", "stagewise:2"])
def test_forward_equals_materialized_descendant(tiny_cfg, batch, rule):
    aux = ExpandedViT(tiny_cfg, rule, seed=0).eval()
    with torch.no_grad():
        torch.nn.init.normal_(aux.templates.norm1.weight, std=0.3)  # make every template matter
        for depth in (3, 5):
            desc = aux.materialize(depth, copy_head=True).eval()
            torch.testing.assert_close(aux(batch, depth=depth), desc(batch), rtol=0, atol=1e-6)
        assert aux.depth == 3
        torch.testing.assert_close(
            aux(batch), aux.materialize(3, copy_head=True).eval()(batch), rtol=0, atol=1e-6
        )
        # different depths are different functions (the test above would pass trivially otherwise)
        assert not torch.allclose(aux(batch, depth=3), aux(batch, depth=5))


def test_stagewise_descendant_shares_weights_within_a_stage(tiny_cfg):
    desc = ExpandedViT(tiny_cfg, "stagewise:2", seed=0).materialize(6)
    w = [b.attn.qkv.weight for b in desc.blocks]
    assert torch.equal(w[0], w[2]) and torch.equal(w[3], w[5]) and not torch.equal(w[2], w[3])


def test_gradients_reach_every_template(tiny_cfg, batch):
    aux = ExpandedViT(tiny_cfg, "linear", seed=0)
    aux(batch).square().mean().backward()
    g = aux.templates.attn.qkv.weight.grad
    assert g is not None and float(g[0].abs().sum()) > 0 and float(g[1].abs().sum()) > 0


def test_learngene_round_trip_rebuilds_identical_descendants(tiny_cfg, batch):
    aux = ExpandedViT(tiny_cfg, "linear", depth=3, seed=0)
    with torch.no_grad():  # pretend training moved every tensor away from its init
        for p in aux.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.02)
    tensors = aux.templates_state_dict()
    assert not any(k.startswith("head.") for k in tensors)
    assert "templates.attn.qkv.weight" in tensors and "fc_norm.weight" in tensors and "pos_embed" in tensors
    assert aux.stored_params() == sum(v.numel() for v in tensors.values())
    config = json.loads(json.dumps(aux.config()))
    rebuilt = ExpandedViT.from_templates(tensors, config)
    for depth in (2, 3, 6):  # 6 is deeper than the auxiliary net
        before = aux.materialize(depth, num_classes=4, seed=11).eval()
        after = rebuilt.materialize(depth, num_classes=4, seed=11).eval()
        assert len(after.blocks) == depth and after.head.out_features == 4
        with torch.no_grad():
            assert torch.equal(before(batch), after(batch))
    assert model_from_config(config).config() == aux.config()


def test_head_is_fresh_unless_copied(tiny_cfg):
    aux = ExpandedViT(tiny_cfg, seed=0)
    assert torch.equal(aux.materialize(3, copy_head=True).head.weight, aux.vit.head.weight)
    assert not torch.equal(aux.materialize(3, seed=1).head.weight, aux.vit.head.weight)
    assert torch.equal(aux.materialize(3).fc_norm.weight, aux.vit.fc_norm.weight)
    with pytest.raises(ModelError, match="cannot copy a 5-class head"):
        aux.materialize(3, num_classes=4, copy_head=True)


def test_from_templates_refuses_damaged_learngenes(tiny_cfg):
    aux = ExpandedViT(tiny_cfg, seed=0)
    tensors, config = aux.templates_state_dict(), aux.config()
    broken = {k: v for k, v in tensors.items() if k != "templates.mlp.fc2.weight"}
    with pytest.raises(GeneError, match=r"missing \['templates.mlp.fc2.weight'\]"):
        ExpandedViT.from_templates(broken, config)
    reshaped = {**tensors, "pos_embed": torch.zeros(1, 4, 32)}
    with pytest.raises(GeneError, match="shapes do not match"):
        ExpandedViT.from_templates(reshaped, config)
    with pytest.raises(GeneError, match="stagewise"):
        ExpandedViT.from_templates(tensors, {**config, "rule": {"name": "stagewise", "n_stages": 4}})


def test_bad_depths_are_refused(tiny_cfg):
    with pytest.raises(ModelError, match="builds depth 3 only"):
        ExpandedViT(tiny_cfg, "stack").materialize(4)
    with pytest.raises(ModelError, match="needs depth >= 4"):
        ExpandedViT(tiny_cfg, "stagewise:4")


def test_auxiliary_net_from_a_user_vit_with_tokens_and_layer_scale(batch):
    from timm.models.vision_transformer import VisionTransformer

    user = VisionTransformer(
        img_size=16, patch_size=4, in_chans=1, num_classes=4, embed_dim=32, depth=2, num_heads=2,
        init_values=1e-4, reg_tokens=1, drop_path_rate=0.1,
    )  # fmt: skip
    aux = ExpandedViT(user, "linear", depth=3, seed=0)
    assert aux.templates.ls1.gamma.shape == (2, 32)
    # a trained gamma does not reveal its init value: the record keeps the shape with init_values 1e-5
    assert torch.equal(aux.templates.ls1.gamma[0], torch.full((32,), aux.vit_cfg["init_values"]))
    assert torch.equal(aux.templates.ls1.gamma[1], torch.zeros(32))
    aux.train()
    assert aux(batch).shape == (6, 4)  # drop path active in training
    aux.eval()
    desc = aux.materialize(4, copy_head=True).eval()
    assert torch.equal(desc.cls_token, aux.vit.cls_token) and torch.equal(desc.reg_token, aux.vit.reg_token)
    with torch.no_grad():
        torch.testing.assert_close(aux(batch, depth=4), desc(batch), rtol=0, atol=1e-6)

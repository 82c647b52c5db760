"""Few-shot transformer descendants train by the individual recipe: imprinted cosine head (= NCM before the first
step), a head stage that really freezes every inherited tensor, then fine-tuning; the result saves and loads."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from learngene.config import IndividualConfig
from learngene.engine import accuracy
from learngene.models.heads import CosineClassifier
from learngene.models.io import load_network, save_network
from learngene.vit.descendants import scratch_descendant, truncated_ancestry
from learngene.vit.fewshot import ncm_accuracy, train_descendant
from learngene.vit.train import NetworkRecord


def _episode(n_classes: int = 4, shots: int = 2, queries: int = 3):
    g = torch.Generator().manual_seed(3)
    protos = torch.randn(n_classes, 1, 16, 16, generator=g)
    def draw(k):
        x = protos.repeat_interleave(k, 0) + 0.5 * torch.randn(n_classes * k, 1, 16, 16, generator=g)
        return x, torch.arange(n_classes).repeat_interleave(k)
    return (*draw(shots), *draw(queries))


def _settings(**kw) -> IndividualConfig:
    base = IndividualConfig(epochs=0, head_epochs=0, lr=0.05, augment="none", inherit_mode="free")
    return dataclasses.replace(base, **kw)


def test_imprinted_cosine_head_starts_as_nearest_class_mean(ancestry):
    sx, sy, qx, qy = _episode()
    d = truncated_ancestry(ancestry, 3, 4, seed=0)
    ncm = ncm_accuracy(d.model, sx, sy, qx, qy)
    res = train_descendant(d, sx, sy, _settings(), seed=0, qx=qx, qy=qy)  # no training at all
    assert isinstance(d.model.head, CosineClassifier) and d.model.num_classes == 4
    assert res["accuracy"] == pytest.approx(ncm) == pytest.approx(accuracy(d.model, qx, qy))
    logits = d.model(qx)
    feats = d.model.forward_head(d.model.forward_features(qx), pre_logits=True)
    protos = torch.stack([d.model.forward_head(d.model.forward_features(sx[sy == c]), pre_logits=True).mean(0)
                          for c in range(4)])
    cos = torch.nn.functional.normalize(feats, dim=1) @ torch.nn.functional.normalize(protos, dim=1).t()
    torch.testing.assert_close(logits, d.model.head.scale * cos, atol=1e-5, rtol=1e-4)


def test_head_stage_freezes_every_inherited_tensor_then_fine_tuning_moves_them(ancestry):
    sx, sy, qx, qy = _episode()
    d = truncated_ancestry(ancestry, 3, 4, seed=0)
    before = {k: v.clone() for k, v in d.model.state_dict().items()}
    train_descendant(d, sx, sy, _settings(head_epochs=5, augment="affine"), seed=0)
    after = d.model.state_dict()
    inherited = [k for k in d.inherited if not k.startswith("head.")]
    assert inherited and all(torch.equal(before[k], after[k]) for k in inherited)
    assert all(p.requires_grad for p in d.model.parameters())  # left as it found them
    d2 = truncated_ancestry(ancestry, 3, 4, seed=0)
    train_descendant(d2, sx, sy, _settings(head_epochs=2, epochs=3, inherit_mode="lr_scale", lr_scale=0.1), seed=0)
    assert any(not torch.equal(before[k], d2.model.state_dict()[k]) for k in inherited)
    # a scratch descendant has nothing inherited: everything trains from the first step
    s = scratch_descendant(ancestry, 3, 4, seed=0)
    first = {k: v.clone() for k, v in s.model.state_dict().items()}
    train_descendant(s, sx, sy, _settings(head_epochs=2), seed=0)
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], s.model.state_dict()["blocks.0.attn.qkv.weight"])


def test_a_cosine_head_descendant_saves_and_loads_exactly(ancestry, tmp_path):
    sx, sy, qx, qy = _episode()
    d = truncated_ancestry(ancestry, 2, 4, seed=0)
    train_descendant(d, sx, sy, _settings(head_epochs=2), seed=0)
    save_network(NetworkRecord(d.model.eval()), tmp_path / "m")
    again, manifest = load_network(tmp_path / "m")
    assert manifest["architecture"]["name"] == "vit_cosine" and isinstance(again.head, CosineClassifier)
    torch.testing.assert_close(again.eval()(qx), d.model(qx))

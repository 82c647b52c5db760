"""TLEG's observation checked by layer_linearity: exactly linear blocks give R^2 = 1, random ones do not."""

from __future__ import annotations

import math

import pytest
import torch

from learngene.errors import ModelError
from learngene.models.expansion import ExpandedViT
from learngene.models.vit import build_vit
from learngene.vit.linearity import layer_linearity


def _set_blocks(model, make) -> None:
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            for name, p in block.named_parameters():
                p.copy_(make(i, name, p.shape))


def test_exactly_linear_blocks_have_r2_one_and_shuffled_less(tiny_cfg):
    model = build_vit({**tiny_cfg, "depth": 6})
    gen = torch.Generator().manual_seed(0)
    base = {n: torch.randn(p.shape, generator=gen) for n, p in model.blocks[0].named_parameters()}
    slope = {n: torch.randn(p.shape, generator=gen) for n, p in model.blocks[0].named_parameters()}
    _set_blocks(model, lambda i, n, s: base[n] + i * slope[n])
    out = layer_linearity(model, n_shuffles=3, seed=1)
    assert len(out["rows"]) == 12
    for row in out["rows"]:
        assert row["r2"] == pytest.approx(1.0, abs=1e-9), row
        assert row["r2_shuffled"] < 0.9, row
    assert out["summary"]["pooled_r2"] == pytest.approx(1.0, abs=1e-9)
    assert out["summary"]["mean_r2_shuffled"] < 0.9


def test_random_blocks_have_small_r2(tiny_cfg):
    model = build_vit({**tiny_cfg, "depth": 8})
    gen = torch.Generator().manual_seed(0)
    _set_blocks(model, lambda i, n, s: torch.randn(s, generator=gen))
    summary = layer_linearity(model.state_dict())["summary"]
    assert summary["depth"] == 8 and summary["n_constant"] == 0
    assert summary["mean_r2"] < 0.3 and summary["pooled_r2"] < 0.3


def test_tleg_descendants_are_linear_and_constant_tensors_are_nan(tiny_cfg):
    aux = ExpandedViT(tiny_cfg, "linear", seed=0)
    out = layer_linearity(aux.materialize(5))
    rows = {r["name"]: r for r in out["rows"]}
    assert rows["attn.qkv.weight"]["r2"] == pytest.approx(1.0, abs=1e-6)
    # LayerNorm weights start at base 1 + slope 0: identical in every block, nothing to explain
    assert math.isnan(rows["norm1.weight"]["r2"]) and out["summary"]["n_constant"] >= 1
    assert not math.isnan(out["summary"]["mean_r2"])


def test_too_shallow_or_foreign_inputs_are_refused(tiny_cfg):
    with pytest.raises(ModelError, match=">= 3 blocks"):
        layer_linearity(build_vit({**tiny_cfg, "depth": 2}))
    with pytest.raises(ModelError, match="no 'blocks"):
        layer_linearity({"w": torch.zeros(2)})

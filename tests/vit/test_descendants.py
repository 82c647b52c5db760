"""Descendants by every method: which tensors are inherited, which are fresh, and what each must store."""

from __future__ import annotations

import pytest
import torch

from learngene.errors import ModelError
from learngene.models.expansion import ExpandedViT
from learngene.models.vit import block_state_dict
from learngene.vit.descendants import (
    build_descendant,
    scratch_descendant,
    stack_descendant,
    truncated_ancestry,
)


def _same_block(a, i: int, b, j: int) -> bool:
    sa, sb = block_state_dict(a, i), block_state_dict(b, j)
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_stack_descendant_puts_chosen_blocks_last(ancestry, batch):
    d = stack_descendant(ancestry, [3, 1], depth=5, num_classes=3, seed=0)
    m = d.model
    assert len(m.blocks) == 5 and m.head.out_features == 3 and m(batch).shape == (6, 3)
    assert _same_block(m, 3, ancestry, 1) and _same_block(m, 4, ancestry, 3)  # ancestry order kept
    for i in range(3):
        assert not any(_same_block(m, i, ancestry, j) for j in range(4))
    assert torch.equal(m.patch_embed.proj.weight, ancestry.patch_embed.proj.weight)
    assert torch.equal(m.pos_embed, ancestry.pos_embed)
    assert not torch.equal(m.fc_norm.weight, ancestry.fc_norm.weight)  # final norm fresh by default
    block = sum(v.numel() for v in block_state_dict(ancestry, 0).values())
    embed = (
        ancestry.patch_embed.proj.weight.numel()
        + ancestry.patch_embed.proj.bias.numel()
        + ancestry.pos_embed.numel()
    )
    assert d.stored_params == 2 * block + embed
    assert "blocks.4.attn.qkv.weight" in d.inherited and "blocks.0.attn.qkv.weight" not in d.inherited


def test_stack_positions_and_errors(ancestry):
    first = stack_descendant(ancestry, [2], depth=3, num_classes=3, position="first").model
    assert _same_block(first, 0, ancestry, 2)
    middle = stack_descendant(ancestry, [2], depth=3, num_classes=3, position=1, copy_final_norm=True).model
    assert _same_block(middle, 1, ancestry, 2) and torch.equal(middle.fc_norm.weight, ancestry.fc_norm.weight)
    with pytest.raises(ModelError, match="outside the ancestry's blocks 0..3"):
        stack_descendant(ancestry, [4], depth=3, num_classes=3)
    with pytest.raises(ModelError, match="do not fit a depth-2"):
        stack_descendant(ancestry, [0, 1, 2], depth=2, num_classes=3)
    with pytest.raises(ModelError, match="repeat a block"):
        stack_descendant(ancestry, [1, 1], depth=3, num_classes=3)
    with pytest.raises(ModelError, match="position must be"):
        stack_descendant(ancestry, [1], depth=3, num_classes=3, position=3)


def test_truncated_ancestry_keeps_first_blocks_and_refuses_deeper(ancestry, batch):
    d = truncated_ancestry(ancestry, depth=2, num_classes=7, seed=0)
    m = d.model
    assert len(m.blocks) == 2 and m(batch).shape == (6, 7)
    assert _same_block(m, 0, ancestry, 0) and _same_block(m, 1, ancestry, 1)
    assert torch.equal(m.fc_norm.weight, ancestry.fc_norm.weight)
    # like for like with a learngene (issue 17): the whole ancestry but its head, which no descendant uses
    assert d.stored_params == sum(p.numel() for n, p in ancestry.named_parameters() if not n.startswith("head."))
    assert not any(k.startswith("head.") for k in d.inherited)
    with pytest.raises(ModelError, match="cannot truncate a 4-block ancestry to 5 blocks"):
        truncated_ancestry(ancestry, depth=5, num_classes=7)


def test_scratch_descendant_is_fresh_and_seeded(ancestry, tiny_cfg):
    a = scratch_descendant(tiny_cfg, depth=6, num_classes=2, seed=1)
    b = scratch_descendant(ancestry, depth=6, num_classes=2, seed=1)
    c = scratch_descendant(tiny_cfg, depth=6, num_classes=2, seed=2)
    assert a.stored_params == 0 and a.inherited == () and len(a.model.blocks) == 6
    assert torch.equal(a.model.blocks[5].mlp.fc1.weight, b.model.blocks[5].mlp.fc1.weight)
    assert not torch.equal(a.model.blocks[5].mlp.fc1.weight, c.model.blocks[5].mlp.fc1.weight)


def test_build_descendant_from_stored_learngene(tiny_cfg, batch):
    aux = ExpandedViT(tiny_cfg, "linear", seed=0)
    stored = (aux.templates_state_dict(), aux.config())
    d = build_descendant(stored, depth=6, num_classes=4, seed=3)
    direct = build_descendant(aux, depth=6, num_classes=4, seed=3)
    assert d.method == "expanded:linear" and d.stored_params == aux.stored_params()
    assert len(d.model.blocks) == 6 and d.model.head.out_features == 4
    assert not any(k.startswith("head.") for k in d.inherited) and "blocks.5.norm1.weight" in d.inherited
    d.model.eval()
    direct.model.eval()
    with torch.no_grad():
        assert torch.equal(d.model(batch), direct.model(batch))
    with pytest.raises(ModelError, match="ExpandedViT or a \\(tensors, config\\) pair"):
        build_descendant(stored[0], depth=2, num_classes=4)

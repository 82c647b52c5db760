"""Shared tiny transformers: width 32, 16 px inputs, patch 4 (16 tokens), so the folder runs in seconds."""

from __future__ import annotations

import pytest
import torch

from learngene.models.vit import build_vit, vit_preset_config


@pytest.fixture
def tiny_cfg() -> dict:
    """The tiny ViT record: 1 channel, 16 px, patch 4, width 32, 2 heads, 5 classes, 3 blocks."""
    return vit_preset_config("vit_test", in_chans=1, num_classes=5, depth=3)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(123))


@pytest.fixture
def ancestry(tiny_cfg):
    """A 4-block tiny ViT with every tensor random (so copied blocks are recognisable by equality)."""
    model = build_vit({**tiny_cfg, "depth": 4})
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()

"""Presets, the ViT shape record (vit_config / model_from_config) and block addressing."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from timm.layers import SwiGLUPacked
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from learngene.errors import ModelError
from learngene.models import vit as V
from learngene.models.registry import create_model, list_models, model_from_config
from learngene.runtime import seeded


def test_presets_are_registered_and_follow_the_name_scheme():
    names = list_models("vit_*")
    assert {"vit_p4_d96_l8", "vit_p8_d96_l8", "vit_p7_d96_l8", "vit_p4_d192_l12", "vit_test"} <= set(names)
    cfg = V.vit_preset_config("vit_p7_d192_l4")
    shape = (cfg["patch_size"], cfg["img_size"], cfg["embed_dim"], cfg["depth"], cfg["num_heads"])
    assert shape == (7, 28, 192, 4, 6)


def test_fast_preset_has_16_tokens_avg_pool_and_fc_norm():
    model = create_model("vit_p8_d96_l4", in_chans=1, num_classes=7)
    assert model.patch_embed.num_patches == 16 and model.cls_token is None
    assert model.global_pool == "avg"
    # timm moves the final norm after pooling: norm is an Identity and fc_norm holds the LayerNorm
    assert isinstance(model.norm, nn.Identity) and isinstance(model.fc_norm, nn.LayerNorm)
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 7)
    assert len(model.blocks) == 4


def test_preset_rejects_unknown_override():
    with pytest.raises(ModelError, match="does not take"):
        create_model("vit_test", widht=3)


def test_preset_config_round_trip_is_json_and_equal(tiny_cfg):
    model = V.build_vit(tiny_cfg)
    cfg = V.vit_config(model)
    assert cfg == tiny_cfg
    rebuilt = model_from_config(json.loads(json.dumps(cfg)))
    assert V.vit_config(rebuilt) == cfg


def _user_vit() -> VisionTransformer:
    """A DeiT-like user model that differs from our presets in many ways (token pool, eps, layer scale...)."""
    return VisionTransformer(
        img_size=24,
        patch_size=6,
        in_chans=3,
        num_classes=9,
        embed_dim=48,
        depth=3,
        num_heads=3,
        mlp_ratio=2.0,
        qkv_bias=False,
        qk_norm=True,
        init_values=1e-4,
        reg_tokens=1,
        norm_layer=functools.partial(nn.LayerNorm, eps=1e-5),
        drop_path_rate=0.1,
    )


def test_user_timm_vit_round_trips_through_config():
    user = _user_vit().eval()
    cfg = V.vit_config(user)
    assert cfg["class_token"] and cfg["global_pool"] == "token" and not cfg["fc_norm"]
    assert (cfg["embed_dim"], cfg["num_heads"], cfg["mlp_ratio"], cfg["qkv_bias"]) == (48, 3, 2.0, False)
    assert (cfg["norm_eps"], cfg["drop_path_rate"], cfg["reg_tokens"]) == (1e-5, 0.1, 1)
    rebuilt = model_from_config(json.loads(json.dumps(cfg))).eval()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in user.state_dict().items()
    }
    rebuilt.load_state_dict(user.state_dict(), strict=True)
    x = torch.randn(2, 3, 24, 24)
    torch.testing.assert_close(rebuilt(x), user(x), rtol=0, atol=1e-6)


def test_unsupported_models_are_refused_with_a_reason():
    glu = VisionTransformer(
        img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_layer=SwiGLUPacked
    )
    with pytest.raises(ModelError, match="only timm's Mlp"):
        V.vit_config(glu)
    distilled = VisionTransformerDistilled(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    with pytest.raises(ModelError, match="plain timm VisionTransformer.*VisionTransformerDistilled"):
        V.vit_config(distilled)
    odd = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    odd.blocks[1].attn.num_heads = 4  # heterogeneous blocks: no single record describes them
    with pytest.raises(ModelError, match=r"blocks\.1\.attn num_heads is 4"):
        V.vit_config(odd)
    with pytest.raises(ModelError, match="plain timm VisionTransformer"):
        V.vit_config(nn.Linear(2, 2))


def test_bad_configs_name_the_field(tiny_cfg):
    with pytest.raises(ModelError, match="unknown ViT config keys"):
        V.build_vit({**tiny_cfg, "widht": 3})
    with pytest.raises(ModelError, match="not divisible by num_heads"):
        V.build_vit({**tiny_cfg, "num_heads": 3})
    with pytest.raises(ModelError, match="needs class_token"):
        V.build_vit({**tiny_cfg, "global_pool": "token"})
    with pytest.raises(ModelError, match="depth must be >= 1"):
        V.build_vit({**tiny_cfg, "depth": 0})


def test_block_helpers_address_blocks_by_stable_prefix(ancestry):
    assert V.block_prefix(2) == "blocks.2."
    assert V.num_blocks(ancestry) == 4
    names = V.block_param_names(ancestry)
    assert "attn.qkv.weight" in names and "mlp.fc2.bias" in names
    b1 = {k: v.clone() for k, v in V.block_state_dict(ancestry, 1).items()}
    V.load_block_state_dict(ancestry, 3, b1)
    for k, v in b1.items():
        assert torch.equal(ancestry.state_dict()[f"blocks.3.{k}"], v)
    assert not torch.equal(ancestry.state_dict()["blocks.0.attn.qkv.weight"], b1["attn.qkv.weight"])
    shared = V.shared_state_dict(ancestry, include_head=False)
    assert "patch_embed.proj.weight" in shared and "fc_norm.weight" in shared
    assert not any(k.startswith(("blocks.", "head.")) for k in shared)
    with pytest.raises(ModelError, match="out of range"):
        V.block_state_dict(ancestry, 4)
    with pytest.raises(ModelError, match="does not fit"):
        V.load_block_state_dict(ancestry, 0, {**b1, "norm1.weight": torch.ones(3)})


def test_seeded_is_reproducible_and_leaves_global_state_alone(tiny_cfg):
    before = torch.get_rng_state()
    with seeded(3):
        a = V.build_vit(tiny_cfg)
    assert torch.equal(torch.get_rng_state(), before)
    with seeded(3):
        b = V.build_vit(tiny_cfg)
    with seeded(4):
        c = V.build_vit(tiny_cfg)
    assert torch.equal(a.pos_embed, b.pos_embed) and not torch.equal(a.pos_embed, c.pos_embed)

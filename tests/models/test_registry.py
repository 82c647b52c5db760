from __future__ import annotations

import json

import pytest
import torch

from learngene.errors import ModelError
from learngene.models import (
    ConvBlock,
    ExpandableVGG,
    create_model,
    list_models,
    model_from_config,
    registry,
    widen,
)
from learngene.registry import MODELS

BUILTIN = ["test_vgg", "vgg13_paper", "vgg4", "vgg8_small"]


def test_list_models_names_and_pattern():
    assert set(BUILTIN) <= set(list_models())
    assert list_models() == sorted(list_models())
    vggs = list_models("vgg*")
    assert "vgg4" in vggs and "vgg13_paper" in vggs and "test_vgg" not in vggs
    assert list_models("no_such_*") == []


def test_create_model_overrides_and_none_ignored():
    m = create_model("test_vgg", num_classes=7, in_channels=1, hidden=None, dropout=None)
    assert isinstance(m, ExpandableVGG)
    assert m.num_classes == 7 and m.in_channels == 1
    assert m.hidden == (16,) and m.dropout == 0.5  # None kept the preset's defaults
    assert create_model("vgg13_paper").widths[:4] == [64, 64, 64, 64]


def test_unknown_model_lists_available_and_close_match():
    with pytest.raises(ModelError) as err:
        create_model("vgg13_papr")
    msg = str(err.value)
    assert "'vgg13_paper'" in msg and "Did you mean" in msg and "vgg4" in msg


def test_unknown_override_is_a_model_error():
    with pytest.raises(ModelError, match="widht"):
        create_model("test_vgg", widht=3)


def test_model_from_config_round_trip_after_growth():
    torch.manual_seed(0)
    m = create_model("test_vgg", num_classes=3)
    widen(m, 1, 9, generator=torch.Generator().manual_seed(1))
    cfg = m.config()
    cfg = json.loads(json.dumps(cfg))  # must survive JSON
    assert cfg["name"] == "expandable_vgg" and cfg["widths"] == [4, 9, 8]
    clone = model_from_config(cfg)
    clone.load_state_dict(m.state_dict())  # strict: same names and shapes
    m.eval()
    clone.eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(clone(x), m(x))
    assert clone.config() == cfg


def test_conv_block_config_round_trip():
    block = ConvBlock(3, 5, pool=True, bias=False)
    cfg = block.config()
    assert cfg == {"type": "conv_block", "in_channels": 3, "out_channels": 5, "pool": True, "bias": False}
    rebuilt = model_from_config(cfg)
    assert isinstance(rebuilt, ConvBlock)
    assert rebuilt.has_pool and rebuilt.conv.bias is None and rebuilt.out_channels == 5


@pytest.mark.parametrize(
    "cfg, needle",
    [
        ([1, 2], "must be a dict"),
        ({"widths": [4]}, "no 'name'"),
        ({"name": "expandable_vggg"}, "Did you mean 'expandable_vgg'"),
        (
            {"name": "expandable_vgg", "widths": [4], "pools": [], "colour": 1},
            "unknown ExpandableVGG config keys",
        ),
        ({"name": "expandable_vgg", "pools": []}, "lacks"),
    ],
)
def test_model_from_config_errors(cfg, needle):
    with pytest.raises(ModelError, match=needle):
        model_from_config(cfg)


def test_register_model_refuses_shadowing():
    def vgg4(**kw):  # same name as the built-in, different function
        return ConvBlock(1, 1)

    with pytest.raises(ModelError, match="already registered"):
        registry.register_model(vgg4)


def test_register_model_custom_and_non_module_result():
    def _lg_custom_block(**kw):
        return ConvBlock(kw.get("in_channels", 2), 3)

    def _lg_not_a_module(**kw):
        return 42

    try:
        registry.register_model(_lg_custom_block)
        registry.register_model(_lg_not_a_module)
        assert "_lg_custom_block" in list_models("_lg_*")
        assert create_model("_lg_custom_block", in_channels=4).in_channels == 4
        with pytest.raises(ModelError, match="expected an nn.Module"):
            create_model("_lg_not_a_module")
    finally:
        MODELS.unregister("_lg_custom_block")
        MODELS.unregister("_lg_not_a_module")

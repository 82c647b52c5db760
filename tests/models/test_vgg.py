from __future__ import annotations

import pytest
import torch

from learngene.errors import ModelError
from learngene.models import ConvBlock, ExpandableVGG, create_model, list_models


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ["test_vgg", "vgg4", "vgg8_small", "vgg13_paper"])
def test_shapes_of_every_registered_model(name):
    assert name in list_models()
    torch.manual_seed(0)
    m = create_model(name, num_classes=6).eval()
    s = m.image_size
    x = torch.randn(2, m.in_channels, s, s)
    feats = m.forward_features(x)
    assert feats.shape == (2, m.feature_dim) == (2, m.widths[-1] * m.spatial**2)
    pen = m.forward_penultimate(x)
    assert pen.shape == (2, m.penultimate_dim)
    logits = m(x)
    assert logits.shape == (2, 6)
    torch.testing.assert_close(m.forward_head(feats), logits)
    assert m.conv_layer_names() == [f"features.{i}" for i in range(len(m.widths))]
    assert all(isinstance(b, ConvBlock) for b in m.features)


def test_preset_shapes_are_as_documented():
    paper = create_model("vgg13_paper")
    assert paper.widths == [64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256]
    assert paper.pools == [1, 3, 6, 9, 12] and paper.spatial == 1 and paper.feature_dim == 256
    assert paper.hidden == (1024, 1024) and paper.dropout == 0.5
    small = create_model("vgg8_small")
    assert small.widths == [32, 32, 64, 64, 96, 96, 128, 128] and small.pools == [1, 3, 5, 7]
    conv4 = create_model("vgg4", image_size=28, in_channels=1)
    assert conv4.widths == [64] * 4 and conv4.hidden == () and conv4.feature_dim == 64
    assert conv4.penultimate_dim == conv4.feature_dim  # no hidden MLP: embedding = flattened conv output
    tiny = create_model("test_vgg")
    assert tiny.widths == [4, 6, 8] and tiny.spatial == 2 and tiny.feature_dim == 32


def test_paper_param_count_at_task0():
    # Measured: 5,049,413 at 5 classes (conv biases included); 5,146,788 with a 100-way classifier.
    # The paper reports ~5.1M.
    assert n_params(create_model("vgg13_paper", num_classes=5)) == 5_049_413
    assert n_params(create_model("vgg13_paper", num_classes=100)) == 5_146_788
    assert n_params(create_model("vgg13_paper", conv_bias=False)) == 5_049_413 - sum(
        [64, 64, 64, 64, 128, 128, 128] + [256] * 6
    )


def test_stable_state_dict_names():
    m = create_model("test_vgg")
    keys = list(m.state_dict())
    block = [
        "conv.weight",
        "conv.bias",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
    ]
    expected = [f"features.{i}.{k}" for i in range(3) for k in block]
    expected += ["head.fc0.weight", "head.fc0.bias", "classifier.weight", "classifier.bias"]
    assert keys == expected
    m2 = create_model("test_vgg", hidden=(5, 7), conv_bias=False)
    assert "features.0.conv.bias" not in m2.state_dict()
    assert [k for k in m2.state_dict() if k.startswith("head")] == [
        "head.fc0.weight",
        "head.fc0.bias",
        "head.fc1.weight",
        "head.fc1.bias",
    ]


def test_hidden_empty_means_flatten_only():
    m = create_model("test_vgg", hidden=()).eval()
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(m.forward_penultimate(x), m.forward_features(x))
    assert m.classifier.in_features == m.feature_dim


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(widths=[], pools=[]), "widths is empty"),
        (dict(widths=[4, 0], pools=[]), r"widths\[1\] must be >= 1"),
        (dict(widths=[4, 4], pools=[0, 1], image_size=2), "shrink a 2x2 image to nothing"),
        (dict(widths=[4, 4], pools=[2]), "refer to blocks that do not exist"),
        (dict(widths=[4, 4], pools=[0, 0]), "lists a block twice"),
        (dict(widths=[4], pools=[], dropout=1.0), "dropout"),
        (dict(widths=[4], pools=[], hidden=[0]), r"hidden\[0\]"),
        (dict(widths=[4], pools=[], num_classes=0), "num_classes"),
        (dict(widths=[4.5], pools=[]), "integer"),
        (dict(widths="64", pools=[]), "list of integers"),
    ],
)
def test_impossible_configs_raise_model_error(kwargs, needle):
    with pytest.raises(ModelError, match=needle):
        ExpandableVGG(**kwargs)


def test_pool_count_limit_is_exact():
    ExpandableVGG([2, 2, 2], pools=[0, 1, 2], image_size=8)  # 8 -> 1: fine
    with pytest.raises(ModelError, match="at most 3 pools"):
        ExpandableVGG([2, 2, 2, 2], pools=[0, 1, 2, 3], image_size=8)


def test_wrong_input_shapes_name_the_fix():
    m = create_model("test_vgg")
    with pytest.raises(ModelError, match=r"\[batch, 3, 16, 16\]"):
        m(torch.randn(2, 1, 16, 16))
    with pytest.raises(ModelError, match="image_size=32"):
        m(torch.randn(2, 3, 32, 32))


def test_expand_classes_keeps_old_logits():
    torch.manual_seed(0)
    m = create_model("test_vgg", num_classes=3).eval()
    x = torch.randn(4, 3, 16, 16)
    before = m(x)
    m.expand_classes(8, seed=5)
    after = m(x)
    assert after.shape == (4, 8)
    torch.testing.assert_close(after[:, :3], before, rtol=0, atol=1e-6)  # matmul blocking may differ
    assert not torch.allclose(after[:, 3:], torch.zeros_like(after[:, 3:]))
    bound = 1 / m.classifier.in_features**0.5
    assert m.classifier.weight[3:].abs().max() <= bound
    # reproducible from the seed
    m2 = create_model("test_vgg", num_classes=3)
    m2.load_state_dict(
        {k: v for k, v in m.state_dict().items() if not k.startswith("classifier")}, strict=False
    )
    m2.classifier.load_state_dict({k: v[:3] for k, v in m.classifier.state_dict().items()})
    m2.expand_classes(8, seed=5)
    torch.testing.assert_close(m2.classifier.weight, m.classifier.weight)
    m.expand_classes(8)  # same size: no-op
    assert m.num_classes == 8
    with pytest.raises(ModelError, match="only grow"):
        m.expand_classes(4)


def test_conv_block_standalone():
    block = ConvBlock(2, 5, pool=True)
    y = block(torch.randn(3, 2, 8, 8))
    assert y.shape == (3, 5, 4, 4) and (y >= 0).all()
    assert ConvBlock(2, 5).pool.__class__.__name__ == "Identity"
    with pytest.raises(ModelError):
        ConvBlock(0, 5)

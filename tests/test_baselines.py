"""Nearest class mean, and the joint / protonet backbones: budgets, training, cache."""

import copy
import json
import math

import pytest
import torch

from learngene import baselines
from learngene.baselines import (
    block_features,
    cache_key,
    cached_baseline,
    joint_plan,
    load_baseline,
    ncm_accuracy,
    ncm_predict,
    penultimate_features,
    protonet_plan,
    stream_image_budget,
    train_joint,
    train_protonet,
)
from learngene.config import Config
from learngene.data import ClassSplit, ImageSet, TaskStream
from learngene.models import create_model

SPEC = {"image_size": 16, "channels": 1, "mean": [0.5], "std": [0.25]}


def _points(*xy):
    return torch.tensor(xy, dtype=torch.float32)


def _deg(a):
    return [math.cos(math.radians(a)), math.sin(math.radians(a))]


def test_ncm_accuracy_is_cosine_to_means_of_normalized_features():
    """A 2-D feature map where cosine NCM on normalized features gets exactly 3 of 4 queries right.

    Class 0's supports point at 0 and 90 degrees with lengths 1 and 100: the mean of the *normalized* supports
    points at 45 degrees, the raw mean at ~89. Class 1 points at 135 degrees. Query 0 is lost by Euclidean
    distance to the raw means, query 1 by any rule that averages unnormalized features; query 2 is a true
    miss.
    """
    sx = _points([1.0, 0.0], [0.0, 100.0], [-2.0, 2.0])
    sy = torch.tensor([0, 0, 1])
    qx = _points(
        [100.0, 1.0],  # ~0.6 deg: class 0 by angle; Euclidean to the raw means: class 1
        [
            7 * v for v in _deg(95)
        ],  # 50 deg from 45, 40 from 135: class 1; the raw class-0 mean (89 deg) would win
        _deg(80),  # 35 deg from class 0, 55 from class 1: predicted 0 but labelled 1, the one miss
        [0.1 * v for v in _deg(20)],  # a short vector at 20 deg: class 0
    )
    qy = torch.tensor([0, 1, 1, 0])

    def ident(x):
        return x

    assert ncm_predict(sx, sy, qx).tolist() == [0, 1, 0, 0]
    assert ncm_accuracy(ident, sx, sy, qx, qy) == 0.75
    # labels need not be 0..C-1, and scaling every feature changes nothing under cosine
    assert ncm_accuracy(ident, sx * 3, sy + 7, qx * 0.5, qy + 7) == 0.75


def _network(classes=5):
    torch.manual_seed(0)
    net = create_model("test_vgg", in_channels=1, image_size=16, num_classes=classes)
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 1, 16, 16))
    return net


def test_feature_functions_are_frozen_and_keep_the_mode():
    net = _network()
    x = torch.randn(4, 1, 16, 16)
    feats = block_features(net, "features.1")(x)
    net.eval()
    with torch.no_grad():
        want = net.features[:2](x).flatten(1)
        pen = net.forward_penultimate(x)
    net.train()
    assert torch.equal(feats, want) and not feats.requires_grad
    assert torch.equal(penultimate_features(net)(x), pen)
    assert net.training  # a network that is still training is not left in eval mode
    assert baselines.feature_params(net, "features.1") == sum(
        p.numel() for p in net.features[:2].parameters()
    )
    with pytest.raises(Exception, match="not a conv block"):
        block_features(net, "features.9")


# --------------------------------------------------------------------------- joint / protonet on tiny data


@pytest.fixture(scope="module")
def tiny():
    """6 source classes x 10 images (16x16), 3 tasks of 3 classes: the third task repeats classes."""
    g = torch.Generator().manual_seed(0)
    n_cls, per = 8, 10
    protos = torch.rand(n_cls, 1, 16, 16, generator=g) * 255
    images = protos.repeat_interleave(per, 0) * 0.7 + torch.rand(n_cls * per, 1, 16, 16, generator=g) * 76
    data = ImageSet(
        images=images.clamp(0, 255).to(torch.uint8),
        labels=torch.arange(n_cls).repeat_interleave(per),
        classes=[f"c{i}" for i in range(n_cls)],
        groups=["g"] * n_cls,
        name="tiny",
    )
    split = ClassSplit(source=tuple(f"c{i}" for i in range(6)), open_world=(), novel=("c6", "c7"))
    stream = TaskStream(data, split, n_tasks=3, ways=3, test_fraction=0.2, seed=0)
    cfg = Config()
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr = 2, 16, 0.05
    cfg.baseline.protonet_queries = 2
    arch = create_model("test_vgg", in_channels=1, image_size=16, num_classes=stream.num_classes).config()
    return stream, cfg, arch


def test_budgets_follow_the_stream(tiny):
    stream, cfg, _ = tiny
    per_task = [len(e.train_indices) for e in stream]
    assert per_task == [24, 24, 24]  # 3 classes x 8 training images
    budget = sum(per_task) * cfg.train.epochs
    assert stream_image_budget(stream, cfg.train.epochs) == budget == 144
    plan = joint_plan(stream, cfg)
    # the joint set holds each of the 6 classes' 8 training images once: 144 / 48 = 3 epochs
    assert (plan["train_images"], plan["epochs"], plan["images_processed"]) == (48, 3, 144)
    p = protonet_plan(stream, cfg)
    # trained at every shot the evaluation uses (the default settings 5way1shot and 5way5shot), in turn
    assert p["ways"] == 6 and p["shots"] == [1, 5]
    # as many optimizer steps as joint: 3 epochs x 3 batches of 16
    assert p["episodes"] == p["joint_steps"] == 9
    assert p["images_processed"] == 5 * 6 * (1 + 2) + 4 * 6 * (5 + 2)
    assert p["lr"] == cfg.train.lr  # unless baseline.protonet_lr says otherwise
    own = copy.deepcopy(cfg)
    own.baseline.protonet_shots, own.baseline.protonet_lr = 1, 0.01
    assert protonet_plan(stream, own)["shots"] == [1] and protonet_plan(stream, own)["lr"] == 0.01
    # a measured budget (exemplar replay) replaces the stream's, for joint and so for protonet's steps
    assert joint_plan(stream, cfg, budget_images=96)["epochs"] == 2
    assert protonet_plan(stream, cfg, budget_images=96)["episodes"] == 2 * 3
    cfg2 = Config()
    cfg2.train.epochs, cfg2.baseline.joint_epochs, cfg2.baseline.protonet_episodes = 2, 5, 4
    cfg2.baseline.protonet_queries = 2
    assert joint_plan(stream, cfg2)["epochs"] == 5 and protonet_plan(stream, cfg2)["episodes"] == 4


@pytest.mark.parametrize("name", ["joint", "protonet"])
def test_trained_baseline_is_cached_and_reloads_identically(tiny, tmp_path, name):
    stream, cfg, arch = tiny
    train = train_joint if name == "joint" else train_protonet
    calls = []

    def fit():
        calls.append(1)
        return train(arch, stream, SPEC, cfg)

    key = cache_key(name, arch, stream, SPEC, cfg)
    model, info = cached_baseline(tmp_path / name, key, fit)
    assert calls == [1] and info["cached"] is False and math.isfinite(info["final_loss"])
    if name == "joint":
        assert info["images_processed"] == 144  # the stream budget, met exactly on this data
    else:
        assert info["steps"] == 9 and info["shots"] == [1, 5]  # joint's steps, at both evaluated shots
    fresh = create_model("test_vgg", in_channels=1, image_size=16, num_classes=stream.num_classes)
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in model.state_dict().items())  # it trained
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["baseline.json", "model.safetensors"]

    again, info2 = cached_baseline(tmp_path / name, key, fit)
    assert calls == [1] and info2["cached"] is True  # loaded, not retrained
    want = model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in again.state_dict().items())
    # the same seed trains the same weights: the cache holds what a rerun would compute
    redo, _ = train(arch, stream, SPEC, cfg)
    assert all(torch.equal(v, want[k]) for k, v in redo.state_dict().items())

    # another configuration or a damaged file is retrained, never silently reused
    cfg_other = json.loads(json.dumps(key))
    cfg_other["seed"] = 1
    cached_baseline(tmp_path / name, cfg_other, fit)
    assert calls == [1, 1]
    blob = (tmp_path / name / "model.safetensors").read_bytes()
    (tmp_path / name / "model.safetensors").write_bytes(blob[:-4] + b"\0\0\0\0")
    with pytest.raises(Exception, match="sha256"):
        load_baseline(tmp_path / name, cfg_other)
    cached_baseline(tmp_path / name, cfg_other, fit)
    assert calls == [1, 1, 1]

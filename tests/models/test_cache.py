"""The one cache of trained networks (joint/ProtoNet backbones, a ViT run's ancestry and auxiliary net)."""

from __future__ import annotations

import json

import pytest
import torch

from learngene.artifacts import NETWORK
from learngene.errors import LearngeneError
from learngene.models import create_model
from learngene.models.cache import cached_network, fingerprint, load_cached
from learngene.models.io import save_network


def _net(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("test_vgg", in_channels=1, image_size=16, num_classes=3)


def test_reused_under_an_equal_key_retrained_otherwise(tmp_path):
    calls = []

    def train(seed=0):
        calls.append(seed)
        return _net(seed), {"val_acc": 0.5, "loss": [float("nan")]}

    where = tmp_path / "c"
    model, info = cached_network(where, NETWORK, {"lr": 0.1, "shape": (1, 2)}, train)
    assert info["cached"] is False and info["val_acc"] == 0.5
    again, info2 = cached_network(where, NETWORK, {"lr": 0.1, "shape": [1, 2]}, train)  # the key's JSON form
    assert calls == [0] and info2["cached"] is True and info2["loss"] == [None]  # stored as strict JSON
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())
    cached_network(where, NETWORK, {"lr": 0.2, "shape": [1, 2]}, lambda: train(1))
    assert calls == [0, 1]
    # an entry the caller cannot use (accept) is retrained too, and a mismatch is an error for load_cached
    _, info3 = cached_network(where, NETWORK, {"lr": 0.2, "shape": [1, 2]}, lambda: train(2),
                              accept=lambda m, rec: "params" in rec)
    assert calls == [0, 1, 2] and info3["cached"] is False
    with pytest.raises(LearngeneError, match="another configuration"):
        load_cached(where, NETWORK, {"lr": 0.3})
    assert cached_network(None, NETWORK, "k", lambda: train(3))[1]["cached"] is False and calls[-1] == 3


def test_entries_of_the_former_vit_cache_are_still_reused(tmp_path):
    """ViT runs stored ``fingerprint`` and ``record``: their trained ancestries stay valid cache entries."""
    fp = fingerprint({"depth": 2})
    save_network(_net(), tmp_path / "old", NETWORK, {"fingerprint": fp, "record": {"params": 1, "val_acc": 0.4}})
    model, info = cached_network(tmp_path / "old", NETWORK, fp, lambda: pytest.fail("retrained"))
    assert info == {"params": 1, "val_acc": 0.4, "cached": True}
    assert json.loads((tmp_path / "old" / NETWORK.manifest).read_text())["fingerprint"] == fp

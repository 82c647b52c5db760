"""The training engine: one batcher, one loop (seeding, curves, AMP, the non-finite guard), one accuracy."""

from __future__ import annotations

import pytest
import torch

from learngene.engine import Batches, fit
from learngene.errors import ConfigError, NonFiniteError
from learngene.models.vit import build_vit, vit_preset_config
from learngene.runtime import seeded


@pytest.fixture
def tiny_cfg() -> dict:
    return vit_preset_config("vit_test", in_chans=1, num_classes=5, depth=3)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(123))


def test_non_finite_loss_raises_a_clear_error(tiny_cfg, batch):
    model = build_vit(tiny_cfg)
    bad = batch.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="non-finite classification loss at epoch 0, batch 0"):
        fit(model, [(bad, torch.zeros(len(bad), dtype=torch.long))], epochs=1)


def test_classifier_curve_seed_and_global_rng(tiny_cfg, batch):
    cfg = {**tiny_cfg, "drop_rate": 0.3, "depth": 1}  # dropout: the seed must decide the masks
    y = torch.arange(len(batch)) % 5
    loader = [(batch, y)]
    seen: list[int] = []

    def eval_fn(model) -> float:
        seen.append(int(model.training))
        return 0.5

    def run(seed: int) -> dict:
        with seeded(3):
            model = build_vit(cfg)
        return fit(model, loader, 3, seed=seed, evaluate=eval_fn, eval_epochs=[0, 1, 3])

    rng = torch.get_rng_state()
    a, b, c = run(7), run(7), run(8)
    assert torch.equal(torch.get_rng_state(), rng)  # seeded runs never move the caller's RNG
    assert a["loss"] == b["loss"] and a["loss"] != c["loss"]
    assert a["curve_epochs"] == [0, 1, 3] and a["curve"] == [0.5, 0.5, 0.5]


def test_tensor_batches_reshuffle_reproducibly():
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    first = [b[1].tolist() for b in Batches(x, y, 4, seed=1)]
    loader = Batches(x, y, 4, seed=1)
    epoch1, epoch2 = [b[1].tolist() for b in loader], [b[1].tolist() for b in loader]
    assert epoch1 == first and epoch1 != epoch2 and len(loader) == 3
    assert sorted(sum(epoch2, [])) == list(range(10))
    with pytest.raises(ConfigError, match="batch_size"):
        Batches(x, y, 0)


def test_amp_path_runs_on_cpu(tiny_cfg, batch):
    model = build_vit({**tiny_cfg, "depth": 1})
    out = fit(model, [(batch, torch.arange(len(batch)) % 5)], 2, amp=True, seed=0)
    assert len(out["loss"]) == 2 and all(torch.isfinite(torch.tensor(out["loss"])))

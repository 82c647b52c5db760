"""The training engine: one batcher, one loop (seeding, curves, AMP, the non-finite guard), one accuracy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learngene.engine import Batches, accuracy, fit
from learngene.errors import ConfigError, NonFiniteError
from learngene.runtime import seeded


def _net(dropout: float = 0.0) -> nn.Module:
    """A small classifier of 16 x 16 one-channel images (dropout: the seed must decide the masks)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 5))


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(123))


def test_non_finite_loss_raises_a_clear_error(batch):
    model = _net()
    bad = batch.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="non-finite classification loss at epoch 0, batch 0"):
        fit(model, [(bad, torch.zeros(len(bad), dtype=torch.long))], epochs=1)


def test_classifier_curve_seed_and_global_rng(batch):
    y = torch.arange(len(batch)) % 5
    loader = [(batch, y)]
    seen: list[int] = []

    def eval_fn(model) -> float:
        seen.append(int(model.training))
        return 0.5

    def run(seed: int) -> dict:
        with seeded(3):
            model = _net(0.3)
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


def test_amp_path_runs_on_cpu(batch):
    model = _net()
    out = fit(model, [(batch, torch.arange(len(batch)) % 5)], 2, amp=True, seed=0)
    assert len(out["loss"]) == 2 and all(torch.isfinite(torch.tensor(out["loss"])))


def test_epoch_seeds_give_every_epoch_its_own_order_and_dropout(batch):
    """``epoch_seed`` / a callable ``seed``: an epoch's batches and dropout depend on its number only."""
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    batches = Batches(x, y, 4, epoch_seed=lambda e: 100 + e)
    batches.set_epoch(1)
    first = [b[1].tolist() for b in batches]
    batches.set_epoch(0)
    batches.set_epoch(1)
    assert [b[1].tolist() for b in batches] == first  # the same epoch again: the same order
    losses = []
    for seeds in ({0: 1, 1: 2}, {0: 1, 1: 3}):
        with seeded(3):
            model = _net(0.5)
        losses.append(fit(model, [(batch, torch.arange(len(batch)) % 5)], 2, seed=seeds.__getitem__)["loss"])
    assert losses[0][0] == losses[1][0] and losses[0][1] != losses[1][1]


def test_loss_hook_step_losses_and_accuracy_on_raw_images():
    images = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 5
    spec = {"mean": [0.5], "std": [0.25]}
    with seeded(0):
        model = _net()
    calls = []

    def loss(m, x, target):
        calls.append(x.dtype)
        return torch.nn.functional.cross_entropy(m(x), target) * 0.0 + m(x).pow(2).mean()

    out = fit(model, Batches(images, y, 3, spec=spec), 2, loss=loss, seed=0)
    assert calls == [torch.float32] * 6 and len(out["step_loss"]) == 6 and len(out["loss"]) == 2
    acc = accuracy(model, images, y, spec=spec, batch_size=3)
    from learngene.data.transforms import normalize

    with torch.no_grad():
        expected = (model(normalize(images, [0.5], [0.25])).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(expected)


def test_train_mode_hook_runs_every_epoch_and_keeps_a_layer_in_eval_mode(batch):
    """``train_mode``: e.g. inherited BatchNorm layers kept on their statistics while the rest trains (the
    individual recipe's ``bn = frozen``); the evaluation in between does not undo it for the next epoch."""
    with seeded(0):
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 14 * 14, 5))
    kept = model[1].running_mean.clone()
    modes: list[bool] = []

    def train_mode(m: nn.Module) -> None:
        m.train()
        m[1].eval()

    def loss(m, x, y):
        modes.append(m[1].training)
        return torch.nn.functional.cross_entropy(m(x), y)

    fit(model, [(batch, torch.arange(len(batch)) % 5)], 3, loss=loss, train_mode=train_mode,
        evaluate=lambda m: float(m.eval() is m), seed=0)
    assert modes == [False, False, False] and torch.equal(model[1].running_mean, kept)
    fit(model, [(batch, torch.arange(len(batch)) % 5)], 1, seed=0)  # the default: model.train()
    assert not torch.equal(model[1].running_mean, kept)


def test_batches_take_any_augmentation_callable_drawing_from_their_generator():
    x, y = torch.zeros(6, 1, 4, 4), torch.arange(6)
    draws: list[torch.Tensor] = []

    def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        draws.append(torch.rand(len(images), generator=generator))
        return images + draws[-1][:, None, None, None]

    out = [b for b in Batches(x, y, 4, augment=augment, seed=5)]
    assert len(draws) == 2 and torch.equal(out[0][0][:, 0, 0, 0], draws[0])
    again = [b for b in Batches(x, y, 4, augment=augment, seed=5)]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(out, again))
    assert Batches(x, y, 4, augment="none").augment is None

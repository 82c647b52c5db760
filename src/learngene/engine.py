"""The training engine: one batcher, one "fit a model" loop and one accuracy helper for every trained model.

What differs between the models this package trains (an ancestry, an auxiliary net by distillation, descendants,
individual models, the joint and ProtoNet reference backbones) is the loss, the optimizer, the data and how the
model enters training mode (inherited BatchNorm layers may stay on their statistics); the mechanics are the same
and live here once (Lightning's split): mini-batches drawn by a private generator, mixed precision with loss
scaling, the non-finite guard, the learning-rate schedule stepped per batch, the accuracy curve at chosen
epochs (its time not counted as training), seeding that never touches the caller's RNG, and a progress bar.

* :func:`batch_of` cuts, augments, moves and normalizes one batch of images (the collective trainer's batches
  use it too); :class:`Batches` iterates over in-memory examples with it.
* :func:`fit` trains ``model`` on ``batches`` for ``epochs`` under a ``loss(model, x, y)`` hook (cross-entropy
  by default); :func:`accuracy` scores a classifier.

The collective trainer keeps its own plugin loop (plugins own the loss terms, growth and checkpoints), built on
the same batches: these are the package's two training loops.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learngene.data.transforms import BatchAugment, normalize
from learngene.errors import ConfigError, ModelError, NonFiniteError
from learngene.runtime import autocast, grad_scaler, progress_bar, seeded

__all__ = ["Batches", "LossFn", "OptimizerFactory", "SchedulerFactory", "accuracy", "batch_of", "cosine_schedule",
           "fit"]

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer, int], Any]
LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _positive_int(value: Any, what: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{what} must be an integer >= {low}, got {value!r}")
    return value


def batch_of(images: Tensor, idx: Tensor, *, augment: Callable[..., Tensor] | None = None,
             generator: torch.Generator | None = None, spec: Mapping[str, Any] | None = None,
             device: torch.device | str | None = None, channels_last: bool = False) -> Tensor:
    """``images[idx]`` augmented per sample (``generator``'s draws), moved to ``device``, normalized with
    ``spec``'s mean and std (uint8 images; None: taken as they are)."""
    x = images[idx]
    if augment is not None:
        x = augment(x, generator=generator)
    if device is not None:
        x = x.to(device, non_blocking=True)
    if spec is not None:
        x = normalize(x, spec["mean"], spec["std"])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class Batches:
    """Re-iterable mini-batches of in-memory examples ``(x, y)``, reshuffled every epoch by a private generator.

    ``spec``: uint8 images normalized per batch (after ``augment``, which draws from the same generator, one set
    of parameters per sample: a :class:`BatchAugment`, its name, or any ``augment(x, generator=g)``). ``epoch_seed(epoch)``: a fresh generator every epoch (``fit`` announces the epoch
    through :meth:`set_epoch`), so an epoch's order depends only on its number; otherwise one generator seeded by
    ``seed`` runs through all epochs.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, *, spec: Mapping[str, Any] | None = None,
                 augment: str | Callable[..., Tensor] | None = None, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False, device: torch.device | str | None = None,
                 epoch_seed: Callable[[int], int] | None = None) -> None:
        if len(x) != len(y):
            raise ConfigError(f"Batches: {len(x)} inputs but {len(y)} labels")
        _positive_int(batch_size, "batch_size")
        self.x, self.y, self.spec, self.device = x, y, spec, device
        self.batch_size = max(1, min(batch_size, len(x))) if len(x) else batch_size
        if isinstance(augment, str):
            augment = BatchAugment(augment) if augment != "none" else None
        self.augment = augment
        self.shuffle, self.drop_last, self.epoch_seed = shuffle, drop_last, epoch_seed
        self.generator = torch.Generator().manual_seed(int(seed))

    def set_epoch(self, epoch: int) -> None:
        if self.epoch_seed is not None:
            self.generator = torch.Generator().manual_seed(int(self.epoch_seed(epoch)))

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = batch_of(self.x, idx, augment=self.augment, generator=self.generator, spec=self.spec,
                         device=self.device)
            yield x, self.y[idx.to(self.y.device)]


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, spec: Mapping[str, Any] | None = None,
             batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``x`` (normalized with ``spec`` when given), in chunks
    of ``batch_size`` on the model's device."""
    model.eval()
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    correct = 0
    for s in range(0, len(x), batch_size):
        xb = x[s : s + batch_size].to(dev)
        if spec is not None:
            xb = normalize(xb, spec["mean"], spec["std"])
        correct += int((model(xb).argmax(1) == y[s : s + batch_size].to(dev)).sum())
    return correct / max(1, len(y))


def cosine_schedule(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay to 0 over ``steps`` optimizer steps, no warm-up (a :data:`SchedulerFactory`)."""
    total = max(1, steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total)))


def _device(device: torch.device | str | None) -> torch.device:
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but CUDA is not available; use device='cpu'")
    return dev


def _cross_entropy(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x).float(), y)


def fit(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    epochs: int,
    *,
    loss: LossFn | None = None,
    optimizer: OptimizerFactory | torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    scheduler: SchedulerFactory | None = None,
    device: torch.device | str | None = None,
    amp: bool = False,
    seed: int | Callable[[int], int] | None = None,
    grad_clip: float | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    eval_epochs: Iterable[int] | None = None,
    what: str = "classification",
    nonfinite: Callable[[int, int], str] | None = None,
    train_mode: Callable[[nn.Module], None] | None = None,
    progress: bool = False,
    desc: str = "training",
) -> dict[str, Any]:
    """Train ``model`` on ``batches`` for ``epochs``; returns ``{"loss": [mean per epoch], "step_loss": [per
    batch], "curve": [...], "curve_epochs": [...], "train_seconds": s}``.

    ``loss(model, x, y)``: the batch's loss (default: cross-entropy of ``model(x)``), computed under autocast when
    ``amp``. ``optimizer``: an optimizer, or a factory of the trainable parameters (default AdamW with ``lr`` and
    ``weight_decay``); ``scheduler(optimizer, total_steps)`` steps per batch. ``seed``: the loop runs inside
    :func:`~learngene.runtime.seeded` (dropout reproducible, the caller's RNG left alone); a callable gives every
    epoch its own seed. ``evaluate(model)`` runs after the epochs in ``eval_epochs`` (default every epoch; 0 means
    before training), must set eval mode itself, and its time is not counted. A non-finite loss raises
    :class:`NonFiniteError` (``nonfinite(epoch, batch)`` words it). ``train_mode(model)`` puts the model in
    training mode at the start of every epoch (default ``model.train()``; e.g. inherited BatchNorm layers kept
    on their statistics). ``progress`` shows a bar over the epochs (on a terminal).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be an integer >= 0, got {epochs!r}")
    dev = _device(device)
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ModelError(f"{what}: the model has no trainable parameters")
    if isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
    else:
        opt = optimizer(params) if optimizer is not None else torch.optim.AdamW(params, lr=lr,
                                                                                weight_decay=weight_decay)
    steps = epochs * len(batches) if hasattr(batches, "__len__") else 0
    sched = scheduler(opt, steps) if scheduler is not None else None
    scaler = grad_scaler(dev, amp)
    batch_loss = loss or _cross_entropy
    when = set(range(1, epochs + 1)) if eval_epochs is None else {int(e) for e in eval_epochs}
    epoch_seed = seed if callable(seed) else None
    losses: list[float] = []
    step_losses: list[float] = []
    curve: list[float] = []
    curve_epochs: list[int] = []
    eval_seconds = 0.0

    def score(epoch: int) -> None:
        nonlocal eval_seconds
        if evaluate is None or epoch not in when:
            return
        tick = time.perf_counter()
        was = model.training
        curve.append(float(evaluate(model)))
        curve_epochs.append(epoch)
        model.train(was)
        eval_seconds += time.perf_counter() - tick

    start = time.perf_counter()
    to_train = train_mode or (lambda m: m.train())
    bar = progress_bar(range(epochs), enabled=progress, desc=desc, unit="epoch")
    with seeded(None if epoch_seed is not None else seed, dev):
        score(0)
        for epoch in bar:
            if hasattr(batches, "set_epoch"):
                batches.set_epoch(epoch)
            with seeded(epoch_seed(epoch), dev) if epoch_seed is not None else contextlib.nullcontext():
                to_train(model)
                total, count = 0.0, 0
                for b, (x, y) in enumerate(batches):
                    x = x.to(dev, non_blocking=True)
                    y = y.to(dev, non_blocking=True)
                    with autocast(dev, amp):
                        value = batch_loss(model, x, y)
                    if not torch.isfinite(value.detach()):
                        raise NonFiniteError(nonfinite(epoch, b) if nonfinite is not None else (
                            f"non-finite {what} loss at epoch {epoch}, batch {b}; lower the learning rate "
                            f"(now {opt.param_groups[0]['lr']:g}){' or turn off amp' if amp else ''}"))
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(value).backward()
                    if grad_clip is not None:
                        scaler.unscale_(opt)
                        nn.utils.clip_grad_norm_(params, grad_clip)
                    scaler.step(opt)
                    scaler.update()
                    if sched is not None:
                        sched.step()
                    step_losses.append(float(value.detach()))
                    total += step_losses[-1] * len(x)
                    count += len(x)
            if count == 0:
                raise ConfigError(f"{what}: the batches yielded nothing; check the data and batch size")
            losses.append(total / count)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            score(epoch + 1)
    bar.close()
    seconds = time.perf_counter() - start - eval_seconds
    return {"loss": losses, "step_loss": step_losses, "curve": curve, "curve_epochs": curve_epochs,
            "train_seconds": seconds}


def eval_points(eval_epochs: Sequence[int], epochs: int) -> list[int]:
    """The epochs of an accuracy curve: those asked for within ``0..epochs``, and always the last."""
    return sorted({int(e) for e in eval_epochs if 0 <= int(e) <= epochs} | {epochs})

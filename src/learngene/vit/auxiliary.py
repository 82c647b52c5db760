"""Training loops for transformer learngenes: distillation of an auxiliary net, and plain classification.

TLEG and SWS train their auxiliary network by distilling an ancestry model (soft: KL on softened logits,
or DeiT's hard labels), mixed with cross-entropy; descendants, scratch baselines and the ancestry itself
train with plain cross-entropy.  Both share one loop (:func:`_fit`) so curves, timing, AMP and the
non-finite guard behave identically.  Nothing here reseeds the global RNG: a ``seed`` runs the loop inside
a forked RNG (dropout / drop-path reproducible), and :class:`TensorBatches` shuffles with its own generator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learngene.errors import ConfigError, ModelError, NonFiniteError
from learngene.runtime import seeded

__all__ = [
    "TensorBatches",
    "distillation_loss",
    "train_classifier",
    "train_distilled",
]

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer, int], Any]


class TensorBatches:
    """Re-iterable mini-batches over in-memory tensors, reshuffled every epoch by a private generator."""

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if len(x) != len(y):
            raise ConfigError(f"TensorBatches: {len(x)} inputs but {len(y)} labels")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


def _check_distill_settings(mode: str, alpha: float, temperature: float) -> None:
    if mode not in ("soft", "hard"):
        raise ConfigError(f"distillation mode must be 'soft' or 'hard', got {mode!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"distillation alpha must be in [0, 1], got {alpha!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0.0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature!r}")


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor | None = None,
    *,
    mode: str = "soft",
    alpha: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:
    """``(1 - alpha) * CE(student, targets) + alpha * D``, computed in float32 even under autocast.

    ``mode="soft"``: D = KL(teacher || student) on logits divided by ``temperature``, times ``temperature**2``
    (so gradients keep their scale as T changes).  ``mode="hard"``: D = CE(student, teacher argmax), DeiT's
    hard distillation.  ``alpha=1`` is pure distillation and needs no ``targets``.
    """
    _check_distill_settings(mode, alpha, temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ModelError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ: distillation needs the same label set (give the student the teacher's class count)"
        )
    s, t = student_logits.float(), teacher_logits.detach().float()
    if mode == "soft":
        tau = float(temperature)
        distill = F.kl_div(
            F.log_softmax(s / tau, dim=-1),
            F.log_softmax(t / tau, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (tau * tau)
    else:
        distill = F.cross_entropy(s, t.argmax(dim=-1))
    if alpha >= 1.0:
        return distill
    if targets is None:
        raise ConfigError(
            f"alpha={alpha} mixes in cross-entropy, which needs targets; pass targets or alpha=1"
        )
    return (1.0 - alpha) * F.cross_entropy(s, targets) + alpha * distill


def _device(device: torch.device | str | None) -> torch.device:
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but CUDA is not available; use device='cpu'")
    return dev


def _fit(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    epochs: int,
    batch_loss: Callable[[Tensor, Tensor], Tensor],
    *,
    what: str,
    optimizer_factory: OptimizerFactory | None,
    lr: float,
    weight_decay: float,
    scheduler_factory: SchedulerFactory | None,
    device: torch.device,
    amp: bool,
    seed: int | None,
    grad_clip: float | None,
    eval_fn: Callable[[nn.Module], float] | None,
    eval_epochs: Iterable[int] | None,
) -> dict[str, Any]:
    """The one training loop: returns per-epoch mean loss, the eval curve and training-only seconds."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be an integer >= 0, got {epochs!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ModelError(f"{what}: the model has no trainable parameters")
    opt = (
        optimizer_factory(params)
        if optimizer_factory is not None
        else torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    )
    steps = epochs * len(loader) if hasattr(loader, "__len__") else 0
    scheduler = scheduler_factory(opt, steps) if scheduler_factory is not None else None
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    when = set(range(1, epochs + 1)) if eval_epochs is None else {int(e) for e in eval_epochs}
    losses: list[float] = []
    curve: list[float] = []
    curve_epochs: list[int] = []
    eval_seconds = 0.0

    def evaluate(epoch: int) -> None:
        nonlocal eval_seconds
        if eval_fn is None or epoch not in when:
            return
        tick = time.perf_counter()
        was = model.training
        curve.append(float(eval_fn(model)))
        curve_epochs.append(epoch)
        model.train(was)
        eval_seconds += time.perf_counter() - tick

    start = time.perf_counter()
    with seeded(seed, device):
        evaluate(0)
        for epoch in range(epochs):
            model.train()
            total, count = 0.0, 0
            for batch, (x, y) in enumerate(loader):
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    loss = batch_loss(x, y)
                if not torch.isfinite(loss.detach()):
                    raise NonFiniteError(
                        f"non-finite {what} loss at epoch {epoch}, batch {batch}; lower the learning rate "
                        f"(now {opt.param_groups[0]['lr']:g}){' or turn off amp' if amp else ''}"
                    )
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip is not None:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(params, grad_clip)
                scaler.step(opt)
                scaler.update()
                if scheduler is not None:
                    scheduler.step()
                total += float(loss.detach()) * len(x)
                count += len(x)
            if count == 0:
                raise ConfigError(f"{what}: the loader yielded no batches; check the data and batch size")
            losses.append(total / count)
            evaluate(epoch + 1)
    seconds = time.perf_counter() - start - eval_seconds
    return {"loss": losses, "curve": curve, "curve_epochs": curve_epochs, "train_seconds": seconds}


def train_distilled(
    student: nn.Module,
    teacher: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    epochs: int,
    *,
    optimizer_factory: OptimizerFactory | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    scheduler_factory: SchedulerFactory | None = None,
    mode: str = "soft",
    alpha: float = 0.5,
    temperature: float = 1.0,
    device: torch.device | str | None = None,
    amp: bool = False,
    seed: int | None = None,
    grad_clip: float | None = None,
    eval_fn: Callable[[nn.Module], float] | None = None,
    eval_epochs: Iterable[int] | None = None,
) -> dict[str, Any]:
    """Distil ``teacher`` (frozen, eval mode, no grad) into ``student`` (AdamW unless ``optimizer_factory``).

    Returns ``{"loss": [mean loss per epoch], "curve": [...], "curve_epochs": [...], "train_seconds": s}``;
    ``eval_fn(student) -> accuracy`` runs after the epochs in ``eval_epochs`` (default every epoch; 0 means
    before training), must set eval mode itself, and its time is not counted.  ``scheduler_factory(optimizer, total_steps)`` steps per batch.
    """
    dev = _device(device)
    _check_distill_settings(mode, alpha, temperature)  # before any work
    student.to(dev)
    teacher.to(dev)
    teacher_was_training = teacher.training
    teacher.eval()

    def batch_loss(x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            t_logits = teacher(x)
        return distillation_loss(student(x), t_logits, y, mode=mode, alpha=alpha, temperature=temperature)

    try:
        return _fit(
            student,
            loader,
            epochs,
            batch_loss,
            what="distillation",
            optimizer_factory=optimizer_factory,
            lr=lr,
            weight_decay=weight_decay,
            scheduler_factory=scheduler_factory,
            device=dev,
            amp=amp,
            seed=seed,
            grad_clip=grad_clip,
            eval_fn=eval_fn,
            eval_epochs=eval_epochs,
        )
    finally:
        teacher.train(teacher_was_training)


def train_classifier(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    epochs: int,
    *,
    optimizer_factory: OptimizerFactory | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    scheduler_factory: SchedulerFactory | None = None,
    label_smoothing: float = 0.0,
    device: torch.device | str | None = None,
    amp: bool = False,
    seed: int | None = None,
    grad_clip: float | None = None,
    eval_fn: Callable[[nn.Module], float] | None = None,
    eval_epochs: Iterable[int] | None = None,
) -> dict[str, Any]:
    """Cross-entropy training (ancestry, scratch, descendant fine-tuning); same returns as :func:`train_distilled`."""
    dev = _device(device)
    model.to(dev)

    def batch_loss(x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(model(x).float(), y, label_smoothing=label_smoothing)

    return _fit(
        model,
        loader,
        epochs,
        batch_loss,
        what="classification",
        optimizer_factory=optimizer_factory,
        lr=lr,
        weight_decay=weight_decay,
        scheduler_factory=scheduler_factory,
        device=dev,
        amp=amp,
        seed=seed,
        grad_clip=grad_clip,
        eval_fn=eval_fn,
        eval_epochs=eval_epochs,
    )

"""The auxiliary net of TLEG / SWS, trained by distillation from the ancestry.

The auxiliary network learns the source classes from the ancestry's logits (soft: KL on softened logits, or
DeiT's hard labels), mixed with cross-entropy on the labels.  The loop is the engine's
(:func:`learngene.engine.fit`), so curves, timing, AMP, seeding and the non-finite guard are those of every
other training; this module only adds the loss.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learngene.engine import fit
from learngene.errors import ConfigError, ModelError

__all__ = ["distillation_loss", "train_distilled"]


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


def train_distilled(
    student: nn.Module,
    teacher: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    epochs: int,
    *,
    mode: str = "soft",
    alpha: float = 0.5,
    temperature: float = 1.0,
    **options: Any,
) -> dict[str, Any]:
    """Distil ``teacher`` (frozen, eval mode, no grad) into ``student`` with :func:`learngene.engine.fit`.

    ``options`` are the engine's (optimizer, scheduler, device, amp, seed, evaluate, eval_epochs, progress, ...);
    returns its record (loss per epoch, curve, training seconds).  The teacher's mode is restored afterwards.
    """
    _check_distill_settings(mode, alpha, temperature)  # before any work
    teacher.to(options.get("device") or "cpu")
    teacher_was_training = teacher.training
    teacher.eval()

    def loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            t_logits = teacher(x)
        return distillation_loss(model(x), t_logits, y, mode=mode, alpha=alpha, temperature=temperature)

    try:
        return fit(student, batches, epochs, loss=loss, what="distillation", **options)
    finally:
        teacher.train(teacher_was_training)

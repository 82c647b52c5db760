"""The auxiliary net of TLEG / SWS, trained by distillation from the ancestry.

The auxiliary network learns the source classes from the ancestry's logits (soft: KL on softened logits, or
DeiT's hard labels), mixed with cross-entropy on the labels.  The loop is the engine's
(:func:`learngene.engine.fit`), so curves, timing, AMP, seeding and the non-finite guard are those of every
other training; this module only adds the loss, and a starting point: :func:`init_from_ancestry` fits the
templates to the ancestry's blocks by least squares (``vit.aux_init = "ancestry"``), so distillation starts from
the expansion closest to the teacher rather than from TLEG's random templates.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learngene.engine import fit
from learngene.errors import ConfigError, ModelError
from learngene.models.expansion import ExpandedViT
from learngene.models.vit import BLOCK_PREFIX, num_blocks, shared_state_dict

__all__ = ["distillation_loss", "init_from_ancestry", "train_distilled"]


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


@torch.no_grad()
def init_from_ancestry(aux: ExpandedViT, ancestry: nn.Module) -> dict[str, float]:
    """Start ``aux`` from ``ancestry``: its templates the least-squares fit of the rule to the ancestry's blocks,
    its embeddings, final norm and head copied.  Returns the fit's R^2 per template tensor (1: the ancestry's
    blocks are exactly an expansion of the rule).

    With the rule's coefficients ``C`` at the ancestry's depth (``[L, n_templates]``: TLEG's ``[1, l/L]``), every
    element of every block tensor gets ``argmin_T ||C T - W||`` over its ``L`` values ``W`` (one ``lstsq`` per
    tensor, all elements at once): the linear rule fits a line through depth, a stagewise one the stage means.
    """
    depth = num_blocks(ancestry)
    try:
        coeffs = aux.rule.coefficients(depth)  # float64
    except ModelError as err:
        raise ConfigError(f"vit.aux_init = 'ancestry' fits the rule at the ancestry's depth {depth}: {err}") from None
    shared = shared_state_dict(ancestry, include_head=True)
    own = aux.vit.state_dict()
    bad = [k for k, v in shared.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise ModelError(f"the auxiliary net does not have the ancestry's shared tensors {bad[:4]} (another shape or "
                         "class count); init_from_ancestry needs the ancestry's own shape")
    aux.vit.load_state_dict(shared, strict=False)
    state = ancestry.state_dict()
    r2 = {}
    for name, param in aux.templates.named_parameters():
        w = torch.stack([state[f"{BLOCK_PREFIX}{i}.{name}"] for i in range(depth)]).double().reshape(depth, -1)
        fit_ = torch.linalg.lstsq(coeffs, w).solution  # [n_templates, elements]
        param.copy_(fit_.reshape(param.shape).to(param.dtype))
        resid = w - coeffs @ fit_
        total = ((w - w.mean(0)) ** 2).sum()
        r2[name] = float(1.0 - (resid ** 2).sum() / total) if total > 0 else 1.0
    return r2

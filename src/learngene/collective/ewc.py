"""Elastic weight consolidation (EWC) for a collective model that keeps growing.

The collective model learns a stream of tasks; EWC keeps the weights that mattered for earlier tasks close
to where they were, weighted by the diagonal of the empirical Fisher information. Two things differ from a
textbook EWC:

* the Fisher (:mod:`learngene.collective.fisher`) is computed from per-sample gradients formed in batches,
  not one backward pass per sample, and gives the same numbers;
* the network widens/deepens between tasks, so the stored anchors and Fisher are carried through the
  growth plan (:meth:`EWC.on_growth`), and if that was forgotten the penalty falls back to the overlapping
  leading slice of each parameter (new units are left free).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any

import torch
from torch import Tensor, nn

from learngene.collective.fisher import (
    ParamFilter,
    diagonal_fisher,
    diagonal_fisher_loop,
    exclude_classifier,
    model_device,
)
from learngene.errors import CheckpointError, ConfigError, ModelError, NonFiniteError

__all__ = ["EWC", "ParamFilter", "diagonal_fisher", "diagonal_fisher_loop", "exclude_classifier"]


def _overlap(a: Tensor, b: Tensor) -> tuple[slice, ...]:
    return tuple(slice(0, min(x, y)) for x, y in zip(a.shape, b.shape))


class EWC:
    """Online EWC (one anchor, accumulated Fisher) as a plugin that copes with a growing network.

    Usage per task: ``loss = ce + ewc.penalty(model)`` while training, ``ewc.consolidate(model, x, y)`` after
    the task, and ``ewc.on_growth(plan)`` right after the model is widened/deepened for the next task.
    ``params=None`` regularizes every trainable parameter except ``classifier.*`` (the head grows per task).
    """

    def __init__(self, lam: float, decay: float = 1.0, params: ParamFilter | None = None,
                 normalize: bool = False) -> None:
        if not (isinstance(lam, int | float) and math.isfinite(lam) and lam >= 0):
            raise ConfigError(f"EWC lambda must be a finite number >= 0, got {lam!r}")
        if not (isinstance(decay, int | float) and math.isfinite(decay) and decay >= 0):
            raise ConfigError(f"EWC decay must be a finite number >= 0 (1.0 = plain sum), got {decay!r}")
        self.lam = float(lam)
        self.decay = float(decay)
        self.params: ParamFilter = params if params is not None else exclude_classifier
        # normalize=True scales each task's Fisher to max 1: the raw Fisher spans orders of magnitude, and
        # SGD on lam * F * (p - a)^2 diverges once lr * lam * F exceeds ~2; scaled, lam * lr bounds the step.
        self.normalize = bool(normalize)
        self.n_consolidations = 0
        self._anchor: dict[str, Tensor] = {}
        self._fisher: dict[str, Tensor] = {}

    # -- state ----------------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """True once there is something to hold on to (after consolidate or set_reference)."""
        return bool(self._anchor)

    @property
    def anchor(self) -> dict[str, Tensor]:
        return dict(self._anchor)

    @property
    def fisher(self) -> dict[str, Tensor]:
        return dict(self._fisher)

    def consolidate(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        batch_size: int = 64,
        reduce: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    ) -> None:
        """After a task: ``F = decay * F + F_new`` and re-anchor at the current parameters.

        If a parameter grew since the last consolidation without :meth:`on_growth`, the old Fisher is added
        on the overlapping leading slice only.
        """
        new = diagonal_fisher(model, inputs, targets, batch_size=batch_size, params=self.params)
        if reduce is not None:  # e.g. average the per-rank Fisher across a torch.distributed group
            new = reduce(new)
        if self.normalize and new:
            top = max(float(f.max()) for f in new.values())
            if top > 0:
                new = {k: f / top for k, f in new.items()}
        merged: dict[str, Tensor] = {}
        for name, f_new in new.items():
            old = self._fisher.get(name)
            if old is None or self.decay == 0.0:
                merged[name] = f_new
                continue
            old = old.to(f_new.device)
            if old.shape == f_new.shape:
                merged[name] = f_new.add_(old, alpha=self.decay)
            elif old.dim() == f_new.dim():
                sl = _overlap(old, f_new)
                f_new[sl].add_(old[sl], alpha=self.decay)
                merged[name] = f_new
            else:
                merged[name] = f_new
        if self.normalize and merged:
            # keep the accumulated Fisher at max 1 too: summed over T tasks it would reach T and the same
            # lr * lam that was stable for task 1 would diverge a dozen tasks later
            top = max(float(f.max()) for f in merged.values())
            if top > 0:
                merged = {k: f / top for k, f in merged.items()}
        params = dict(model.named_parameters())
        self._fisher = merged
        self._anchor = {name: params[name].detach().clone() for name in merged}
        self.n_consolidations += 1

    def set_reference(self, model: nn.Module, fisher: dict[str, Tensor]) -> None:
        """Anchor the named parameters at their *current* values with the given importance.

        Used for individual models: after inheriting the learngene, keep the inherited layers close to it.
        Replaces any previous anchor.
        """
        params = dict(model.named_parameters())
        if not fisher:
            raise ConfigError("set_reference needs a non-empty {param_name: importance} dict")
        anchor: dict[str, Tensor] = {}
        imp: dict[str, Tensor] = {}
        for name, f in fisher.items():
            p = params.get(name)
            if p is None:
                raise ModelError(
                    f"set_reference: the model has no parameter named {name!r}; pass importances keyed by "
                    f"model.named_parameters() names (e.g. {next(iter(params), '<none>')!r})"
                )
            if not isinstance(f, Tensor) or tuple(f.shape) != tuple(p.shape):
                shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
                raise ModelError(
                    f"set_reference: importance for {name!r} has shape {shape} but the parameter has "
                    f"{tuple(p.shape)}; compute it on the same architecture"
                )
            f = f.detach().to(device=p.device, dtype=p.dtype)
            if not bool(torch.isfinite(f).all()) or bool((f < 0).any()):
                raise NonFiniteError(f"set_reference: importance for {name!r} must be finite and >= 0")
            anchor[name] = p.detach().clone()
            imp[name] = f.clone()
        self._anchor, self._fisher = anchor, imp
        self.n_consolidations = max(self.n_consolidations, 1)

    # -- training -------------------------------------------------------------------------------------------
    def penalty(self, model: nn.Module) -> Tensor:
        """``lam/2 * sum_i F_i (p_i - anchor_i)^2`` as a 0-dim tensor on the model's device.

        Exactly zero (no parameter traversal) before anything was consolidated or when ``lam == 0``.
        """
        if not self._anchor or self.lam == 0.0:
            return torch.zeros((), device=model_device(model))
        terms: list[Tensor] = []
        for name, p in model.named_parameters():
            a = self._anchor.get(name)
            if a is None:
                continue
            f = self._fisher[name]
            if a.device != p.device:  # moved model (or loaded on CPU): follow it once
                a = self._anchor[name] = a.to(p.device)
                f = self._fisher[name] = f.to(p.device)
            if a.shape == p.shape:
                terms.append((f * (p - a).pow(2)).sum())
            elif a.dim() == p.dim():
                sl = _overlap(a, p)
                terms.append((f[sl] * (p[sl] - a[sl]).pow(2)).sum())
            else:
                raise ModelError(
                    f"EWC: parameter {name!r} changed from shape {tuple(a.shape)} to {tuple(p.shape)} (different "
                    "rank); call ewc.on_growth(plan) right after growing the model"
                )
        if not terms:
            raise ModelError(
                "EWC: none of the consolidated parameters exists in this model (names changed?); call "
                "ewc.on_growth(plan) after growth, or consolidate again on this model"
            )
        return torch.stack(terms).sum() * (self.lam / 2.0)

    @torch.no_grad()
    def penalty_grads(self, model: nn.Module, names: Collection[str] | None = None) -> dict[str, Tensor]:
        """The gradient of :meth:`penalty` by parameter name, ``lam * F * (p - anchor)``, without autograd.

        Lets a caller split the EWC pull out of ``p.grad`` (the gradient recorder measures the task loss only).
        A parameter that grew past its anchor gets the gradient on the overlapping leading slice and 0 on the
        rest, as :meth:`penalty` only penalizes that slice. ``names`` restricts the result to those parameters
        (cheaper when only a few are needed). Empty when the penalty is identically zero.
        """
        if not self._anchor or self.lam == 0.0:
            return {}
        wanted = None if names is None else set(names)
        out: dict[str, Tensor] = {}
        found = False
        for name, p in model.named_parameters():
            a = self._anchor.get(name)
            if a is None:
                continue
            found = True
            if wanted is not None and name not in wanted:
                continue
            f = self._fisher[name]
            if a.device != p.device:  # same device-following as penalty()
                a = self._anchor[name] = a.to(p.device)
                f = self._fisher[name] = f.to(p.device)
            if a.shape == p.shape:
                g = (p.detach() - a).mul_(f).mul_(self.lam)
            elif a.dim() == p.dim():
                sl = _overlap(a, p)
                g = torch.zeros_like(p, dtype=torch.promote_types(p.dtype, f.dtype))
                g[sl] = (p.detach()[sl] - a[sl]).mul_(f[sl]).mul_(self.lam)
            else:
                raise ModelError(
                    f"EWC: parameter {name!r} changed from shape {tuple(a.shape)} to {tuple(p.shape)} (different "
                    "rank); call ewc.on_growth(plan) right after growing the model"
                )
            out[name] = g.to(p.dtype)
        if not found:
            raise ModelError(
                "EWC: none of the consolidated parameters exists in this model (names changed?); call "
                "ewc.on_growth(plan) after growth, or consolidate again on this model"
            )
        return out

    def on_growth(self, plan: Any) -> None:
        """Carry anchors and Fisher through a growth plan (``plan.transform_state(d, kind=...)``).

        Anchors are mapped like parameters (``kind="param"``: function-preserving copy), the Fisher like an
        importance (``kind="importance"``: the plan decides how new units are weighted).
        """
        if not self._anchor:
            return
        transform = getattr(plan, "transform_state", None)
        if not callable(transform):
            raise ConfigError(
                f"EWC.on_growth needs a growth plan with transform_state(state, kind=...), got {type(plan).__name__}"
            )
        anchor = transform(dict(self._anchor), kind="param")
        fisher = transform(dict(self._fisher), kind="importance")
        if not isinstance(anchor, dict) or not isinstance(fisher, dict) or set(anchor) != set(fisher):
            raise ModelError(
                "EWC.on_growth: the plan returned anchors and Fisher with different names; transform_state "
                "must map both dicts the same way"
            )
        for name in anchor:
            if tuple(anchor[name].shape) != tuple(fisher[name].shape):
                raise ModelError(
                    f"EWC.on_growth: after the plan, anchor {name!r} has shape {tuple(anchor[name].shape)} but "
                    f"its Fisher has {tuple(fisher[name].shape)}; the plan must grow both alike"
                )
        self._anchor = {k: v.detach() for k, v in anchor.items()}
        self._fisher = {k: v.detach() for k, v in fisher.items()}

    # -- persistence ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain floats/ints/names + CPU tensors: loadable with ``torch.load(weights_only=True)``."""
        return {
            "lam": self.lam,
            "decay": self.decay,
            "n_consolidations": int(self.n_consolidations),
            "anchor": {k: v.detach().cpu().clone() for k, v in self._anchor.items()},
            "fisher": {k: v.detach().cpu().clone() for k, v in self._fisher.items()},
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; tensors follow the model's device on the first penalty."""
        try:
            lam, decay = float(d["lam"]), float(d["decay"])
            n = int(d["n_consolidations"])
            anchor, fisher = dict(d["anchor"]), dict(d["fisher"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"EWC state is incomplete or malformed ({exc!r}); expected keys lam, decay, n_consolidations, "
                "anchor, fisher as written by EWC.state_dict() -- use a checkpoint written by this version"
            ) from exc
        if set(anchor) != set(fisher) or any(
            not isinstance(anchor[k], Tensor)
            or not isinstance(fisher[k], Tensor)
            or anchor[k].shape != fisher[k].shape
            for k in anchor
        ):
            raise CheckpointError(
                "EWC state: anchor and fisher must be tensors with the same names and shapes; the checkpoint "
                "is corrupt -- resume from an earlier checkpoint"
            )
        self.lam, self.decay, self.n_consolidations = lam, decay, n
        self._anchor = {k: v.detach().clone() for k, v in anchor.items()}
        self._fisher = {k: v.detach().clone() for k, v in fisher.items()}

    def to(self, device: torch.device | str) -> EWC:
        self._anchor = {k: v.to(device) for k, v in self._anchor.items()}
        self._fisher = {k: v.to(device) for k, v in self._fisher.items()}
        return self

    def __repr__(self) -> str:
        return (
            f"EWC(lam={self.lam}, decay={self.decay}, consolidations={self.n_consolidations}, "
            f"params={len(self._anchor)})"
        )

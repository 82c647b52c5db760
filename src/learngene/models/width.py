"""Effective width: how many *distinct* channels a conv block holds, and the parameters that really count.

Why: Net2WiderNet widening replicates units. A replica whose incoming weights, bias and BatchNorm state equal its
source's computes the same activation, so a layer of 80 channels with 16 unchanged copies is a 64-channel layer
in effect (its outgoing weights can be summed). Only channels that diverged under training add capacity; this
module counts those, so parameter figures and "share of the collective" ratios count what is real.

Two channels of a block are the same when every entry of their signature (conv weight row, conv bias, BN weight,
BN bias, running mean, running variance) agrees within ``|a - b| <= atol + rtol * max(|a|, |b|)``
(:data:`RTOL`, :data:`ATOL`). A channel counts once per group of mutually equal channels (greedy grouping in
channel order: a channel joins the first earlier representative it matches).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

RTOL = 1e-5
ATOL = 1e-7
_PARTS = ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")


def tolerance() -> dict[str, float]:
    """The tolerance the counts use, for reports."""
    return {"rtol": RTOL, "atol": ATOL}


def _signatures(tensors: Mapping[str, Tensor], prefix: str) -> Tensor:
    cols = []
    for part in _PARTS:
        t = tensors.get(f"{prefix}.{part}")
        if t is not None:
            cols.append(t.detach().reshape(t.shape[0], -1).double().cpu())
    if not cols:
        raise KeyError(f"no conv/bn tensors under {prefix!r}")
    return torch.cat(cols, dim=1)


def distinct_channels(sig: Tensor, rtol: float = RTOL, atol: float = ATOL) -> int:
    """Number of groups of equal rows of ``sig`` [channels, entries] within the tolerance."""
    reps: list[Tensor] = []
    for row in sig:
        if not any(bool((torch.abs(row - r) <= atol + rtol * torch.maximum(row.abs(), r.abs())).all()) for r in reps):
            reps.append(row)
    return len(reps)


def block_prefixes(tensors: Mapping[str, Tensor]) -> list[str]:
    """``features.N`` prefixes that hold a conv weight, in block order."""
    out = {k[: -len(".conv.weight")] for k in tensors if k.endswith(".conv.weight")}
    return sorted(out, key=lambda p: (p.rsplit(".", 1)[0], int(p.rsplit(".", 1)[-1]) if p[-1].isdigit() else -1))


def effective_widths_of(tensors: Mapping[str, Tensor], rtol: float = RTOL, atol: float = ATOL) -> dict[str, int]:
    """Distinct channels per conv block of a state dict (a network's or a learngene's tensors)."""
    return {p: distinct_channels(_signatures(tensors, p), rtol, atol) for p in block_prefixes(tensors)}


def effective_widths(model: nn.Module, rtol: float = RTOL, atol: float = ATOL) -> list[int]:
    """Distinct channels of each conv block of ``model``, in block order."""
    return list(effective_widths_of(model.state_dict(), rtol, atol).values())


def effective_params(model: nn.Module, rtol: float = RTOL, atol: float = ATOL) -> int:
    """Parameters of the same architecture with every block at its effective width (copies merged)."""
    from learngene.models.registry import model_from_config

    cfg: dict[str, Any] = dict(model.config())
    cfg["widths"] = effective_widths(model, rtol, atol)
    with torch.device("meta"):  # only shapes are needed: no memory, no draws from the global RNG
        return sum(p.numel() for p in model_from_config(cfg).parameters())


def width_report(model: nn.Module) -> dict[str, Any]:
    """Nominal and effective widths and parameters, with the tolerance used."""
    return {
        "widths": list(model.widths),
        "effective_widths": effective_widths(model),
        "params": sum(p.numel() for p in model.parameters()),
        "effective_params": effective_params(model),
        "tolerance": tolerance(),
    }

"""TLEG's founding observation, measured: do a trained ViT's block weights change linearly with depth?

For every block tensor name (``attn.qkv.weight``, ...) the values of blocks ``0..L-1`` are fitted, element by
element, by least squares against the block index; R^2 pools the errors of all elements:
``1 - sum(SS_res) / sum(SS_tot)`` with SS_tot taken around each element's mean over the layers.  The same fit
on a shuffled layer order is the control: a high R^2 only means something if the shuffled one is lower
(a random L-point series already reaches R^2 ~ 1/(L-1) by chance).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from learngene.errors import ModelError
from learngene.models.vit import split_block_key

__all__ = ["layer_linearity", "linear_fit_r2"]


def linear_fit_r2(values: Tensor, order: Tensor | None = None) -> tuple[float, float]:
    """``(SS_res, SS_tot)`` of fitting ``values[L, P]`` linearly against position (``order[l]`` for row l).

    Returned as sums so callers can pool several tensors; R^2 is ``1 - SS_res / SS_tot``.
    """
    y = values.double().reshape(values.shape[0], -1)
    n = y.shape[0]
    x = torch.arange(n, dtype=torch.float64) if order is None else order.double()
    xc = x - x.mean()
    yc = y - y.mean(dim=0, keepdim=True)
    slope = (xc @ yc) / (xc @ xc)
    resid = yc - xc[:, None] * slope[None, :]
    return float((resid**2).sum()), float((yc**2).sum())


def _r2(ss_res: float, ss_tot: float) -> float:
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan


def _non_identity_perms(n: int, count: int, seed: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(int(seed))
    perms: list[Tensor] = []
    while len(perms) < count:
        p = torch.randperm(n, generator=gen)
        if not torch.equal(p, torch.arange(n)):
            perms.append(p)
    return perms


def _blocks(source: nn.Module | Mapping[str, Tensor]) -> tuple[int, dict[str, list[Tensor]]]:
    state = source.state_dict() if isinstance(source, nn.Module) else source
    found: dict[str, dict[int, Tensor]] = {}
    for key, value in state.items():
        block = split_block_key(key)
        if block is not None:
            found.setdefault(block[1], {})[block[0]] = value.detach().cpu()
    if not found:
        raise ModelError(
            "no 'blocks.{i}.*' tensors found; layer_linearity needs a timm ViT or its state dict"
        )
    depth = 1 + max(max(per) for per in found.values())
    if depth < 3:
        raise ModelError(f"layer linearity needs >= 3 blocks (any 2 points lie on a line), got {depth}")
    out: dict[str, list[Tensor]] = {}
    for name, per in found.items():
        if sorted(per) != list(range(depth)):
            raise ModelError(f"blocks.*.{name} is missing in blocks {sorted(set(range(depth)) - set(per))}")
        shapes = {tuple(t.shape) for t in per.values()}
        if len(shapes) != 1:
            raise ModelError(
                f"blocks.*.{name} changes shape across blocks ({sorted(shapes)}); cannot fit a line"
            )
        out[name] = [per[i] for i in range(depth)]
    return depth, out


def layer_linearity(
    source: nn.Module | Mapping[str, Tensor], *, n_shuffles: int = 5, seed: int = 0
) -> dict[str, Any]:
    """R^2 of a linear-in-depth fit for every block tensor, with a shuffled-order control.

    Returns ``{"rows": [{"name", "numel", "r2", "r2_shuffled"}], "summary": {...}}``.  ``r2_shuffled`` is the
    mean over ``n_shuffles`` seeded non-identity permutations (the same ones for every tensor).  A tensor that
    is identical in all blocks has no variance to explain: its R^2 is NaN and summaries skip it.  The summary
    gives ``mean``/``median`` over tensor names and ``pooled`` (all elements of all tensors together).
    """
    if isinstance(n_shuffles, bool) or not isinstance(n_shuffles, int) or n_shuffles < 1:
        raise ModelError(f"n_shuffles must be an integer >= 1, got {n_shuffles!r}")
    depth, per_name = _blocks(source)
    perms = _non_identity_perms(depth, n_shuffles, seed)
    rows: list[dict[str, Any]] = []
    pooled = [0.0, 0.0]
    pooled_shuf = [0.0, 0.0]
    for name, tensors in per_name.items():
        values = torch.stack([t.reshape(-1) for t in tensors])
        ss_res, ss_tot = linear_fit_r2(values)
        pooled[0] += ss_res
        pooled[1] += ss_tot
        shuffled = []
        for p in perms:
            s_res, s_tot = linear_fit_r2(values[p])
            pooled_shuf[0] += s_res / n_shuffles
            pooled_shuf[1] += s_tot / n_shuffles
            shuffled.append(_r2(s_res, s_tot))
        rows.append(
            {
                "name": name,
                "numel": int(tensors[0].numel()),
                "r2": _r2(ss_res, ss_tot),
                "r2_shuffled": sum(shuffled) / len(shuffled),
            }
        )

    def stats(key: str) -> tuple[float, float]:
        vals = [r[key] for r in rows if not math.isnan(r[key])]
        return (statistics.fmean(vals), statistics.median(vals)) if vals else (math.nan, math.nan)

    mean_r2, median_r2 = stats("r2")
    mean_sh, median_sh = stats("r2_shuffled")
    summary = {
        "depth": depth,
        "n_tensors": len(rows),
        "n_constant": sum(math.isnan(r["r2"]) for r in rows),
        "mean_r2": mean_r2,
        "median_r2": median_r2,
        "pooled_r2": _r2(*pooled),
        "mean_r2_shuffled": mean_sh,
        "median_r2_shuffled": median_sh,
        "pooled_r2_shuffled": _r2(*pooled_shuf),
    }
    return {"rows": rows, "summary": summary}

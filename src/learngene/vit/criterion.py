"""Heur-LG's criterion for transformers: which window of contiguous ancestry blocks becomes the learngene.

``gradient_stability``: the blocks whose share of the gradient (recorded while the ancestry trained, see
:class:`~learngene.vit.ancestry.GradientShare`) stayed lowest and steadiest; ``validation``: the window whose
stacked descendants learn pseudo-tasks of open-world classes best (never the novel ones).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from learngene.config import Config
from learngene.criterion import windows
from learngene.engine import fit
from learngene.errors import ConfigError, LearngeneError
from learngene.models.vit import num_blocks
from learngene.runtime import derive_seed
from learngene.vit.descendants import stack_descendant
from learngene.vit.train import Recipe, Task

__all__ = ["choose_blocks"]

log = logging.getLogger(__name__)


def _window_stats(share: list[list[float]], a: int, b: int) -> dict[str, float]:
    if not share:
        return {}
    t = torch.tensor(share)[:, a:b]
    std = t.std(0, unbiased=True) if len(t) > 1 else torch.zeros(t.shape[1])
    return {"grad_share_mean": float(t.mean()), "grad_share_std": float(std.mean())}


def choose_blocks(cfg: Config, ancestry: nn.Module, info: dict[str, Any], data: Any, split: Any,
                  spec: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """Heur-LG's criterion: the window of ``vit.heur_blocks`` contiguous ancestry blocks to inherit."""
    v = cfg.vit
    n = num_blocks(ancestry)
    if n < 2:
        raise ConfigError(f"Heur-LG needs an ancestry of at least 2 blocks (one inherited, one fresh), got {n}; "
                          "raise vit.ancestry_depth or drop heur-lg from vit.methods")
    size = min(v.heur_blocks, n - 1)
    share = info.get("gradient_share") or []
    cands = []
    if v.heur_criterion == "gradient_stability":
        if not share:
            raise LearngeneError("the gradient_stability criterion found no gradient record in the ancestry (a user's "
                                 "ancestry records it while it trains: set vit.ancestry_epochs or "
                                 "vit.ancestry_probe_epochs >= 1, or use vit.heur_criterion = 'validation')")
        for a, b in windows(n, size):
            st = _window_stats(share, a, b)
            cands.append({"blocks": list(range(a, b)), "score": -(st["grad_share_mean"] + st["grad_share_std"]), **st})
        reason = (f"the {size} contiguous blocks whose share of the gradient (block grad norm / weight norm, relative to "
                  "the mean block) was lowest and steadiest over the ancestry's training; score = -(mean + std)")
    else:
        pool = list(split.open_world)
        if len(pool) < 2:
            raise ConfigError(f"vit.heur_criterion = 'validation' needs at least 2 open-world classes for its "
                              f"pseudo-tasks, the split has {len(pool)}; use 'gradient_stability' or raise "
                              "data.split_fractions[1]")
        task = Task(data, pool, spec, v.test_fraction, derive_seed(cfg.seed, "pseudo-split"), recipe.device)
        for a, b in windows(n, size):
            seed = derive_seed(cfg.seed, "pseudo", a, b)
            d = stack_descendant(ancestry, list(range(a, b)), n, task.num_classes, seed=seed, copy_final_norm=True)
            res = fit(d.model, recipe.task_batches(task, seed), v.heur_val_epochs,
                      **recipe.options(seed=seed, lr=recipe.child_lr, evaluate=task.accuracy,
                                       eval_epochs=[v.heur_val_epochs], desc=f"criterion: blocks {a}-{b - 1}"))
            cands.append({"blocks": list(range(a, b)), "score": res["curve"][-1], **_window_stats(share, a, b)})
        reason = (f"the {size} contiguous blocks whose stacked depth-{n} descendants reached the best test accuracy "
                  f"after {v.heur_val_epochs} epoch(s) on pseudo-tasks of {len(pool)} open-world classes (never the "
                  "novel ones)")
    best = max(cands, key=lambda c: (round(c["score"], 6), -c["blocks"][0]))
    log.info("heur-lg: blocks %s by %s", best["blocks"], v.heur_criterion)
    return {"name": v.heur_criterion, "selected": best["blocks"], "candidates": cands, "reason": reason}

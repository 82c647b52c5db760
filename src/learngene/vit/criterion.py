"""Heur-LG's criterion for transformers: which window of contiguous ancestry blocks becomes the learngene.

The rules are the registered criteria of the CNN paradigm (:mod:`learngene.criterion`), applied to the blocks
``blocks.0 .. blocks.{L-1}`` of the ancestry: ``gradient_stability`` reads :class:`ShareEvidence` (each block's
share of the gradient, recorded while the ancestry trained by :class:`~learngene.vit.ancestry.GradientShare`),
``validation`` scores each window with :class:`PseudoTaskScorer` (stacked descendants fine-tuned on a pseudo-task
of open-world classes, never the novel ones), ``fixed`` takes ``criterion.layers``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from learngene.config import Config
from learngene.criterion import CriterionContext
from learngene.engine import fit
from learngene.errors import ConfigError
from learngene.models.vit import BLOCK_PREFIX, num_blocks
from learngene.registry import CRITERIA
from learngene.runtime import derive_seed
from learngene.vit.descendants import scratch_descendant, stack_descendant
from learngene.vit.train import Recipe, Task

__all__ = ["PseudoTaskScorer", "ShareEvidence", "choose_blocks"]

log = logging.getLogger(__name__)


class ShareEvidence:
    """The ancestry's gradient record: ``share[segment][block]``, each block's share of the gradient (block grad
    norm / weight norm, relative to the mean block) over contiguous stretches of its training."""

    missing = ("the gradient_stability criterion found no gradient record in the ancestry (a user's ancestry records "
               "it while it trains: set vit.ancestry_epochs or vit.ancestry_probe_epochs >= 1, or use "
               "criterion.name = 'validation')")

    def __init__(self, share: list[list[float]]) -> None:
        self.share = share

    @property
    def available(self) -> bool:
        return bool(self.share)

    def record(self, a: int, b: int) -> dict[str, float]:
        if not self.share:
            return {}
        t = torch.tensor(self.share)[:, a:b]
        std = t.std(0, unbiased=True) if len(t) > 1 else torch.zeros(t.shape[1])
        return {"grad_share_mean": float(t.mean()), "grad_share_std": float(std.mean())}

    def instability(self, a: int, b: int) -> float:
        st = self.record(a, b)
        return st["grad_share_mean"] + st["grad_share_std"]

    def reason(self, size: int) -> str:
        return (f"the {size} contiguous blocks whose share of the gradient (block grad norm / weight norm, relative to "
                "the mean block) was lowest and steadiest over the ancestry's training; score = -(mean + std)")


class PseudoTaskScorer:
    """Test accuracy of depth-L descendants stacking a window of ancestry blocks (``inherit=False``: a fresh ViT
    of the same shape, the reference), fine-tuned on one pseudo-task of open-world classes."""

    def __init__(self, cfg: Config, ancestry: nn.Module, data: Any, pool: list[str], spec: dict[str, Any],
                 recipe: Recipe, seed: int | None = None) -> None:
        self.cfg, self.ancestry, self.recipe = cfg, ancestry, recipe
        # the candidates' training draws follow the learngene seed; the pseudo-task's images stay on cfg.seed
        self.seed = cfg.seed if seed is None else seed
        self.depth, self.epochs = num_blocks(ancestry), cfg.criterion.pseudo_epochs
        self._where = (data, pool, spec)
        self._task: Task | None = None

    @property
    def task(self) -> Task:
        """The pseudo-task, made on first use (a criterion that never scores copies no images to the device)."""
        if self._task is None:
            data, pool, spec = self._where
            self._task = Task(data, pool, spec, self.cfg.stream.test_fraction,
                              derive_seed(self.cfg.seed, "pseudo-split"), self.recipe.device)
        return self._task

    def describe(self) -> str:
        return (f"a pseudo-task's held-out images with stacked depth-{self.depth} descendants fine-tuned "
                f"{self.epochs} epoch(s)")

    def __call__(self, layers: list[str], inherit: bool = True) -> float:
        blocks = [int(name[len(BLOCK_PREFIX):]) for name in layers]
        if inherit:
            seed = derive_seed(self.seed, "pseudo", blocks[0], blocks[-1] + 1)
            d = stack_descendant(self.ancestry, blocks, self.depth, self.task.num_classes, seed=seed,
                                 copy_final_norm=True)
        else:
            seed = derive_seed(self.seed, "pseudo", "scratch")
            d = scratch_descendant(self.ancestry, self.depth, self.task.num_classes, seed=seed)
        what = f"blocks {blocks[0]}-{blocks[-1]}" if inherit else "scratch"
        res = fit(d.model, self.recipe.task_batches(self.task, seed), self.epochs,
                  **self.recipe.options(seed=seed, lr=self.recipe.child_lr, evaluate=self.task.accuracy,
                                        eval_epochs=[self.epochs], desc=f"criterion: {what}"))
        return res["curve"][-1]


def choose_blocks(cfg: Config, ancestry: nn.Module, info: dict[str, Any], data: Any, split: Any,
                  spec: dict[str, Any], recipe: Recipe, seed: int | None = None) -> dict[str, Any]:
    """The criterion's record: ``{"name", "selected": [block indices], "candidates", "reason"}`` (``seed``: the
    learngene seed the validation candidates train with; default ``cfg.seed``)."""
    name = cfg.criterion.name
    n = num_blocks(ancestry)
    if n < 2:
        raise ConfigError(f"Heur-LG needs an ancestry of at least 2 blocks (one inherited, one fresh), got {n}; "
                          "raise vit.ancestry_depth or drop heur-lg from evaluate.methods")
    pool = list(split.open_world)
    if name == "validation" and len(pool) < 2:
        raise ConfigError(f"criterion.name = 'validation' needs at least 2 open-world classes for its "
                          f"pseudo-tasks, the split has {len(pool)}; use 'gradient_stability' or raise "
                          "data.split_fractions[1]")
    ctx = CriterionContext(
        network=ancestry, layer_names=[f"{BLOCK_PREFIX}{i}" for i in range(n)], grad_stats=None, grad_norms=None,
        cfg=cfg, data=data, pseudo_classes=pool, pseudo_pool="open-world", input_spec=spec,
        score_window=PseudoTaskScorer(cfg, ancestry, data, pool, spec, recipe, seed) if len(pool) >= 2 else None,
        window_size=min(cfg.criterion.n_layers or 3, n - 1), evidence=ShareEvidence(info.get("gradient_share") or []),
        unit="transformer blocks")
    result = CRITERIA.get(name)(ctx)

    def indices(layers: list[str]) -> list[int]:
        return [int(unit[len(BLOCK_PREFIX):]) for unit in layers]

    cands = [{"blocks": indices(c["layers"]), **{k: x for k, x in c.items() if k != "layers"}}
             for c in result.candidates]
    log.info("heur-lg: blocks %s by %s", indices(result.selected), name)
    return {"name": name, "selected": indices(result.selected), "candidates": cands, "reason": result.reason}

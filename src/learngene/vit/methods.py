"""The methods a transformer run compares, as registry rows: how each makes its learngene and its descendants.

A row (:class:`DescendantMethod`, registered with :func:`register_descendant_method`) says how a descendant of
``depth`` blocks with a fresh ``num_classes`` head is built (``build``), and, for a learngene method, the stage
that makes its learngene once per run from the trained ancestry (``learngene``: the gene and its report section;
the run saves it under ``genes/<name>/``).  ``from_scratch`` rows train for ``vit.scratch_epochs`` instead of
``vit.descendant_epochs``; ``skip`` says why a depth cannot be built; ``check`` refuses settings before the
ancestry trains.  The built-in rows, in the order of the report's columns:

* ``scratch`` -- the same shape, all fresh;
* ``heur-lg`` -- the ancestry blocks chosen by the criterion (``criterion.name``), stacked last on fresh ones;
* ``truncated`` -- the ancestry's first ``depth`` blocks (storage: the whole ancestry);
* ``tleg`` -- blocks expanded by ``vit.rule`` from an auxiliary net distilled from the ancestry.

A new kind of transformer learngene is one module with its rows; ``evaluate.methods`` then accepts its name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from learngene.artifacts import NETWORK
from learngene.config import Config
from learngene.errors import ConfigError, ModelError
from learngene.models.cache import cached_network
from learngene.models.expansion import ExpandedViT, rule_from_spec
from learngene.models.vit import num_blocks
from learngene.registry import DESCENDANT_METHODS
from learngene.runtime import derive_seed
from learngene.vit.auxiliary import init_from_ancestry, train_distilled
from learngene.vit.criterion import choose_blocks
from learngene.vit.descendants import (
    Descendant,
    build_descendant,
    params_without_head,
    scratch_descendant,
    truncated_ancestry,
)
from learngene.vit.gene import TransformerGene, extract_heur_lg, extract_tleg
from learngene.vit.train import Recipe, Task, fingerprint

__all__ = ["DescendantMethod", "Lineage", "list_descendant_methods", "register_descendant_method"]

log = logging.getLogger(__name__)


@dataclass
class Lineage:
    """The trained ancestry of a run and what the methods need around it (filled by :func:`learngene.vit.run.run_vit`)."""

    cfg: Config
    out: Path
    recipe: Recipe
    ancestry: nn.Module
    info: dict[str, Any]  # the ancestry's record: params, val_acc, gradient_share, ...
    fingerprint: str  # of everything the ancestry depends on: cached stages derived from it include it
    shape: dict[str, Any]  # the ancestry's ViT shape record
    data: Any
    split: Any
    spec: dict[str, Any]
    source: Task  # the source classes (the ancestry's and the auxiliary net's training task)
    provenance: dict[str, Any] = field(default_factory=dict)
    genes: dict[str, TransformerGene] = field(default_factory=dict)  # method name -> its saved learngene
    seed: int = 0  # the learngene seed: every draw of the ancestry, the auxiliary net and the genes follows it

    @property
    def depth(self) -> int:
        return num_blocks(self.ancestry)


@dataclass(frozen=True)
class DescendantMethod:
    """One column of the transformer comparison (see the module docstring)."""

    name: str
    description: str
    build: Callable[[Lineage, int, int, int], Descendant]  # (lineage, depth, num_classes, seed)
    learngene: Callable[[Lineage], tuple[TransformerGene, dict[str, Any]]] | None = None
    from_scratch: bool = False
    skip: Callable[[Lineage, int], str | None] | None = None  # (lineage, depth) -> why it cannot be built
    check: Callable[[Config, int], None] | None = None  # (config, ancestry depth): refuse before training


def register_descendant_method(name: str, description: str, build: Callable[[Lineage, int, int, int], Descendant],
                               **fields: Any) -> DescendantMethod:
    """Add a column to every transformer comparison (accepted by ``evaluate.methods``; see :class:`DescendantMethod`)."""
    return DESCENDANT_METHODS.register(name, DescendantMethod(name, description, build, **fields))


def list_descendant_methods() -> list[str]:
    """Every registered method, in registration order (the default comparison's columns)."""
    return DESCENDANT_METHODS.in_order()


# ---------------------------------------------------------------------- heur-lg
def _heur_lg(lineage: Lineage) -> tuple[TransformerGene, dict[str, Any]]:
    c = lineage
    crit = choose_blocks(c.cfg, c.ancestry, c.info, c.data, c.split, c.spec, c.recipe, seed=c.seed)
    gene = extract_heur_lg(c.ancestry, crit["selected"], c.spec, criterion=crit, provenance=c.provenance)
    return gene, crit


def _check_heur_lg(cfg: Config, ancestry_depth: int) -> None:
    if ancestry_depth < 2:
        raise ConfigError(f"Heur-LG needs an ancestry of at least 2 blocks (one inherited, one fresh), got "
                          f"{ancestry_depth}; raise vit.ancestry_depth or drop heur-lg from evaluate.methods")


# ---------------------------------------------------------------------- tleg
def _train_aux(lineage: Lineage) -> tuple[ExpandedViT, dict[str, Any]]:
    """The auxiliary net distilled from the ancestry, or the cached one whose fingerprint matches."""
    cfg, v, recipe = lineage.cfg, lineage.cfg.vit, lineage.recipe
    cache = lineage.out / "cache" / "aux"
    fields = {"ancestry": lineage.fingerprint, "rule": v.rule, "depth": v.aux_depth, "epochs": v.aux_epochs,
              "distill": [v.distill, v.distill_alpha, cfg.train.distill_temperature]}
    if v.aux_init != "random":  # earlier runs' caches keep their fingerprints
        fields["init"] = v.aux_init
    fp = fingerprint(fields)

    def train() -> tuple[ExpandedViT, dict[str, Any]]:
        try:
            aux = ExpandedViT({**lineage.shape, "depth": v.aux_depth}, v.rule, v.aux_depth,
                              seed=derive_seed(lineage.seed, "aux-init"))
        except ModelError as err:
            raise ConfigError(f"config keys vit.rule = {v.rule!r} / vit.aux_depth = {v.aux_depth}: {err}") from None
        init: dict[str, Any] = {"name": v.aux_init}
        if v.aux_init == "ancestry":
            r2 = init_from_ancestry(aux, lineage.ancestry)
            init["r2_mean"] = sum(r2.values()) / len(r2)
            init["r2"] = r2
        log.info("tleg: distilling the ancestry into a %d-block %s auxiliary net (%s, alpha %s, init %s) for %d "
                 "epochs", v.aux_depth, aux.rule.name, v.distill, v.distill_alpha, v.aux_init, v.aux_epochs)
        task = lineage.source
        res = train_distilled(
            aux, lineage.ancestry, recipe.task_batches(task, derive_seed(lineage.seed, "aux-data")), v.aux_epochs,
            mode=v.distill, alpha=v.distill_alpha, temperature=cfg.train.distill_temperature,
            **recipe.options(seed=derive_seed(lineage.seed, "aux-train"), evaluate=task.accuracy,
                             eval_epochs=[0, v.aux_epochs], desc="auxiliary net"))
        init["val_acc"] = res["curve"][0]  # before distillation: what the starting point already knows
        return aux, {"params": sum(int(p.numel()) for p in aux.parameters()), "depth": v.aux_depth,
                     "rule": aux.rule.to_config(), "val_acc": res["curve"][-1], "loss": res["loss"],
                     "train_seconds": res["train_seconds"], "init": init}

    aux, info = cached_network(
        cache, NETWORK, fp, train, what="tleg: the auxiliary net",
        accept=lambda net, rec: isinstance(net, ExpandedViT) and {"params", "val_acc", "train_seconds"} <= set(rec))
    return aux.to(recipe.device).eval(), info


def _tleg(lineage: Lineage) -> tuple[TransformerGene, dict[str, Any]]:
    v = lineage.cfg.vit
    aux, info = _train_aux(lineage)
    log.info("tleg: auxiliary val accuracy %.3f", info["val_acc"])
    gene = extract_tleg(aux, lineage.spec, ancestry=lineage.ancestry,
                        provenance={**lineage.provenance, "distill": v.distill})
    head = info["params"] - params_without_head(aux.vit)
    return gene, {
        "rule": aux.rule.to_config(), "aux_depth": v.aux_depth, "aux_params": info["params"],
        "val_acc": info["val_acc"], "train_seconds": info["train_seconds"], "cached": info["cached"],
        "distill": {"mode": v.distill, "alpha": v.distill_alpha, "temperature": lineage.cfg.train.distill_temperature},
        "init": info.get("init"), "epochs": v.aux_epochs,
        # like for like (issue 17): the gene without the aux net's head against the ancestry without its head
        # (the run adds "stored_fraction_of_ancestry"); and both with their source-class heads
        "aux_head_params": head,
        "stored_fraction_with_heads": (gene.stored_params + head) / lineage.info["params"],
    }


def _check_tleg(cfg: Config, ancestry_depth: int) -> None:
    v = cfg.vit
    fewshot = list(v.fewshot_depths) if v.fewshot_depths is not None else [ancestry_depth]
    try:
        rule = rule_from_spec(v.rule, v.aux_depth)
        for depth in dict.fromkeys([v.aux_depth, *v.depths, *fewshot]):
            rule.check_depth(depth)
    except ModelError as err:
        raise ConfigError(f"config key vit.rule = {v.rule!r} cannot build every depth asked for "
                          f"(vit.aux_depth, vit.depths, vit.fewshot_depths): {err}") from None


# ---------------------------------------------------------------------- truncated
def _deeper_than_ancestry(lineage: Lineage, depth: int) -> str | None:
    n = lineage.depth
    return f"deeper than the {n}-block ancestry: truncation only shortens" if depth > n else None


register_descendant_method(
    "scratch", "the same shape, every weight fresh",
    lambda c, depth, classes, seed: scratch_descendant(c.ancestry, depth, classes, seed=seed), from_scratch=True)
register_descendant_method(
    "heur-lg", "the ancestry blocks the criterion chose, stacked last on fresh blocks",
    lambda c, depth, classes, seed: build_descendant(c.genes["heur-lg"], depth, classes, seed=seed),
    learngene=_heur_lg, check=_check_heur_lg)
register_descendant_method(
    "truncated", "the ancestry's first blocks (storage: the whole ancestry but its head)",
    lambda c, depth, classes, seed: truncated_ancestry(c.ancestry, depth, classes, seed=seed),
    skip=_deeper_than_ancestry)
register_descendant_method(
    "tleg", "blocks expanded by the rule (theta_A + l/L theta_B) from an auxiliary net distilled from the ancestry",
    lambda c, depth, classes, seed: build_descendant(c.genes["tleg"], depth, classes, seed=seed),
    learngene=_tleg, check=_check_tleg)

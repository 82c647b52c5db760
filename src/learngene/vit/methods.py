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
* ``tleg`` -- blocks expanded by ``vit.rule`` from an auxiliary net distilled from the ancestry;
* ``weight-selection`` -- the ancestry's first blocks, every tensor cut to the width by uniformly spaced elements
  (Xu et al., ICLR 2024; at the ancestry's width and depth this is ``truncated`` exactly);
* ``frequency`` -- the training-free learngene: the ancestry's weights as low-frequency DCT coefficients
  (``vit.frequency_keep``), truncated or zero-padded to any depth and width (:mod:`learngene.vit.frequency`).

``vit.widths`` adds other widths than the ancestry's to the grid.  A row with ``any_width`` builds every width
(its ``width_rule`` says how, recorded in ``report.json``); the others build the ancestry's width only.  A row's
``same_as`` names a method whose descendant at that shape is the very same model (its row is copied, not trained).

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
    selected_ancestry,
    truncated_ancestry,
)
from learngene.vit.frequency import extract_frequency
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
    genes: dict[str, Any] = field(default_factory=dict)  # method name -> its saved learngene (any Gene kind)
    seed: int = 0  # the learngene seed: every draw of the ancestry, the auxiliary net and the genes follows it

    @property
    def depth(self) -> int:
        return num_blocks(self.ancestry)

    @property
    def width(self) -> int:
        return int(self.shape["embed_dim"])


@dataclass(frozen=True)
class DescendantMethod:
    """One column of the transformer comparison (see the module docstring)."""

    name: str
    description: str
    build: Callable[..., Descendant]  # (lineage, depth, num_classes, seed[, width=W]); width only with any_width
    learngene: Callable[[Lineage], tuple[Any, dict[str, Any]]] | None = None
    from_scratch: bool = False
    skip: Callable[[Lineage, int], str | None] | None = None  # (lineage, depth) -> why it cannot be built
    check: Callable[[Config, int], None] | None = None  # (config, ancestry depth): refuse before training
    any_width: bool = False  # builds widths other than the ancestry's (build gets width=)
    width_rule: str = "the ancestry's width only"  # how other widths are made (report.json: descendants.width_rules)
    same_as: Callable[[Lineage, int, int], str | None] | None = None  # (lineage, depth, width) -> identical method


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


SELECTION_RULE = ("weight selection: uniformly spaced elements of every inherited tensor along each axis that "
                  "shrinks (whole heads kept in place); along an axis that grows the source fills the first "
                  "positions and the rest stays freshly initialized")


def _frequency(lineage: Lineage) -> tuple[Any, dict[str, Any]]:
    keep = lineage.cfg.vit.frequency_keep
    gene = extract_frequency(lineage.ancestry, lineage.spec, keep=keep, provenance=lineage.provenance)
    return gene, {"keep": keep, "kept": gene.kept, "train_seconds": 0.0,
                  "stored_fraction_of_ancestry": gene.stored_params / gene.ancestry["params_without_head"],
                  "counted": "stored coefficients / ancestry parameters, no head on either side"}


def _truncated_twin(lineage: Lineage, depth: int, width: int) -> str | None:
    return "truncated" if width == lineage.width and depth <= lineage.depth else None


register_descendant_method(
    "scratch", "the same shape, every weight fresh",
    lambda c, depth, classes, seed, width=None: scratch_descendant(c.ancestry, depth, classes, width=width, seed=seed),
    from_scratch=True, any_width=True, width_rule="fresh at any width")
register_descendant_method(
    "heur-lg", "the ancestry blocks the criterion chose, stacked last on fresh blocks",
    lambda c, depth, classes, seed, width=None: build_descendant(c.genes["heur-lg"], depth, classes, width=width,
                                                                 seed=seed),
    learngene=_heur_lg, check=_check_heur_lg, any_width=True, width_rule=SELECTION_RULE + " (the gene's blocks)")
register_descendant_method(
    "truncated", "the ancestry's first blocks (storage: the whole ancestry but its head)",
    lambda c, depth, classes, seed: truncated_ancestry(c.ancestry, depth, classes, seed=seed),
    skip=_deeper_than_ancestry, width_rule="the ancestry's width only (other widths: weight-selection)")
register_descendant_method(
    "tleg", "blocks expanded by the rule (theta_A + l/L theta_B) from an auxiliary net distilled from the ancestry",
    lambda c, depth, classes, seed, width=None: build_descendant(c.genes["tleg"], depth, classes, width=width,
                                                                 seed=seed),
    learngene=_tleg, check=_check_tleg, any_width=True,
    width_rule=SELECTION_RULE + " (of the expanded blocks; selection is linear, so the same as selecting the "
                                "templates)")
register_descendant_method(
    "weight-selection", "the ancestry's first blocks cut to the width by uniformly spaced elements (Xu et al. 2024)",
    lambda c, depth, classes, seed, width=None: selected_ancestry(c.ancestry, depth, classes, width=width, seed=seed),
    any_width=True, same_as=_truncated_twin,
    width_rule=SELECTION_RULE + "; depth: the first blocks, fresh blocks on top of a deeper descendant")
register_descendant_method(
    "frequency", "the ancestry's low-frequency DCT coefficients at any depth and width (training-free, FRONT-style)",
    lambda c, depth, classes, seed, width=None: build_descendant(c.genes["frequency"], depth, classes, width=width,
                                                                 seed=seed),
    learngene=_frequency, any_width=True,
    width_rule="DCT coefficients truncated or zero-padded along depth and every width axis, inverse DCT, "
               "magnitudes kept (sqrt(target / source) per axis)")

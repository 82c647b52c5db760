"""Descendant vision transformers of a chosen depth and label count, by every method the benchmark compares.

* :func:`build_descendant` -- TLEG / SWS: blocks expanded from the learngene's templates;
* :func:`stack_descendant` -- Heur-LG for transformers: whole ancestry blocks stacked with fresh ones;
* :func:`truncated_ancestry` -- pretrain-then-finetune: the ancestry's first ``depth`` blocks;
* :func:`scratch_descendant` -- the same shape, all fresh.

Each returns a :class:`Descendant`: the timm model plus the cost that makes methods comparable, the numbers
a user must *store* to build it (``stored_params``), and which state-dict keys were inherited.  Heads are
always fresh (seeded by ``seed`` without touching the global RNG): target classes are disjoint from the
ancestry's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from learngene.errors import GeneError, ModelError
from learngene.models.expansion import ExpandedViT
from learngene.models.vit import (
    BLOCK_PREFIX,
    EMBEDDING_PREFIXES,
    FINAL_NORM_PREFIXES,
    block_state_dict,
    build_vit,
    full_config,
    load_block_state_dict,
    num_blocks,
    shared_state_dict,
    vit_config,
)
from learngene.runtime import seeded
from learngene.vit.gene import TransformerGene

__all__ = [
    "EMBEDDING_PREFIXES",
    "Descendant",
    "params_without_head",
    "build_descendant",
    "descendant_from_gene",
    "scratch_descendant",
    "stack_descendant",
    "truncated_ancestry",
]


@dataclass
class Descendant:
    """A descendant model with its bookkeeping.

    ``stored_params``: numbers kept on disk to build it (scratch 0; truncated: the ancestry but its head; stacked:
    inherited blocks + embeddings; expanded: templates + shared parts).  ``inherited``: the state-dict keys
    of ``model`` whose values came from the source rather than a fresh init.
    """

    model: nn.Module
    method: str
    depth: int
    num_classes: int
    stored_params: int
    inherited: tuple[str, ...]


def params_without_head(model: nn.Module) -> int:
    """Parameters of a model but its classifier (``head.*``): how stored sizes are compared like for like (a
    learngene keeps no head, and a descendant's head is always fresh)."""
    return sum(int(p.numel()) for n, p in model.named_parameters() if not n.startswith("head."))


def _numel(tensors: Mapping[str, Tensor]) -> int:
    return sum(int(v.numel()) for v in tensors.values())


def _classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return num_classes


def _depth(depth: Any) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ModelError(f"descendant depth must be an integer >= 1, got {depth!r}")
    return depth


def _fresh(cfg: Mapping[str, Any], depth: int, num_classes: int, seed: int | None) -> nn.Module:
    with seeded(seed):
        return build_vit({**cfg, "depth": depth, "num_classes": num_classes})


def build_descendant(
    gene: Any,
    depth: int,
    num_classes: int,
    *,
    copy_head: bool = False,
    seed: int | None = None,
) -> Descendant:
    """A descendant of ``depth`` blocks with a fresh ``num_classes`` head, from any transformer learngene.

    ``gene`` is a :class:`~learngene.vit.gene.TransformerGene` (or the directory of a saved one): TLEG genes
    expand by their rule, Heur-LG genes stack their blocks on fresh ones (:func:`descendant_from_gene`); or an
    :class:`ExpandedViT` / a ``(tensors, config)`` pair from its ``templates_state_dict()`` and ``config()``.
    """
    if isinstance(gene, (TransformerGene, str, Path)):
        return descendant_from_gene(gene, depth, num_classes, seed=seed)
    return _from_templates(gene, depth, num_classes, copy_head=copy_head, seed=seed)


def _from_templates(gene: Any, depth: int, num_classes: int, *, copy_head: bool = False,
                    seed: int | None = None) -> Descendant:
    """TLEG / SWS descendant: blocks from the rule, embeddings and final norm copied, head fresh."""
    if not isinstance(gene, ExpandedViT):
        if not (isinstance(gene, tuple) and len(gene) == 2):
            raise ModelError(
                "build_descendant needs an ExpandedViT or a (tensors, config) pair from "
                f"templates_state_dict() and config(), got {type(gene).__name__}"
            )
        gene = ExpandedViT.from_templates(gene[0], gene[1], seed=seed)
    model = gene.materialize(_depth(depth), _classes(num_classes), copy_head=copy_head, seed=seed)
    inherited = tuple(k for k in model.state_dict() if copy_head or not k.startswith("head."))
    return Descendant(
        model=model,
        method=f"expanded:{gene.rule.name}",
        depth=depth,
        num_classes=num_classes,
        stored_params=gene.stored_params(include_head=copy_head),
        inherited=inherited,
    )


def stack_descendant(
    ancestry: nn.Module,
    block_indices: Sequence[int],
    depth: int,
    num_classes: int,
    *,
    seed: int | None = None,
    position: str | int = "last",
    copy_final_norm: bool = False,
) -> Descendant:
    """Heur-LG for transformers: ancestry blocks ``block_indices`` (kept in ancestry order) plus fresh blocks.

    ``position``: ``"last"`` (default; the chosen blocks become the top layers, as the criterion picks the
    ancestry's late layers), ``"first"``, or the int index of the first inherited layer.  Patch/position
    embeddings are copied; the final norm only with ``copy_final_norm``; the head is fresh.
    """
    depth, num_classes = _depth(depth), _classes(num_classes)
    n = num_blocks(ancestry)
    if (
        isinstance(block_indices, (str, bytes))
        or not isinstance(block_indices, Sequence)
        or not block_indices
    ):
        raise ModelError(
            f"block_indices must be a non-empty list of ancestry block numbers, got {block_indices!r}"
        )
    chosen = sorted(int(i) for i in block_indices)
    if len(set(chosen)) != len(chosen):
        raise ModelError(f"block_indices {list(block_indices)} repeat a block; list each block once")
    if chosen[0] < 0 or chosen[-1] >= n:
        raise ModelError(f"block_indices {list(block_indices)} are outside the ancestry's blocks 0..{n - 1}")
    k = len(chosen)
    if k > depth:
        raise ModelError(
            f"{k} inherited blocks do not fit a depth-{depth} descendant; choose fewer or go deeper"
        )
    if position == "last":
        start = depth - k
    elif position == "first":
        start = 0
    elif isinstance(position, int) and not isinstance(position, bool) and 0 <= position <= depth - k:
        start = position
    else:
        raise ModelError(
            f"position must be 'last', 'first' or an int in 0..{depth - k} (so {k} blocks fit in {depth}), "
            f"got {position!r}"
        )
    model = _fresh(vit_config(ancestry), depth, num_classes, seed)
    keep = EMBEDDING_PREFIXES + (FINAL_NORM_PREFIXES if copy_final_norm else ())
    shared = {
        k_: v for k_, v in shared_state_dict(ancestry, include_head=False).items() if k_.startswith(keep)
    }
    state = model.state_dict()
    state.update({k_: v.clone() for k_, v in shared.items()})
    model.load_state_dict(state, strict=True)
    inherited = list(shared)
    stored = _numel(shared)
    for offset, src in enumerate(chosen):
        tensors = block_state_dict(ancestry, src)
        load_block_state_dict(model, start + offset, tensors)
        inherited += [f"{BLOCK_PREFIX}{start + offset}.{name}" for name in tensors]
        stored += _numel(tensors)
    return Descendant(model, "stack", depth, num_classes, stored, tuple(inherited))


def truncated_ancestry(
    ancestry: nn.Module, depth: int, num_classes: int, *, seed: int | None = None
) -> Descendant:
    """The ancestry's first ``depth`` blocks with its embeddings and final norm, and a fresh head.

    The baseline reviewers ask for; its storage cost is the whole ancestry but its head (which no descendant
    uses), which must be kept to cut it.
    """
    depth, num_classes = _depth(depth), _classes(num_classes)
    n = num_blocks(ancestry)
    if depth > n:
        raise ModelError(
            f"cannot truncate a {n}-block ancestry to {depth} blocks; truncation only shortens "
            f"(use depth <= {n}, or a learngene / stacking for deeper descendants)"
        )
    model = _fresh(vit_config(ancestry), depth, num_classes, seed)
    src = ancestry.state_dict()
    prefixes = tuple(f"{BLOCK_PREFIX}{i}." for i in range(depth))
    copied = {
        k: v.detach().clone()
        for k, v in src.items()
        if not k.startswith("head.") and (not k.startswith(BLOCK_PREFIX) or k.startswith(prefixes))
    }
    state = model.state_dict()
    state.update(copied)
    model.load_state_dict(state, strict=True)
    return Descendant(model, "truncated", depth, num_classes, params_without_head(ancestry), tuple(copied))


def scratch_descendant(
    config: Mapping[str, Any] | nn.Module, depth: int, num_classes: int, *, seed: int | None = None
) -> Descendant:
    """A freshly initialised ViT of the given shape record (or of a model's shape): nothing stored."""
    if isinstance(config, ExpandedViT):
        cfg: dict[str, Any] = config.vit_cfg
    elif isinstance(config, nn.Module):
        cfg = vit_config(config)
    else:
        cfg = full_config(config)
    depth, num_classes = _depth(depth), _classes(num_classes)
    return Descendant(_fresh(cfg, depth, num_classes, seed), "scratch", depth, num_classes, 0, ())


# ---------------------------------------------------------------------- from a saved transformer learngene
def descendant_from_gene(
    gene: TransformerGene | str | Path, depth: int, num_classes: int, *, seed: int | None = None
) -> Descendant:
    """A descendant ViT of ``depth`` blocks and a fresh ``num_classes`` head from a transformer learngene.

    ``gene`` is a :class:`TransformerGene` or the path of a saved one (see :meth:`TransformerGene.descendant`:
    TLEG expands every block by its rule, Heur-LG stacks its blocks last on fresh ones).  ``stored_params`` is
    the gene's size: what must be kept to build every depth.
    """
    if isinstance(gene, (str, Path)):
        gene = TransformerGene.load(gene)
    if not isinstance(gene, TransformerGene):
        raise GeneError(f"descendant_from_gene needs a TransformerGene or its directory, got {type(gene).__name__}")
    model, inherited = gene.descendant(depth, num_classes, seed=seed)
    method = gene.kind if gene.kind == "heur-lg" or gene.rule_name == "linear" else f"expanded:{gene.rule_name}"
    return Descendant(model, method, depth, num_classes, gene.stored_params, inherited)

"""Descendant vision transformers of a chosen depth, width and label count, by every method the benchmark compares.

* :func:`build_descendant` -- from any transformer learngene: TLEG / SWS blocks expanded from the templates,
  Heur-LG blocks stacked on fresh ones, the frequency learngene's inverse DCT;
* :func:`stack_descendant` -- Heur-LG for transformers: whole ancestry blocks stacked with fresh ones;
* :func:`truncated_ancestry` -- pretrain-then-finetune: the ancestry's first ``depth`` blocks;
* :func:`selected_ancestry` -- weight selection (Xu et al., ICLR 2024): the ancestry's first ``depth`` blocks
  (fresh ones on top when deeper), every tensor cut to the width by uniformly spaced elements;
* :func:`scratch_descendant` -- the same shape, all fresh.

**Width.** A descendant may be narrower or wider than the ancestry (``width``, ``heads``; default: the
ancestry's).  The width rule of a gene that stores full-width tensors (TLEG templates, Heur-LG blocks) is weight
selection (:func:`select_width`, :mod:`learngene.models.vit_resize`): the full-width descendant is built first,
then each inherited tensor is cut to the target width by uniformly spaced elements (whole heads kept in place),
and where the target is wider the source fills the first positions and the rest stays freshly initialized.
Selection is linear, so selecting TLEG's templates and then expanding them gives the same blocks.

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
from learngene.models.vit_resize import at_width, descendant_shape, select_width
from learngene.runtime import seeded
from learngene.vit.frequency import load_transformer_gene
from learngene.vit.gene import TransformerGene

__all__ = [
    "EMBEDDING_PREFIXES",
    "Descendant",
    "params_without_head",
    "build_descendant",
    "descendant_from_gene",
    "descendant_shape",
    "scratch_descendant",
    "select_width",
    "selected_ancestry",
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
    width: int = 0  # filled from the model when left 0
    heads: int = 0

    def __post_init__(self) -> None:
        if not self.width and hasattr(self.model, "embed_dim"):
            self.width = int(self.model.embed_dim)
        if not self.heads and hasattr(self.model, "blocks") and len(self.model.blocks):
            self.heads = int(self.model.blocks[0].attn.num_heads)


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


def _at_width(d: Descendant, width: int | None, heads: int | None, seed: int | None) -> Descendant:
    """``d`` moved to ``width`` / ``heads`` by weight selection of its inherited tensors (unchanged if equal)."""
    model, inherited = at_width(d.model, d.inherited, width, heads, seed)
    return d if model is d.model else Descendant(model, d.method, d.depth, d.num_classes, d.stored_params, inherited)


def build_descendant(
    gene: Any,
    depth: int,
    num_classes: int,
    *,
    width: int | None = None,
    heads: int | None = None,
    copy_head: bool = False,
    seed: int | None = None,
) -> Descendant:
    """A descendant of ``depth`` blocks, ``width`` channels in ``heads`` heads (default: the gene's) with a fresh
    ``num_classes`` head, from any transformer learngene.

    ``gene`` is a loaded learngene with a ``descendant`` method (:class:`~learngene.vit.gene.TransformerGene`:
    TLEG expands by its rule, Heur-LG stacks its blocks on fresh ones; :class:`~learngene.vit.frequency.
    FrequencyGene`: inverse DCT at the target shape) or the directory of a saved one; or an :class:`ExpandedViT`
    / a ``(tensors, config)`` pair from its ``templates_state_dict()`` and ``config()``.  Genes that store
    full-width tensors reach other widths by weight selection (the module docstring).
    """
    if isinstance(gene, (str, Path)):
        gene = load_transformer_gene(gene)
    if hasattr(gene, "descendant") and not isinstance(gene, ExpandedViT):
        return descendant_from_gene(gene, depth, num_classes, width=width, heads=heads, seed=seed)
    d = _from_templates(gene, depth, num_classes, copy_head=copy_head, seed=seed)
    return _at_width(d, width, heads, seed)


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


def selected_ancestry(ancestry: nn.Module, depth: int, num_classes: int, *, width: int | None = None,
                      heads: int | None = None, seed: int | None = None) -> Descendant:
    """Weight selection (Xu et al., ICLR 2024): the ancestry's first ``depth`` blocks (all of them and fresh
    blocks on top when ``depth`` is deeper), embeddings and final norm, every tensor cut to ``width`` / ``heads``
    by uniformly spaced elements (:mod:`learngene.models.vit_resize`), a fresh head.  At the ancestry's width and
    depth <= its depth this is exactly :func:`truncated_ancestry`.  Storage: the whole ancestry but its head (like
    for like with the genes, which keep no head)."""
    depth, num_classes = _depth(depth), _classes(num_classes)
    cfg = vit_config(ancestry)
    target = _fresh(descendant_shape(cfg, width, heads), depth, num_classes, seed)
    kept = min(depth, num_blocks(ancestry))
    prefixes = tuple(f"{BLOCK_PREFIX}{i}." for i in range(kept))
    src = ancestry.state_dict()
    keys = [k for k in src if not k.startswith("head.") and (not k.startswith(BLOCK_PREFIX) or k.startswith(prefixes))]
    inherited = select_width(src, cfg, keys, target)
    return Descendant(target, "weight-selection", depth, num_classes, params_without_head(ancestry), inherited)


def scratch_descendant(
    config: Mapping[str, Any] | nn.Module, depth: int, num_classes: int, *, width: int | None = None,
    heads: int | None = None, seed: int | None = None
) -> Descendant:
    """A freshly initialised ViT of the given shape record (or of a model's shape) at ``width`` / ``heads``
    (default: the record's): nothing stored."""
    if isinstance(config, ExpandedViT):
        cfg: dict[str, Any] = config.vit_cfg
    elif isinstance(config, nn.Module):
        cfg = vit_config(config)
    else:
        cfg = full_config(config)
    depth, num_classes = _depth(depth), _classes(num_classes)
    shape = descendant_shape(cfg, width, heads)
    return Descendant(_fresh(shape, depth, num_classes, seed), "scratch", depth, num_classes, 0, ())


# ---------------------------------------------------------------------- from a saved transformer learngene
def descendant_from_gene(
    gene: Any, depth: int, num_classes: int, *, width: int | None = None, heads: int | None = None,
    seed: int | None = None
) -> Descendant:
    """A descendant ViT of ``depth`` blocks, ``width`` / ``heads`` and a fresh ``num_classes`` head from a
    transformer learngene (a loaded one with a ``descendant`` method, or the path of a saved one).

    :class:`TransformerGene`: TLEG expands every block by its rule, Heur-LG stacks its blocks last on fresh
    ones, both at the gene's width, then moved to ``width`` by weight selection.  A gene whose ``descendant``
    takes the width itself (the frequency learngene) builds it directly.  ``stored_params`` is the gene's size:
    what must be kept to build every shape.
    """
    if isinstance(gene, (str, Path)):
        gene = load_transformer_gene(gene)
    if not hasattr(gene, "descendant"):
        raise GeneError(f"descendant_from_gene needs a transformer learngene or its directory, got {type(gene).__name__}")
    if not isinstance(gene, TransformerGene):
        model, inherited = gene.descendant(depth, num_classes, width=width, heads=heads, seed=seed)
        return Descendant(model, gene.kind, depth, num_classes, gene.stored_params, inherited)
    model, inherited = gene.descendant(depth, num_classes, seed=seed)
    method = gene.kind if gene.kind == "heur-lg" or gene.rule_name == "linear" else f"expanded:{gene.rule_name}"
    d = Descendant(model, method, depth, num_classes, gene.stored_params, inherited)
    return _at_width(d, width, heads, seed)

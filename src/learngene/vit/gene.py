"""Transformer learngenes as artifacts: what is kept to build vision transformers of any depth.

Two kinds share one class, :class:`TransformerGene`, and one on-disk format (:data:`~learngene.artifacts.
TRANSFORMER_GENE`, ``learngene-vit/v1``: ``learngene.json`` + ``model.safetensors``):

* ``"tleg"`` -- the templates of an auxiliary network trained by distillation (TLEG: block ``l`` of ``L`` is
  ``theta_A + (l/L) * theta_B``; SWS and stacking are other expansion rules) plus the shared patch/position
  embeddings and final norm.  Tensors: ``templates.<block param>`` stacks ``[n_templates, *shape]`` and the
  shared tensors under timm names.  The manifest records the rule and the auxiliary net's shape.
* ``"heur-lg"`` -- whole blocks of a trained ancestry chosen by a criterion (gradient stability or
  validation), kept under their ancestry names ``blocks.<i>.*``, with the embeddings and the final norm.
  Descendants stack them on top of fresh blocks.

Loading checks the artifact (checksum, format, version: :func:`~learngene.artifacts.load_artifact`) and then
that the tensors are exactly those the manifest's shape record, kind, rule and block list call for, with the
right shapes: anything else is a :class:`~learngene.errors.GeneError` that names the difference.

``build_descendant(gene, depth=D, num_classes=C, seed=s)`` returns a
:class:`~learngene.vit.descendants.Descendant` (a plain timm ``VisionTransformer`` with a fresh head) of any depth
the gene allows: deeper than the ancestry too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from learngene.artifacts import TRANSFORMER_GENE, declared_format, load_artifact, save_artifact, serialize
from learngene.errors import GeneError, ModelError
from learngene.gene_format import validate_file_contract
from learngene.models.expansion import ExpandedViT, rule_from_spec
from learngene.models.vit import (
    BLOCK_PREFIX,
    EMBEDDING_PREFIXES,
    FINAL_NORM_PREFIXES,
    build_vit,
    full_config,
    load_block_state_dict,
    num_blocks,
    shared_state_dict,
    split_block_key,
    vit_config,
)
from learngene.models.vit_resize import at_width, descendant_shape
from learngene.runtime import seeded
from learngene.safeio import jsonable

__all__ = [
    "GENE_KINDS",
    "TransformerGene",
    "check_input_spec",
    "extract_heur_lg",
    "extract_tleg",
    "is_transformer_gene",
]

GENE_KINDS = ("tleg", "heur-lg")
_SPEC_KEYS = ("image_size", "channels", "mean", "std")


def _err(where: str, message: str) -> GeneError:
    return GeneError(f"invalid transformer learngene{where}: {message}")


def _check_spec(spec: Any, where: str = "") -> dict[str, Any]:
    """The input preprocessing (image_size, channels, mean, std, invert, resize) that descendants expect."""
    if not isinstance(spec, Mapping) or not set(_SPEC_KEYS) <= set(spec):
        raise _err(where, f"'input_spec' must give {list(_SPEC_KEYS)} (prepare.input_spec of the source classes)")
    size, channels = spec["image_size"], spec["channels"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or channels not in (1, 3):
        raise _err(where, f"input_spec image_size {size!r} / channels {channels!r} are not a valid image shape")
    for key in ("mean", "std"):
        vals = spec[key]
        if (
            not isinstance(vals, (list, tuple))
            or len(vals) not in (1, channels)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals)
        ):
            raise _err(where, f"input_spec {key} must list {channels} finite number(s), got {vals!r}")
    if any(s <= 0 for s in spec["std"]):
        raise _err(where, f"input_spec std must be positive, got {spec['std']!r}")
    out = {"image_size": int(size), "channels": int(channels),
           "mean": [float(v) for v in spec["mean"]], "std": [float(v) for v in spec["std"]]}
    # how a user's files are read (inversion, resize mode) travels with the gene, as for CNN genes
    contract = validate_file_contract({k: spec[k] for k in ("invert", "resize") if k in spec}, GeneError)
    return {**out, "invert": contract["invert"], "resize": contract["resize"]}


check_input_spec = _check_spec  # public for the other transformer kinds (learngene.vit.frequency)


def _meta_vit(cfg: Mapping[str, Any], depth: int) -> nn.Module:
    """A shape-only ViT of the record (no memory, no init cost): the reference of expected tensor shapes."""
    with torch.device("meta"):
        return build_vit({**cfg, "depth": depth})


def _shapes(tensors: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in tensors.items()}


def _compare(expected: Mapping[str, tuple[int, ...]], given: Mapping[str, Tensor], where: str, what: str) -> None:
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        raise _err(
            where,
            f"its tensors do not match its manifest ({what}): missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}; the weights belong to another gene or the manifest was edited",
        )
    bad = [f"{k} {list(given[k].shape)} != {list(s)}" for k, s in expected.items() if tuple(given[k].shape) != s]
    if bad:
        raise _err(where, f"tensor shapes do not match its manifest ({what}): {bad[:3]}; the weights belong to "
                          "another gene or the manifest was edited")
    floats = [k for k, v in given.items() if not v.is_floating_point()]
    if floats:
        raise _err(where, f"tensors {floats[:3]} are not floating point")


class TransformerGene:
    """A transformer learngene: its kind, tensors and the records needed to build descendants from them.

    Build one with :func:`extract_tleg` / :func:`extract_heur_lg`, or :meth:`load` it.  ``vit_cfg`` is the
    ViT shape record of its descendants (depth: the auxiliary depth for TLEG, the ancestry's for Heur-LG).
    """

    def __init__(
        self,
        kind: str,
        tensors: Mapping[str, Tensor],
        *,
        vit_cfg: Mapping[str, Any],
        input_spec: Mapping[str, Any],
        rule: Mapping[str, Any] | None = None,
        aux_depth: int | None = None,
        block_indices: Sequence[int] | None = None,
        ancestry: Mapping[str, Any] | None = None,
        criterion: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        made_by: str | None = None,
        where: str = "",
    ) -> None:
        if kind not in GENE_KINDS:
            raise _err(where, f"'kind' must be one of {list(GENE_KINDS)}, got {kind!r}")
        self.kind = kind
        self.tensors: dict[str, Tensor] = {k: v.detach().cpu() for k, v in tensors.items()}
        try:
            self.vit_cfg: dict[str, Any] = full_config(dict(vit_cfg))
        except (ModelError, TypeError, AttributeError) as err:
            raise _err(where, f"its ViT shape record 'vit' cannot be built: {err}") from None
        self.input_spec = _check_spec(input_spec, where)
        self.rule = dict(rule) if rule is not None else None
        self.aux_depth = aux_depth
        self.block_indices = [int(i) for i in block_indices] if block_indices is not None else None
        self.ancestry = dict(ancestry or {})
        self.criterion = dict(criterion) if criterion else None
        self.provenance = dict(provenance or {})
        self.made_by = made_by
        self._validate(where)

    # ------------------------------------------------------------------ checks
    def _validate(self, where: str) -> None:
        cfg = self.vit_cfg
        if self.kind == "tleg":
            if self.rule is None or self.aux_depth is None:
                raise _err(where, "a 'tleg' gene needs its expansion 'rule' and 'aux_depth'")
            try:
                rule = rule_from_spec(self.rule)
                rule.check_depth(self.aux_depth)
                with torch.device("meta"):
                    ref = ExpandedViT(cfg, rule, self.aux_depth)
            except (ModelError, TypeError, ValueError) as err:
                raise _err(where, f"its rule {self.rule} / auxiliary depth {self.aux_depth!r} cannot be built: {err}") \
                    from None
            expected = _shapes(ref.templates_state_dict(include_head=False))
            _compare(expected, self.tensors, where, f"rule {rule.name!r}, {rule.n_templates} templates per weight")
            if self.block_indices is not None:
                raise _err(where, "a 'tleg' gene has no 'block_indices'")
            return
        # heur-lg
        if self.block_indices is None or not self.block_indices:
            raise _err(where, "a 'heur-lg' gene needs a non-empty 'block_indices' list")
        if sorted(set(self.block_indices)) != self.block_indices:
            raise _err(where, f"'block_indices' {self.block_indices} must be distinct and increasing")
        depth = self.ancestry.get("depth", cfg["depth"])
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise _err(where, f"'ancestry.depth' must be an integer >= 1, got {depth!r}")
        if self.block_indices[0] < 0 or self.block_indices[-1] >= depth:
            raise _err(where, f"'block_indices' {self.block_indices} lie outside the ancestry's blocks 0..{depth - 1}")
        ref = _meta_vit(cfg, 1)
        block = {n: tuple(v.shape) for n, v in ref.blocks[0].state_dict().items()}
        expected = {f"{BLOCK_PREFIX}{i}.{n}": s for i in self.block_indices for n, s in block.items()}
        shared = _shapes(shared_state_dict(ref, include_head=False))
        expected.update({k: s for k, s in shared.items() if k.startswith(EMBEDDING_PREFIXES)})
        # the final norm is optional (extract_heur_lg(include_final_norm=False)), but all of it or none
        norm = {k: s for k, s in shared.items() if k.startswith(FINAL_NORM_PREFIXES)}
        if any(k in self.tensors for k in norm):
            expected.update(norm)
        _compare(expected, self.tensors, where, f"blocks {self.block_indices} of a depth-{depth} ancestry + embeddings")

    # ------------------------------------------------------------------ views
    @property
    def stored_params(self) -> int:
        """Numbers a user must keep to build descendants of every depth from this gene."""
        return sum(int(v.numel()) for v in self.tensors.values())

    @property
    def rule_name(self) -> str | None:
        return None if self.rule is None else str(self.rule.get("name"))

    @property
    def ancestry_depth(self) -> int | None:
        depth = self.ancestry.get("depth")
        return int(depth) if depth is not None else (self.vit_cfg["depth"] if self.kind == "heur-lg" else None)

    def aux_config(self) -> dict[str, Any]:
        """The :meth:`ExpandedViT.config` record of a TLEG gene's auxiliary net."""
        if self.kind != "tleg":
            raise GeneError(f"a {self.kind!r} gene has no auxiliary network")
        return {"name": "expanded_vit", "vit": {**self.vit_cfg, "depth": self.aux_depth}, "rule": dict(self.rule),
                "depth": self.aux_depth}

    def expanded(self, *, seed: int | None = None) -> ExpandedViT:
        """The TLEG auxiliary net rebuilt from the templates (fresh head, seeded)."""
        return ExpandedViT.from_templates(self.tensors, self.aux_config(), seed=seed)

    def check_depth(self, depth: int) -> int:
        """``depth`` if this gene can build it, else a ModelError saying why."""
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ModelError(f"descendant depth must be an integer >= 1, got {depth!r}")
        if self.kind == "tleg":
            rule_from_spec(self.rule).check_depth(depth)
        return depth

    # ------------------------------------------------------------------ descendants
    paradigm = "vit"  # the config paradigm whose settings train its descendants

    def descendant(self, depth: int, num_classes: int, *, seed: int | None = None) -> tuple[nn.Module, tuple[str, ...]]:
        """A ViT of ``depth`` blocks with a fresh ``num_classes`` head built from this gene, and the state-dict keys
        that came from the gene.  TLEG: every block expanded by the rule, embeddings and final norm copied.
        Heur-LG: a fresh ViT, embeddings (+ final norm) copied, the gene's blocks stacked last (a descendant
        shallower than the gene keeps its last ``depth`` blocks: the criterion's blocks end the network)."""
        depth = self.check_depth(depth)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ModelError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if self.kind == "tleg":
            model = self.expanded(seed=seed).materialize(depth, num_classes, copy_head=False, seed=seed)
            return model, tuple(k for k in model.state_dict() if not k.startswith("head."))
        with seeded(seed):
            model = build_vit({**self.vit_cfg, "depth": depth, "num_classes": num_classes})
        shared = {k: v for k, v in self.tensors.items() if not k.startswith(BLOCK_PREFIX)}
        state = model.state_dict()
        state.update({k: v.clone() for k, v in shared.items()})
        model.load_state_dict(state, strict=True)
        inherited = list(shared)
        chosen = self.block_indices[-depth:] if depth < len(self.block_indices) else list(self.block_indices)
        start = depth - len(chosen)
        for offset, src in enumerate(chosen):
            block = {b[1]: v for k, v in self.tensors.items() if (b := split_block_key(k)) and b[0] == src}
            load_block_state_dict(model, start + offset, block)
            inherited += [f"{BLOCK_PREFIX}{start + offset}.{name}" for name in block]
        return model, tuple(inherited)

    def build(self, num_classes: int, *, depth: int, width: int | None = None, heads: int | None = None,
              seed: int | None = None, inherit: bool = True) -> nn.Module:
        """A descendant of ``depth`` blocks, ``width`` / ``heads`` (default: the gene's; other widths by weight
        selection of the inherited tensors) (``inherit=False``: the same shape, randomly initialized)."""
        shape = descendant_shape(self.vit_cfg, width, heads)
        if not inherit:
            with seeded(seed):
                return build_vit({**shape, "depth": self.check_depth(depth), "num_classes": num_classes})
        return at_width(*self.descendant(depth, num_classes, seed=seed), width, heads, seed)[0]

    # ------------------------------------------------------------------ files
    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "kind": self.kind,
            "vit": self.vit_cfg,
            "input_spec": self.input_spec,
            "stored_params": self.stored_params,
            "ancestry": self.ancestry,
            "provenance": self.provenance,
        }
        if self.kind == "tleg":
            fields.update(rule=self.rule, aux_depth=self.aux_depth)
        else:
            fields.update(block_indices=self.block_indices, criterion=self.criterion)
        return jsonable(fields)

    def manifest(self) -> dict[str, Any]:
        """The learngene.json content of this gene (including the tensor file's SHA-256)."""
        return serialize(TRANSFORMER_GENE, dict(self.tensors), self._fields(), version=self.made_by)[1]

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` then ``learngene.json`` into ``directory`` (atomically)."""
        save_artifact(directory, TRANSFORMER_GENE, dict(self.tensors), self._fields())
        return Path(directory)

    @classmethod
    def load(cls, path: str | Path) -> TransformerGene:
        """The gene at ``path`` (its directory or one of its files), fully checked; GeneError otherwise."""
        manifest, tensors, directory = load_artifact(path, TRANSFORMER_GENE)
        where = f" {directory}"
        kind = manifest.get("kind")
        if kind not in GENE_KINDS:
            raise _err(where, f"'kind' must be one of {list(GENE_KINDS)}, got {kind!r}")
        for key in ("vit", "input_spec"):
            if not isinstance(manifest.get(key), dict):
                raise _err(where, f"the manifest lacks its {key!r} record; re-export the gene")
        if kind == "tleg" and not (isinstance(manifest.get("rule"), dict)
                                   and isinstance(manifest.get("aux_depth"), int)):
            raise _err(where, "a 'tleg' manifest needs 'rule' (a dict) and 'aux_depth' (an integer)")
        blocks = manifest.get("block_indices")
        if kind == "heur-lg" and not (isinstance(blocks, list) and all(isinstance(i, int) for i in blocks)):
            raise _err(where, f"a 'heur-lg' manifest needs 'block_indices' as a list of integers, got {blocks!r}")
        ancestry = manifest.get("ancestry") or {}
        if not isinstance(ancestry, dict):
            raise _err(where, "'ancestry' must be an object")
        gene = cls(
            kind,
            tensors,
            vit_cfg=manifest["vit"],
            input_spec=manifest["input_spec"],
            rule=manifest.get("rule") if kind == "tleg" else None,
            aux_depth=manifest.get("aux_depth") if kind == "tleg" else None,
            block_indices=blocks if kind == "heur-lg" else None,
            ancestry=ancestry,
            criterion=manifest.get("criterion") if isinstance(manifest.get("criterion"), dict) else None,
            provenance=manifest.get("provenance") if isinstance(manifest.get("provenance"), dict) else None,
            made_by=manifest.get("version"),
            where=where,
        )
        if manifest.get("stored_params") not in (None, gene.stored_params):
            raise _err(where, f"manifest says stored_params {manifest.get('stored_params')} but its tensors hold "
                              f"{gene.stored_params}; the manifest was edited")
        return gene

    # ------------------------------------------------------------------ text
    def describe(self) -> str:
        """A readable summary for ``learngene inspect``."""
        c = self.vit_cfg
        head = f"transformer learngene ({TRANSFORMER_GENE.format}, kind {self.kind}"
        lines = [head + (f", made by learngene {self.made_by})" if self.made_by else ")")]
        lines.append(
            f"ViT: {c['img_size']} px, patch {c['patch_size']}, {c['in_chans']} channel(s), width {c['embed_dim']}, "
            f"{c['num_heads']} heads, mlp ratio {c['mlp_ratio']:g}, pool {c['global_pool'] or 'none'}"
            f"{', class token' if c['class_token'] else ''}"
        )
        anc_params = self.ancestry.get("params")
        ratio = f" ({self.stored_params / anc_params:.1%} of the ancestry's {anc_params:,})" if anc_params else ""
        lines.append(f"stored: {self.stored_params:,} parameters{ratio}")
        if self.kind == "tleg":
            rule = rule_from_spec(self.rule)
            formula = {
                "linear": "block l of L = theta_A + (l/L) * theta_B",
                "stagewise": f"blocks of each of {rule.n_templates} stages share that stage's template",
                "stack": f"exactly {rule.n_templates} blocks, one template each",
            }.get(rule.name, f"layer l = sum_t c(l, t) * T_t over {rule.n_templates} templates")
            lines.append(f"expansion rule: {rule.name} ({formula}); auxiliary net of depth {self.aux_depth}")
            depths = {"stagewise": f"any depth >= {rule.n_templates}", "stack": f"depth {rule.n_templates} only"}
            lines.append(f"descendants: {depths.get(rule.name, 'any depth')}")
        else:
            lines.append(f"ancestry blocks {self.block_indices} of {self.ancestry_depth} "
                         f"(stacked last, on top of fresh blocks, in descendants of any depth)")
            if self.criterion:
                lines.append(f"chosen by {self.criterion.get('name')}: {self.criterion.get('reason', '')}".rstrip(": "))
        lines += ["", "tensors:"]
        rows = [("name", "shape", "params")]
        for k in sorted(self.tensors):
            v = self.tensors[k]
            rows.append((k, "x".join(str(s) for s in v.shape) or "scalar", f"{v.numel():,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        s = self.input_spec
        lines += ["", f"input: {s['image_size']}x{s['image_size']}, {s['channels']} channel(s), "
                      f"mean {[round(m, 4) for m in s['mean']]}, std {[round(m, 4) for m in s['std']]}"]
        if self.provenance:
            lines.append("provenance: " + json.dumps(self.provenance, sort_keys=True, default=str))
        return "\n".join(lines)

    def __repr__(self) -> str:
        extra = f"rule={self.rule_name}" if self.kind == "tleg" else f"blocks={self.block_indices}"
        return f"TransformerGene(kind={self.kind!r}, {extra}, stored_params={self.stored_params})"


# ---------------------------------------------------------------------- extraction
def _ancestry_record(ancestry: nn.Module | None, depth: int | None = None) -> dict[str, Any]:
    if ancestry is None:
        return {"depth": depth} if depth is not None else {}
    return {"depth": num_blocks(ancestry), "params": sum(int(p.numel()) for p in ancestry.parameters())}


def extract_tleg(
    expanded_vit: ExpandedViT,
    input_spec: Mapping[str, Any],
    *,
    ancestry: nn.Module | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> TransformerGene:
    """The TLEG (or SWS / stack) learngene of a trained auxiliary net: templates + shared parts, no head.

    ``ancestry`` (optional) only records its depth and size in the manifest, for the storage comparison.
    """
    if not isinstance(expanded_vit, ExpandedViT):
        raise ModelError(f"extract_tleg needs a trained ExpandedViT auxiliary net, got {type(expanded_vit).__name__}")
    return TransformerGene(
        "tleg",
        expanded_vit.templates_state_dict(include_head=False),
        vit_cfg=expanded_vit.vit_cfg,
        input_spec=input_spec,
        rule=expanded_vit.rule.to_config(),
        aux_depth=expanded_vit.depth,
        ancestry=_ancestry_record(ancestry),
        provenance=provenance,
    )


def extract_heur_lg(
    ancestry: nn.Module,
    blocks: Iterable[int],
    input_spec: Mapping[str, Any],
    *,
    criterion: Mapping[str, Any] | None = None,
    include_final_norm: bool = True,
    provenance: Mapping[str, Any] | None = None,
) -> TransformerGene:
    """The Heur-LG learngene: ancestry blocks ``blocks`` (under their ancestry names) plus the embeddings.

    ``ancestry`` is any plain timm ``VisionTransformer`` (a trained ancestry or a user's pretrained DeiT);
    ``criterion`` is the record of how the blocks were chosen (kept in the manifest).
    """
    cfg = vit_config(ancestry)
    chosen = sorted({int(i) for i in blocks})
    n = num_blocks(ancestry)
    if not chosen or chosen[0] < 0 or chosen[-1] >= n:
        raise ModelError(f"blocks {list(blocks)} must name at least one of the ancestry's blocks 0..{n - 1}")
    state = ancestry.state_dict()
    prefixes = tuple(f"{BLOCK_PREFIX}{i}." for i in chosen)
    keep = EMBEDDING_PREFIXES + (FINAL_NORM_PREFIXES if include_final_norm else ())
    tensors = {
        k: v.detach().clone()
        for k, v in state.items()
        if k.startswith(prefixes) or (not k.startswith(BLOCK_PREFIX) and k.startswith(keep))
    }
    return TransformerGene(
        "heur-lg",
        tensors,
        vit_cfg=cfg,
        input_spec=input_spec,
        block_indices=chosen,
        ancestry=_ancestry_record(ancestry),
        criterion=criterion,
        provenance=provenance,
    )


def is_transformer_gene(path: str | Path) -> bool:
    """Whether ``path`` (a directory or its ``learngene.json``) holds a transformer learngene (by its format);
    never raises."""
    return declared_format(path, TRANSFORMER_GENE.manifest) == TRANSFORMER_GENE.format

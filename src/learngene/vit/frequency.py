"""A learngene that needs no training (FRONT-style): a trained ViT's weights as low-frequency DCT coefficients.

:func:`extract_frequency` takes any trained plain timm ViT (a run's ancestry, or a user's own checkpoint) and
keeps, for every block tensor stacked over the blocks (``[L, *shape]``), the low-frequency corner of its
orthonormal DCT along the depth axis and every width axis: ``ceil(keep * n)`` coefficients of each axis of length
``n`` (``L``, ``D``, ``E``, ``M``; the heads axis, the q/k/v axis and the fixed axes are kept whole, see
:mod:`learngene.models.vit_resize`).  So a 3-axis tensor keeps about ``keep**3`` of its numbers.  The embeddings
and the final norm are kept whole, in the DCT domain too, so that every width axis is resized the same way.

A descendant of any depth, width and head count comes from truncating or zero-padding every coefficient block
to the target lengths and inverting the DCT (:meth:`FrequencyGene.descendant`); the head is fresh.  Nothing is
trained: the cost of this learngene is the ancestry's training alone.

Artifact: :data:`~learngene.artifacts.FREQUENCY_GENE` (``learngene-vit-frequency/v1``: ``learngene.json`` +
``model.safetensors``) with tensors ``coef.blocks.<block tensor>`` and ``coef.<shared tensor>``; the manifest
records the ancestry's shape, ``keep`` and the kept lengths per axis, and loading checks every tensor's shape
against them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from learngene.artifacts import (
    FREQUENCY_GENE,
    TRANSFORMER_GENE,
    declared_format,
    load_artifact,
    save_artifact,
    serialize,
)
from learngene.errors import GeneError, ModelError
from learngene.models.vit import BLOCK_PREFIX, build_vit, full_config, num_blocks, vit_config
from learngene.models.vit_resize import (
    RESIZABLE,
    axis_sizes,
    dct_coefficients,
    descendant_shape,
    from_coefficients,
    layout,
    tensor_axes,
)
from learngene.runtime import seeded
from learngene.safeio import jsonable
from learngene.vit.gene import TransformerGene, check_input_spec

__all__ = ["FrequencyGene", "extract_frequency", "frequency_from_weights", "kept_lengths", "load_transformer_gene"]

COEF = "coef."
BLOCK_COEF = f"{COEF}{BLOCK_PREFIX}"
TRUNCATED_AXES = ("L", "D", "E", "M")  # the heads axis is kept whole: heads have no order to be smooth in


def kept_lengths(sizes: Mapping[str, int], keep: float) -> dict[str, int]:
    """``ceil(keep * n)`` coefficients of every truncated axis (at least 1)."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0:
        raise ModelError(f"the kept fraction of DCT coefficients must be in (0, 1], got {keep!r}")
    return {a: max(1, math.ceil(keep * int(sizes[a]) - 1e-9)) for a in TRUNCATED_AXES}


def _block_layout(cfg: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Block-relative tensor names -> shapes of one block of the record (meta device: no memory)."""
    with torch.device("meta"):
        block = build_vit({**cfg, "depth": 1}).blocks[0]
    return {k: tuple(v.shape) for k, v in block.state_dict().items()}


def _shared_layout(cfg: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = build_vit({**cfg, "depth": 1})
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not k.startswith(BLOCK_PREFIX) and not k.startswith("head.")}


def _expected(cfg: Mapping[str, Any], kept: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Every stored tensor's shape for an ancestry record ``cfg`` and kept lengths ``kept``."""
    sizes = axis_sizes(cfg)
    out = {}
    for name, shape in _block_layout(cfg).items():
        axes, shaped = tensor_axes(name, shape, sizes, block=True)
        out[f"{BLOCK_COEF}{name}"] = (kept["L"], *(kept.get(a, n) for a, n in zip(axes, shaped)))
    for name, shape in _shared_layout(cfg).items():
        _, shaped = tensor_axes(name, shape, sizes, block=False)
        out[f"{COEF}{name}"] = shaped
    return out


class FrequencyGene:
    """The DCT coefficients of a trained ViT's weights (see the module docstring).

    ``vit_cfg``: the ancestry's shape record (its depth is the depth axis' length); ``keep``: the kept fraction
    per truncated axis; ``tensors``: the coefficient blocks."""

    kind = "frequency"
    paradigm = "vit"  # the config paradigm whose settings train its descendants
    rule = None  # what inherit records of TLEG genes, absent here
    block_indices = None

    def __init__(self, tensors: Mapping[str, Tensor], *, vit_cfg: Mapping[str, Any], keep: float,
                 input_spec: Mapping[str, Any], ancestry: Mapping[str, Any] | None = None,
                 provenance: Mapping[str, Any] | None = None, made_by: str | None = None,
                 where: str = "") -> None:
        try:
            self.vit_cfg = full_config({**vit_cfg, "num_classes": 0})
            self.sizes = axis_sizes(self.vit_cfg)
            self.kept = kept_lengths(self.sizes, keep)
            expected = _expected(self.vit_cfg, self.kept)
        except ModelError as err:
            raise GeneError(f"invalid frequency learngene{where}: {err}") from None
        self.keep = float(keep)
        self.tensors = {k: v.detach().cpu() for k, v in tensors.items()}
        self.input_spec = check_input_spec(input_spec, where)
        self.ancestry = dict(ancestry or {})
        self.provenance = dict(provenance or {})
        self.made_by = made_by
        missing, unexpected = sorted(set(expected) - set(self.tensors)), sorted(set(self.tensors) - set(expected))
        if missing or unexpected:
            raise GeneError(f"invalid frequency learngene{where}: its tensors do not match its manifest: missing "
                            f"{missing[:4]}, unexpected {unexpected[:4]}; the weights belong to another gene or the "
                            "manifest was edited")
        bad = [f"{k} {list(v.shape)} != {list(expected[k])}" for k, v in self.tensors.items()
               if tuple(v.shape) != expected[k]]
        if bad or any(not v.is_floating_point() for v in self.tensors.values()):
            raise GeneError(f"invalid frequency learngene{where}: tensor shapes do not match its manifest "
                            f"({bad[:3] or 'not floating point'}); the weights belong to another gene or the "
                            "manifest was edited")

    # ------------------------------------------------------------------ views
    @property
    def stored_params(self) -> int:
        """Numbers a user must keep to build descendants of every shape."""
        return sum(int(v.numel()) for v in self.tensors.values())

    @property
    def ancestry_depth(self) -> int:
        return int(self.vit_cfg["depth"])

    def check_depth(self, depth: int) -> int:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ModelError(f"descendant depth must be an integer >= 1, got {depth!r}")
        return depth

    # ------------------------------------------------------------------ descendants
    @torch.no_grad()
    def descendant(self, depth: int, num_classes: int, *, width: int | None = None, heads: int | None = None,
                   seed: int | None = None) -> tuple[nn.Module, tuple[str, ...]]:
        """A ViT of ``depth`` blocks, ``width`` channels in ``heads`` heads (default: the ancestry's) with a fresh
        ``num_classes`` head: every tensor from its coefficients at the target lengths; the keys inherited."""
        depth = self.check_depth(depth)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ModelError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        shape = descendant_shape(self.vit_cfg, width, heads)
        with seeded(seed):
            model = build_vit({**shape, "depth": depth, "num_classes": num_classes})
        src = {**self.sizes}
        dst = axis_sizes(shape, depth)
        state = model.state_dict()
        inherited = []
        for key, coef in self.tensors.items():
            name = key[len(COEF):]
            if key.startswith(BLOCK_COEF):
                rel = name[len(BLOCK_PREFIX):]
                axes = layout(rel, block=True)
                full = {a: src[a] for a in ("L", *axes) if a in RESIZABLE}
                stack = from_coefficients(coef, ("L", *axes), full, dst)
                for i in range(depth):
                    k = f"{BLOCK_PREFIX}{i}.{rel}"
                    state[k] = stack[i].reshape(state[k].shape)
                    inherited.append(k)
            else:
                axes = layout(name, block=False)
                full = {a: src[a] for a in axes if a in RESIZABLE}
                state[name] = from_coefficients(coef, axes, full, dst).reshape(state[name].shape)
                inherited.append(name)
        model.load_state_dict(state, strict=True)
        return model, tuple(inherited)

    def build(self, num_classes: int, *, depth: int, width: int | None = None, heads: int | None = None,
              seed: int | None = None, inherit: bool = True) -> nn.Module:
        """A descendant (``inherit=False``: the same shape, randomly initialized)."""
        if not inherit:
            with seeded(seed):
                shape = descendant_shape(self.vit_cfg, width, heads)
                return build_vit({**shape, "depth": self.check_depth(depth), "num_classes": num_classes})
        return self.descendant(depth, num_classes, width=width, heads=heads, seed=seed)[0]

    # ------------------------------------------------------------------ files
    def _fields(self) -> dict[str, Any]:
        return jsonable({"kind": self.kind, "vit": self.vit_cfg, "keep": self.keep, "kept": self.kept,
                         "input_spec": self.input_spec, "stored_params": self.stored_params,
                         "ancestry": self.ancestry, "provenance": self.provenance})

    def manifest(self) -> dict[str, Any]:
        return serialize(FREQUENCY_GENE, dict(self.tensors), self._fields(), version=self.made_by)[1]

    def save(self, directory: str | os.PathLike[str]) -> Path:
        save_artifact(directory, FREQUENCY_GENE, dict(self.tensors), self._fields())
        return Path(directory)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FrequencyGene:
        """The gene at ``path`` (its directory or one of its files), fully checked; GeneError otherwise."""
        manifest, tensors, directory = load_artifact(path, FREQUENCY_GENE)
        where = f" {directory}"
        if manifest.get("kind") != cls.kind:
            raise GeneError(f"invalid frequency learngene{where}: 'kind' must be 'frequency', got {manifest.get('kind')!r}")
        for key, typ in (("vit", dict), ("input_spec", dict), ("keep", (int, float))):
            if not isinstance(manifest.get(key), typ) or isinstance(manifest.get(key), bool):
                raise GeneError(f"invalid frequency learngene{where}: the manifest lacks a valid {key!r}; make the "
                                "gene again")
        gene = cls(tensors, vit_cfg=manifest["vit"], keep=manifest["keep"], input_spec=manifest["input_spec"],
                   ancestry=manifest.get("ancestry") if isinstance(manifest.get("ancestry"), dict) else None,
                   provenance=manifest.get("provenance") if isinstance(manifest.get("provenance"), dict) else None,
                   made_by=manifest.get("version"), where=where)
        if manifest.get("kept") not in (None, gene.kept) or manifest.get("stored_params") not in (None, gene.stored_params):
            raise GeneError(f"invalid frequency learngene{where}: its 'kept' / 'stored_params' do not match its "
                            "tensors; the manifest was edited")
        return gene

    # ------------------------------------------------------------------ text
    def describe(self) -> str:
        c, s = self.vit_cfg, self.input_spec
        anc = self.ancestry.get("params_without_head") or self.ancestry.get("params")
        ratio = f" ({self.stored_params / anc:.1%} of the ancestry's {anc:,} without its head)" if anc else ""
        lines = [f"frequency learngene ({FREQUENCY_GENE.format}{', made by learngene ' + self.made_by if self.made_by else ''})",
                 f"from a ViT of {c['depth']} blocks: {c['img_size']} px, patch {c['patch_size']}, {c['in_chans']} "
                 f"channel(s), width {c['embed_dim']}, {c['num_heads']} heads, mlp ratio {c['mlp_ratio']:g}",
                 f"kept: the lowest {self.keep:g} of the DCT coefficients along depth and every width axis "
                 f"({', '.join(f'{a} {self.kept[a]}/{self.sizes[a]}' for a in TRUNCATED_AXES)})",
                 f"stored: {self.stored_params:,} parameters{ratio}",
                 "descendants: any depth, width and head count (coefficients truncated or zero-padded, inverse DCT); "
                 "no training beyond the ancestry's",
                 f"input: {s['image_size']}x{s['image_size']}, {s['channels']} channel(s), mean "
                 f"{[round(m, 4) for m in s['mean']]}, std {[round(m, 4) for m in s['std']]}"]
        if self.provenance:
            lines.append("provenance: " + json.dumps(self.provenance, sort_keys=True, default=str))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"FrequencyGene(keep={self.keep:g}, stored_params={self.stored_params})"


def extract_frequency(ancestry: nn.Module, input_spec: Mapping[str, Any], *, keep: float = 0.6,
                      provenance: Mapping[str, Any] | None = None) -> FrequencyGene:
    """The frequency learngene of a trained plain timm ViT (no training: DCT and truncation only)."""
    cfg = vit_config(ancestry)
    sizes = axis_sizes(cfg)
    kept = kept_lengths(sizes, keep)
    state = {k: v.detach() for k, v in ancestry.state_dict().items()}
    L = num_blocks(ancestry)
    tensors: dict[str, Tensor] = {}
    for name, shape in _block_layout(cfg).items():
        axes, shaped = tensor_axes(name, shape, sizes, block=True)
        stack = torch.stack([state[f"{BLOCK_PREFIX}{i}.{name}"].reshape(shaped) for i in range(L)])
        cut = {a: kept.get(a, sizes[a]) for a in ("L", *axes) if a in RESIZABLE}  # heads: whole
        tensors[f"{BLOCK_COEF}{name}"] = dct_coefficients(stack, ("L", *axes), cut)
    for name, shape in _shared_layout(cfg).items():
        axes, shaped = tensor_axes(name, shape, sizes, block=False)
        full = {a: shaped[i] for i, a in enumerate(axes) if a in RESIZABLE}
        tensors[f"{COEF}{name}"] = dct_coefficients(state[name].reshape(shaped), axes, full)
    params = sum(int(p.numel()) for p in ancestry.parameters())
    head = sum(int(v.numel()) for k, v in state.items() if k.startswith("head."))
    return FrequencyGene(tensors, vit_cfg=cfg, keep=keep, input_spec=input_spec,
                         ancestry={"depth": L, "params": params, "params_without_head": params - head},
                         provenance=provenance)


def load_transformer_gene(path: str | os.PathLike[str]) -> TransformerGene | FrequencyGene:
    """A saved transformer learngene of either format (TLEG / Heur-LG, or frequency), by its manifest's format."""
    if declared_format(path, FREQUENCY_GENE.manifest) == FREQUENCY_GENE.format:
        return FrequencyGene.load(path)
    if declared_format(path, TRANSFORMER_GENE.manifest) not in (None, TRANSFORMER_GENE.format):
        raise GeneError(f"{path} holds no transformer learngene (format "
                        f"{declared_format(path, TRANSFORMER_GENE.manifest)!r})")
    return TransformerGene.load(path)


def frequency_from_weights(weights: str | os.PathLike[str], *, timm_name: str = "", image_size: int | None = None,
                           channels: int | None = None, keep: float = 0.6, mean: list[float] | None = None,
                           std: list[float] | None = None) -> FrequencyGene:
    """The frequency learngene of a user's own ViT file (``learngene make-gene --kind frequency``): a local
    ``.safetensors`` / ``.pth`` state dict of the timm model ``timm_name``, or a ``save_ancestry`` directory.

    It is read like ``vit.ancestry_weights`` (:class:`~learngene.vit.ancestry.UserAncestry`: local files only,
    ``torch.load(weights_only=True)``) at ``image_size`` / ``channels`` (default: the model's own; the position
    embedding is resampled to another size); ``mean`` / ``std``: the normalization its inputs had (default: the
    timm model's pretrained normalization, else 0.5 / 0.5)."""
    from learngene.config import apply_overrides, config_for
    from learngene.vit.ancestry import UserAncestry

    cfg = apply_overrides(config_for("vit"), [f"vit.ancestry_weights={json.dumps(str(weights))}",
                                              f"vit.ancestry_timm={json.dumps(timm_name)}"])
    import tempfile

    user = UserAncestry(cfg, Path(tempfile.gettempdir()) / "learngene-make-gene")  # its out: no cache is written
    own: dict[str, Any] = {}
    if user.arch:
        own = {"size": user.arch.get("img_size"), "chans": user.arch.get("in_chans")}
    else:
        import timm

        with torch.device("meta"):
            ref = timm.create_model(timm_name, pretrained=False)
        pre = getattr(ref, "pretrained_cfg", {}) or {}
        own = {"size": (pre.get("input_size") or [3, 224, 224])[-1], "chans": (pre.get("input_size") or [3])[0],
               "mean": pre.get("mean"), "std": pre.get("std")}
    size = int(image_size or (own["size"][0] if isinstance(own["size"], list) else own["size"]))
    chans = int(channels or own["chans"] or user.stem_channels())
    model = user.build(size, chans, 1)
    norm_mean = list(mean or (own.get("mean") if chans == 3 and own.get("mean") else [0.5] * chans))
    norm_std = list(std or (own.get("std") if chans == 3 and own.get("std") else [0.5] * chans))
    spec = {"image_size": size, "channels": chans, "mean": norm_mean, "std": norm_std}
    return extract_frequency(model, spec, keep=keep,
                             provenance={"weights": str(user.path), "sha256": user.sha256, "timm": timm_name or None,
                                         "adapted": user.adapted})

"""Kinds of learngene: what every gene offers (:class:`Gene`), and ``inherit`` for any of them.

A kind is a :class:`GeneKind` row of :data:`learngene.registry.GENE_KINDS`, keyed by its artifact format: the
gene class (which loads, saves, describes itself and builds individuals / descendants), the config paradigm
whose settings train what inherits from it, and its ``inherit`` (an individual or descendant trained on a user's
support folder, read by :func:`learngene.individual.read_support_query`).  The built-in kinds are registered
at the end of this module: the paper's CNN learngene (:class:`~learngene.gene.Learngene`) and transformer
learngenes (:class:`~learngene.vit.gene.TransformerGene`).  :func:`load_gene` reads any kind from its directory;
:func:`inherit` is ``learngene inherit``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from learngene.artifacts import FREQUENCY_GENE, GENE, TRANSFORMER_GENE, ArtifactKind, declared_format
from learngene.config import Config, apply_overrides, config_for
from learngene.errors import ConfigError, LearngeneError
from learngene.gene import Learngene
from learngene.individual import inherit as inherit_individual
from learngene.registry import GENE_KINDS
from learngene.safeio import check_writable_dir
from learngene.shipped import shipped_path
from learngene.vit.frequency import FrequencyGene
from learngene.vit.gene import TransformerGene
from learngene.vit.inherit import inherit_transformer

__all__ = ["Gene", "GeneKind", "inherit", "kind_of", "load_gene", "register_gene_kind", "resolve_gene"]


@runtime_checkable
class Gene(Protocol):
    """What every kind of learngene offers."""

    paradigm: str  # the config paradigm whose settings build and train its individuals ("cnn", "vit")
    input_spec: dict[str, Any]  # image_size, channels, mean, std of the inputs it expects

    def manifest(self) -> dict[str, Any]: ...

    def save(self, directory: str | os.PathLike[str]) -> Path: ...

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Gene: ...

    def describe(self) -> str: ...

    def build(self, num_classes: int, *, seed: int | None = 0, inherit: bool = True, **shape: Any) -> nn.Module: ...


# inherit(gene, support_dir, query_dir, out, *, cfg, depth, seed, compare_scratch, device, source) -> result
Inheritor = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class GeneKind:
    """A kind of learngene: its artifact, its class and how a model inherits from it."""

    artifact: ArtifactKind
    gene: type
    paradigm: str
    inherit: Inheritor


def register_gene_kind(artifact: ArtifactKind, gene: type, paradigm: str, inherit: Inheritor) -> GeneKind:
    """Make a kind of learngene loadable by :func:`load_gene` (``learngene inspect``) and inheritable."""
    return GENE_KINDS.register(artifact.format, GeneKind(artifact, gene, paradigm, inherit))


def kind_of(gene: Gene) -> GeneKind:
    for name in GENE_KINDS.in_order():
        row = GENE_KINDS.get(name)
        if isinstance(gene, row.gene):
            return row
    raise LearngeneError(f"{type(gene).__name__} is not a registered kind of learngene "
                         f"({', '.join(GENE_KINDS.in_order())}); register it with register_gene_kind")


def resolve_gene(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or the directory of the learngene shipped under that name (``learngene list genes``) when
    ``path`` does not exist."""
    p = Path(path)
    if not p.exists():
        shipped = shipped_path(str(path))
        if shipped is not None:
            return shipped
    return p


def load_gene(path: str | os.PathLike[str]) -> Gene:
    """The learngene in ``path`` (its directory or manifest, or the name of a shipped one), whatever its kind,
    fully checked by its loader.

    The kind is read from the manifest's format; a directory without a readable one is read as the paper's CNN
    learngene, whose loader then says what is wrong.
    """
    path = resolve_gene(path)
    fmt = declared_format(path, GENE.manifest)
    row = GENE_KINDS.get(fmt) if fmt in GENE_KINDS else GENE_KINDS.get(GENE.format)
    return row.gene.load(path)


def settings_for(row: GeneKind, cfg: Config | None, overrides: Sequence[str] = (), gene: Any = None) -> Config:
    """The configuration an inherit from a gene of kind ``row`` trains with: ``cfg`` (a preset or file of the
    gene's paradigm) or that paradigm's defaults updated with the ``[individual]`` settings the gene records (the
    ones its run chose on pseudo-tasks), then ``overrides`` (``section.key=value``)."""
    # a copy: the caller's config (one preset object reused over many tasks) must not take these overrides
    base = copy.deepcopy(cfg) if cfg is not None else config_for(row.paradigm)
    recipe = getattr(gene, "individual", None)
    if cfg is None and recipe:  # config_for made base afresh: nothing shared to protect
        for key, value in recipe.items():  # each value checked by the section as it is set
            setattr(base.individual, key, copy.deepcopy(value))
    if base.paradigm != row.paradigm:
        raise ConfigError(f"this is a {row.artifact.noun}, trained with the settings of paradigm = {row.paradigm!r}, "
                          f"but the configuration given has paradigm = {base.paradigm!r}; use a "
                          f"{'vit-* ' if row.paradigm == 'vit' else 'CNN '}preset, or none")
    return apply_overrides(base, list(overrides), reader=f"inherit:{row.paradigm}")


def inherit(gene: Gene | str | os.PathLike[str], support_dir: str | os.PathLike[str],
            out: str | os.PathLike[str] | None = None, *, query_dir: str | os.PathLike[str] | None = None,
            cfg: Config | None = None, overrides: Sequence[str] = (), depth: int | None = None,
            width: int | None = None, heads: int | None = None, seed: int = 0,
            compare_scratch: bool = False, device: torch.device | str = "cpu",
            overwrite: bool = False, invert: bool | str | None = None, resize: str | None = None) -> dict[str, Any]:
    """``learngene inherit`` for any kind of learngene: a model built from ``gene`` (a directory or a loaded gene)
    trained on the support folder (one subfolder of images per class), saved in ``out`` for ``learngene predict``.

    Settings: ``cfg`` (of the gene's paradigm; default its defaults) with ``overrides``.  ``depth``, ``width``,
    ``heads``: the shape of a transformer descendant (transformer genes only; width and heads default to the
    gene's).  ``gene`` may also name a learngene shipped with the package (``learngene list genes``).  ``compare_scratch`` trains the same architecture from
    random initialization with the same budget.  ``invert`` / ``resize`` override how the image files are read
    (default: the gene's input contract, :mod:`learngene.data.contract`).  Returns ``{"out", "what", "classes", "images", "query_images",
    "query_accuracy", "params", "scratch", ...}`` (accuracies None without a query folder).
    """
    source = None
    if not isinstance(gene, Gene):
        where = resolve_gene(gene)
        source = str(where.resolve()) if where == Path(gene) else f"the shipped learngene {gene!s} ({where})"
        gene = load_gene(where)
    row = kind_of(gene)
    settings = settings_for(row, cfg, overrides, gene=gene)
    where = source or f"this {row.artifact.noun}"
    target = None if out is None else check_writable_dir(out, overwrite=overwrite, resumable=False,
                                                         kind="individual model")
    shape = {k: v for k, v in (("width", width), ("heads", heads)) if v is not None}
    return row.inherit(gene, support_dir, query_dir, target, cfg=settings, depth=depth, seed=seed, **shape,
                       compare_scratch=compare_scratch, device=device, source=where,
                       reading={"invert": invert, "resize": resize})


def _inherit_cnn(gene: Learngene, support_dir: Any, query_dir: Any, out: Path | None, *, cfg: Config,
                 depth: int | None, seed: int, compare_scratch: bool, device: Any, source: str,
                 reading: dict[str, Any] | None = None, **shape: Any) -> dict[str, Any]:
    """An individual model (fresh layers + the gene + a new head) trained few-shot with ``[individual]``."""
    if depth is not None or shape:
        flags = "/".join(f"--{k}" for k in (["depth"] if depth is not None else []) + sorted(shape))
        verb = "build" if "/" in flags else "builds"
        raise LearngeneError(f"{flags} {verb} transformer descendants, but {source} is a CNN learngene (its "
                             f"individual model's size is set by individual.before / individual.after); drop {flags}")
    r = inherit_individual(gene, support_dir, out, query_dir=query_dir, settings=cfg.individual, seed=seed,
                           compare_scratch=compare_scratch, curve_every=cfg.evaluate.curve_every,
                           **(reading or {}))
    scratch = r.get("scratch")
    return {"out": None if out is None else str(out), "what": "an individual model", "classes": r["classes"],
            "images": r["images"], "query_images": r.get("query_images"), "query_accuracy": r.get("accuracy"),
            "params": r["params"], "inherited_params": r["inherited_params"], "warnings": r.get("warnings", []),
            "reading": r.get("reading"), "calibration": r.get("calibration"),
            "scratch": None if scratch is None else {"query_accuracy": scratch["accuracy"],
                                                     "params": scratch["params"]}}


register_gene_kind(GENE, Learngene, "cnn", _inherit_cnn)
register_gene_kind(TRANSFORMER_GENE, TransformerGene, "vit", inherit_transformer)
register_gene_kind(FREQUENCY_GENE, FrequencyGene, "vit", inherit_transformer)

"""``inherit`` for a transformer gene: a descendant of a chosen depth trained on a user's own classes.

The support (and optional query) folder is read by :func:`learngene.individual.read_support_query`, as for a CNN
gene; the descendant trains with the individual recipe (:mod:`learngene.vit.fewshot`: imprinted cosine head, a
head stage with the inherited tensors frozen, then gentle fine-tuning on augmented images), never a whole ViT
fine-tuned from a random head on a handful of images, and is saved (kind INDIVIDUAL, with ``classes`` and
``preprocessing``) for ``learngene predict``.  With a query folder the result also gives the nearest-class-mean
accuracy of the same descendant's untrained features: the gene used as it is, the bar training must clear.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from learngene.artifacts import INDIVIDUAL
from learngene.config import Config, IndividualConfig
from learngene.data.contract import file_settings
from learngene.errors import LearngeneError
from learngene.individual import read_support_query
from learngene.models.io import save_network
from learngene.runtime import resolve_device
from learngene.safeio import jsonable
from learngene.vit.descendants import build_descendant, scratch_descendant
from learngene.vit.fewshot import RECIPE_KEYS, fewshot_settings, ncm_accuracy, train_descendant
from learngene.vit.gene import TransformerGene  # or any gene with its attributes (vit.frequency)
from learngene.vit.train import NetworkRecord

__all__ = ["inherit_descendant", "inherit_transformer"]


def inherit_descendant(gene: TransformerGene, support_dir: str | Path, query_dir: str | Path | None, depth: int,
                       out: Path | None, *, settings: IndividualConfig, seed: int = 0, compare_scratch: bool = False,
                       curve_every: int = 1, gene_dir: str | None = None, invert: bool | str | None = None,
                       resize: str | None = None, width: int | None = None, heads: int | None = None,
                       device: torch.device | str = "cpu") -> dict[str, Any]:
    """A depth-``depth`` descendant of ``gene`` (``width`` / ``heads``: default the gene's) trained on the
    support folder by the individual recipe (``settings``; and, with ``compare_scratch``, the same architecture
    from random initialization with the same recipe and seed); saved in ``out`` when given.

    Returns ``{"out", "classes", "depth", "kind", "support_images", "query_images", "params", "stored_params",
    "query_accuracy", "ncm_query_accuracy", "curve", "scratch"}`` (accuracies None without a query folder).
    """
    gene.check_depth(depth)
    spec = gene.input_spec
    notes: list[str] = []
    classes, x, y, qx, qy = read_support_query(support_dir, query_dir, spec, invert=invert, resize=resize,
                                               warnings=notes)
    reading = file_settings(spec, invert, resize)
    dev = torch.device(device)
    x, y = x.to(dev), y.to(dev)
    qx, qy = (qx.to(dev), qy.to(dev)) if qx is not None else (None, None)

    def train(d: Any) -> dict[str, Any]:
        d.model.to(dev)
        ncm = ncm_accuracy(d.model, x, y, qx, qy) if qx is not None else None
        res = train_descendant(d, x, y, settings, seed=seed, qx=qx, qy=qy, curve_every=curve_every)
        return {**res, "ncm": ncm}

    d = build_descendant(gene, depth, len(classes), width=width, heads=heads, seed=seed)
    res = train(d)
    acc = res.get("accuracy")
    scratch = None
    if compare_scratch:
        s = scratch_descendant(gene.vit_cfg, depth, len(classes), width=d.width, heads=d.heads, seed=seed)
        sres = train(s)
        scratch = {"query_accuracy": sres.get("accuracy"), "ncm_query_accuracy": sres["ncm"],
                   "curve": {"epochs": sres["curve_epochs"], "acc": sres["curve"]},
                   "train_seconds": sres["train_seconds"]}
    model = d.model.cpu().eval()
    params = sum(int(p.numel()) for p in model.parameters())
    recipe = {"lr": settings.lr, **{k: getattr(settings, k) for k in RECIPE_KEYS}}
    if out is not None:
        inherited = set(d.inherited)
        fields = {
            "classes": classes,
            "preprocessing": {**{k: spec[k] for k in ("image_size", "channels", "mean", "std")}, **reading},
            "gene": {"dir": gene_dir, "kind": gene.kind, "rule": gene.rule, "block_indices": gene.block_indices,
                     "stored_params": gene.stored_params},
            "depth": depth,
            "width": d.width,
            "heads": d.heads,
            "support": {"dir": str(Path(support_dir).resolve()), "images": len(y)},
            "params": params,
            "inherited_params": sum(int(t.numel()) for k, t in model.state_dict().items() if k in inherited),
            "training": {**recipe, "seed": seed},
            "query_accuracy": acc,
            "ncm_query_accuracy": res["ncm"],
            "scratch_query_accuracy": None if scratch is None else scratch["query_accuracy"],
        }
        save_network(NetworkRecord(model), out, INDIVIDUAL, jsonable(fields))
    return {"out": None if out is None else str(out), "classes": classes, "depth": depth, "width": d.width,
            "heads": d.heads, "kind": gene.kind,
            "support_images": len(y), "query_images": None if qy is None else len(qy), "params": params,
            "stored_params": gene.stored_params, "query_accuracy": acc, "ncm_query_accuracy": res["ncm"],
            "curve": {"epochs": res["curve_epochs"], "acc": res["curve"]}, "scratch": scratch, "warnings": notes,
            "reading": reading, "training": recipe}


def inherit_transformer(gene: TransformerGene, support_dir: Any, query_dir: Any, out: Path | None, *, cfg: Config,
                        depth: int | None, seed: int, compare_scratch: bool, device: Any,
                        source: str, reading: dict[str, Any] | None = None, width: int | None = None,
                        heads: int | None = None) -> dict[str, Any]:
    """:func:`learngene.kinds.inherit` for a transformer gene: the individual recipe (``[individual]`` at
    ``vit.fewshot_lr``) on the user's classes, at ``width`` / ``heads`` (default the gene's)."""
    if depth is None:
        raise LearngeneError(f"{source} is a transformer learngene: give the descendant's depth, e.g. --depth 6")
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    r = inherit_descendant(gene, support_dir, query_dir, depth, out, settings=fewshot_settings(cfg), seed=seed,
                           compare_scratch=compare_scratch, curve_every=cfg.evaluate.curve_every, gene_dir=source,
                           width=width, heads=heads, device=dev, **(reading or {}))
    return {**r, "what": f"a depth-{depth} {gene.kind} descendant (width {r['width']}, {r['heads']} heads)",
            "images": r["support_images"]}

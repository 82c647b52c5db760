"""``inherit`` for a transformer gene: a descendant of a chosen depth trained on a user's own classes.

The support (and optional query) folder is read by :func:`learngene.individual.read_support_query`, as for a CNN
gene; the descendant trains with the run's recipe (:class:`~learngene.vit.train.Recipe`) through the engine and
is saved (kind INDIVIDUAL, with ``classes`` and ``preprocessing``) for ``learngene predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from learngene.artifacts import INDIVIDUAL
from learngene.config import Config
from learngene.data.contract import file_settings
from learngene.engine import accuracy, eval_points, fit
from learngene.errors import ConfigError, LearngeneError
from learngene.individual import read_support_query
from learngene.models.io import save_network
from learngene.runtime import resolve_device
from learngene.safeio import jsonable
from learngene.vit.descendants import build_descendant, scratch_descendant
from learngene.vit.gene import TransformerGene  # or any gene with its attributes (vit.frequency)
from learngene.vit.train import NetworkRecord, Recipe

__all__ = ["inherit_descendant", "inherit_transformer"]

CURVE_EPOCHS = (0, 1, 3, 10, 30, 100)


def inherit_descendant(gene: TransformerGene, support_dir: str | Path, query_dir: str | Path | None, depth: int,
                       out: Path | None, *, recipe: Recipe, epochs: int, seed: int = 0,
                       compare_scratch: bool = False, curve_epochs: Sequence[int] = CURVE_EPOCHS,
                       gene_dir: str | None = None, invert: bool | str | None = None,
                       resize: str | None = None, width: int | None = None,
                       heads: int | None = None) -> dict[str, Any]:
    """A depth-``depth`` descendant of ``gene`` (``width`` / ``heads``: default the gene's) trained on the support folder (and, with ``compare_scratch``, the
    same architecture from random initialization with the same budget); saved in ``out`` when given.

    Returns ``{"out", "classes", "depth", "kind", "support_images", "query_images", "params", "stored_params",
    "query_accuracy", "curve", "scratch"}`` (accuracies None without a query folder).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be an integer >= 1, got {epochs!r}")
    gene.check_depth(depth)
    spec = gene.input_spec
    notes: list[str] = []
    classes, x, y, qx, qy = read_support_query(support_dir, query_dir, spec, normalized=False, invert=invert,
                                               resize=resize, warnings=notes)
    reading = file_settings(spec, invert, resize)
    evaluate = (lambda m: accuracy(m, qx, qy, spec=spec, batch_size=512)) if qx is not None else None
    points = eval_points(curve_epochs, epochs)

    def train(model: torch.nn.Module, what: str) -> dict[str, Any]:
        return fit(model, recipe.batches(x, y, spec, seed), epochs,
                   **recipe.options(seed=seed, evaluate=evaluate, eval_epochs=points, desc=what))

    d = build_descendant(gene, depth, len(classes), width=width, heads=heads, seed=seed)
    res = train(d.model, f"depth-{depth} width-{d.width} {gene.kind} descendant")
    acc = res["curve"][-1] if evaluate is not None else None
    scratch = None
    if compare_scratch:
        s = scratch_descendant(gene.vit_cfg, depth, len(classes), width=d.width, heads=d.heads, seed=seed)
        sres = train(s.model, f"depth-{depth} scratch")
        scratch = {"query_accuracy": sres["curve"][-1] if evaluate is not None else None,
                   "curve": {"epochs": sres["curve_epochs"], "acc": sres["curve"]},
                   "train_seconds": sres["train_seconds"]}
    model = d.model.cpu().eval()
    params = sum(int(p.numel()) for p in model.parameters())
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
            "training": {"epochs": epochs, "lr": recipe.child_lr, "weight_decay": recipe.weight_decay,
                         "batch_size": recipe.batch_size, "augment": recipe.augment, "seed": seed},
            "query_accuracy": acc,
            "scratch_query_accuracy": None if scratch is None else scratch["query_accuracy"],
        }
        save_network(NetworkRecord(model), out, INDIVIDUAL, jsonable(fields))
    return {"out": None if out is None else str(out), "classes": classes, "depth": depth, "width": d.width,
            "heads": d.heads, "kind": gene.kind,
            "support_images": len(y), "query_images": None if qy is None else len(qy), "params": params,
            "stored_params": gene.stored_params, "query_accuracy": acc,
            "curve": {"epochs": res["curve_epochs"], "acc": res["curve"]}, "scratch": scratch, "warnings": notes,
            "reading": reading}


def inherit_transformer(gene: TransformerGene, support_dir: Any, query_dir: Any, out: Path | None, *, cfg: Config,
                        depth: int | None, seed: int, compare_scratch: bool, device: Any,
                        source: str, reading: dict[str, Any] | None = None, width: int | None = None,
                        heads: int | None = None) -> dict[str, Any]:
    """:func:`learngene.kinds.inherit` for a transformer gene: the run's descendant training (``vit.descendant_epochs``
    with the run's recipe, accuracy at ``vit.eval_epochs``) on the user's classes."""
    if depth is None:
        raise LearngeneError(f"{source} is a transformer learngene: give the descendant's depth, e.g. --depth 6")
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    r = inherit_descendant(gene, support_dir, query_dir, depth, out, recipe=Recipe.from_config(cfg, dev),
                           epochs=cfg.vit.descendant_epochs, seed=seed, compare_scratch=compare_scratch,
                           curve_epochs=cfg.vit.eval_epochs, gene_dir=source, width=width, heads=heads,
                           **(reading or {}))
    return {**r, "what": f"a depth-{depth} {gene.kind} descendant (width {r['width']}, {r['heads']} heads)",
            "images": r["support_images"]}

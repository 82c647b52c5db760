"""The transformer-learngene path end to end (``paradigm = "vit"``): :func:`run_vit`.

source classes -> ancestry ViT (:mod:`~learngene.vit.ancestry`, recording each block's gradient share) -> the
learngene of every method that makes one (:mod:`~learngene.vit.methods`: Heur-LG blocks chosen by the criterion,
TLEG templates distilled into an auxiliary net, the frequency learngene's DCT coefficients) -> descendants of every
depth in ``vit.depths`` at every width in ``vit.widths`` (default: the ancestry's) by every method,
fine-tuned on classes neither the ancestry nor the auxiliary net ever saw (the novel classes; each class's images
split into train and test), over the seeds -> the few-shot episodes of ``[evaluate]`` and TLEG's linearity check
of the ancestry -> the report (:mod:`~learngene.vit.report`).

Layout of ``out/``::

    config.json                      the run's configuration
    cache/ancestry/                  trained ancestry (network.json + model.safetensors; gradient record inside)
    cache/aux/                       trained auxiliary net (ExpandedViT)
    cache/descendants/*.json         one finished (method, depth[, width], seed) training each
    genes/<method>/                  the learngenes (learngene.json + model.safetensors)
    report.json, report.md           results; plots/vit_accuracy_vs_depth.png, plots/vit_accuracy_vs_params.png

A rerun with the same configuration reuses every cache entry whose fingerprint (the settings it depends on)
still matches, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from learngene import __version__
from learngene.config import Config, parse_setting
from learngene.data import sample_episodes
from learngene.engine import Batches, accuracy, eval_points, fit
from learngene.errors import ConfigError, DataError, ModelError
from learngene.models.vit import vit_config
from learngene.prepare import input_spec, load_data, make_split
from learngene.registry import DESCENDANT_METHODS
from learngene.runtime import derive_seed, resolve_device
from learngene.safeio import artifact_kind, atomic_write_bytes, atomic_write_json, jsonable, output_lock
from learngene.stats import mean_ci95
from learngene.vit.ancestry import UserAncestry, records_probe, train_ancestry, vit_shape
from learngene.vit.frequency import load_transformer_gene
from learngene.vit.linearity import layer_linearity
from learngene.vit.methods import DescendantMethod, Lineage, list_descendant_methods
from learngene.vit.report import (
    ACCURACY_PLOT,
    PARAMS_PLOT,
    cell,
    plot_accuracy_vs_depth,
    plot_accuracy_vs_params,
    render_vit_report,
    summary_curve,
)
from learngene.vit.train import Recipe, Task, fingerprint

__all__ = ["fewshot_depths", "run_vit"]

log = logging.getLogger(__name__)


def fewshot_depths(cfg: Config, ancestry_depth: int) -> list[int]:
    return list(cfg.vit.fewshot_depths) if cfg.vit.fewshot_depths is not None else [ancestry_depth]


def run_vit(cfg: Config, out: str | Path, *, progress: bool = True,
            device: torch.device | str = "cpu") -> dict[str, Any]:
    """The whole transformer path (see the module docstring); returns the report written to ``out/report.json``."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"run_vit needs a learngene Config (load_config(...)), got {type(cfg).__name__}")
    cfg.validate()
    if cfg.paradigm != "vit":
        raise ConfigError(f"run_vit runs the transformer path but the config has paradigm = {cfg.paradigm!r}; set "
                          "paradigm = 'vit' (or use a vit-* preset)")
    out = Path(out)
    held = artifact_kind(out)
    if held not in (None, "run"):
        raise ConfigError(f"{out} holds a {held}, not a run; choose another output directory")
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    names = cfg.evaluate.methods or list_descendant_methods()
    for name in names:
        DESCENDANT_METHODS.check(name, "evaluate.methods")
    methods = [DESCENDANT_METHODS.get(m) for m in names]
    start = time.perf_counter()
    with output_lock(out):
        atomic_write_json(out / "config.json", cfg.to_dict())
        lineage = _ancestry(cfg, out, Recipe.from_config(cfg, dev, progress), methods)
        sections = _learngenes(lineage, methods)
        novel = list(lineage.split.novel)
        task = Task(lineage.data, novel, lineage.spec, cfg.stream.test_fraction,
                    derive_seed(cfg.seed, "novel-split"), dev)
        rows, skipped = _descendants(lineage, methods, task, novel)
        report = _report(lineage, sections, methods, task, rows, skipped, _fewshot(lineage, methods),
                         _linearity(lineage.ancestry), dev, time.perf_counter() - start)
        atomic_write_json(out / "report.json", report)
        atomic_write_bytes(out / "report.md", render_vit_report(report).encode())
        plot_accuracy_vs_depth([r for r in rows if r["width"] == lineage.width], out / "plots" / ACCURACY_PLOT)
        plot_accuracy_vs_params(rows, out / "plots" / PARAMS_PLOT)
    log.info("done in %.1f s: %s", report["seconds"], out / "report.md")
    return report


# ---------------------------------------------------------------------- stages
def _ancestry(cfg: Config, out: Path, recipe: Recipe, methods: list[DescendantMethod]) -> Lineage:
    """Data, split and the trained (or cached) ancestry, with everything the methods need around it."""
    v = cfg.vit
    # a user's ancestry: file, timm name, tensors and patch size checked before the (maybe long) data loading
    user = UserAncestry(cfg, out) if v.ancestry_weights else None
    if user is not None:
        user.build(cfg.data.image_size, cfg.data.channels or user.stem_channels(), 2, meta=True)
    data = load_data(cfg)
    split = make_split(cfg, data)
    source, novel = list(split.source), list(split.novel)
    if len(source) < 2 or len(novel) < 2:
        raise DataError(f"the split has {len(source)} source and {len(novel)} novel classes; the transformer path "
                        "needs at least 2 of each (raise data.max_classes or change data.split_fractions)")
    spec = input_spec(data, source)
    user_model = None
    if user is None:
        shape = vit_shape(cfg, data.image_size, data.channels, len(source))
    else:
        user_model = user.build(data.image_size, data.channels, len(source),
                                seed=derive_seed(cfg.seed, "ancestry-init"))
        user.tensors = {}  # loaded: no second copy kept through the run
        ignored = [k for k in ("ancestry_depth", "patch_size", "embed_dim", "num_heads") if getattr(v, k) is not None]
        log.info("ancestry: %s%s", user.describe(),
                 f"; its shape replaces model.name and vit.{', vit.'.join(ignored)}" if ignored else "")
        shape = vit_config(user_model)
    for m in methods:
        if m.check is not None:
            m.check(cfg, shape["depth"])
    probe_record = records_probe(cfg, [m.name for m in methods])
    data_fp = {"data": cfg.to_dict()["data"], "seed": cfg.seed, "source": source}
    anc_fields = {**data_fp, "shape": shape, "epochs": v.ancestry_epochs, "lr": recipe.lr,
                  "wd": recipe.weight_decay, "bs": recipe.batch_size, "schedule": recipe.schedule, "amp": recipe.amp,
                  "test_fraction": cfg.stream.test_fraction}
    if user is not None:  # a changed weights file (its sha256) retrains; preset runs keep their old fingerprints
        anc_fields["user"] = {"sha256": user.sha256, "timm": user.timm, "kind": user.kind,
                              "probe_epochs": v.ancestry_probe_epochs, "probe_record": probe_record}
    anc_fp = fingerprint(anc_fields)
    src_task = Task(data, source, spec, cfg.stream.test_fraction, derive_seed(cfg.seed, "source-split"), recipe.device)
    ancestry, info = train_ancestry(cfg, shape, src_task, recipe, out / "cache" / "ancestry", anc_fp, user=user_model,
                                    probe_record=probe_record)
    del user_model
    info.update(preset=cfg.model.name if user is None else None, shape=shape, fingerprint=anc_fp,
                depth=len(ancestry.blocks))
    if user is not None:
        info["user"] = {"weights": str(user.path), "kind": user.kind, "sha256": user.sha256,
                        "timm": user.timm or None, "adapted": user.adapted,
                        "probe_epochs": v.ancestry_probe_epochs, "fine_tune_epochs": v.ancestry_epochs}
    log.info("ancestry: val accuracy %.3f", info["val_acc"])
    label = cfg.model.name if user is None else user.describe()
    return Lineage(cfg=cfg, out=out, recipe=recipe, ancestry=ancestry, info=info, fingerprint=anc_fp, shape=shape,
                   data=data, split=split, spec=spec, source=src_task,
                   provenance={"run": str(out.resolve()), "ancestry": label, "seed": cfg.seed})


def _learngenes(lineage: Lineage, methods: list[DescendantMethod]) -> dict[str, dict[str, Any]]:
    """Every method's learngene, made once, saved under ``genes/<name>/`` and read back as descendants see it."""
    sections: dict[str, dict[str, Any]] = {}
    order = DESCENDANT_METHODS.in_order()
    for m in sorted((m for m in methods if m.learngene is not None), key=lambda m: order.index(m.name)):
        gene, section = m.learngene(lineage)
        where = lineage.out / "genes" / m.name
        gene.save(where)
        lineage.genes[m.name] = load_transformer_gene(where)
        sections[m.name] = {**section, "dir": str(where), "stored_params": gene.stored_params}
    return sections


def _descendants(lineage: Lineage, methods: list[DescendantMethod], task: Task,
                 novel: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every (width, depth, method) on the novel classes over the seeds, each finished training cached."""
    v, recipe = lineage.cfg.vit, lineage.recipe
    # the saved genes' sha256: descendants are reused only for the same genes
    gene_shas = {name: gene.manifest()["sha256"] for name, gene in lineage.genes.items()}
    desc_fp = {"ancestry": lineage.fingerprint, "genes": gene_shas,
               "lr": recipe.child_lr, "wd": recipe.weight_decay, "bs": recipe.batch_size, "schedule": recipe.schedule,
               "amp": recipe.amp, "augment": recipe.augment, "eval": v.eval_epochs, "novel": novel,
               "test_fraction": lineage.cfg.stream.test_fraction}
    rows, skipped = [], []
    cache = lineage.out / "cache" / "descendants"
    names = {m.name for m in methods}
    for depth in v.depths:  # depth outermost: an interrupted grid has every width of its first depths
        for width in widths_of(lineage.cfg, lineage.width):
            for m in methods:
                why = _why_not(lineage, m, depth, width)
                if why is not None:
                    skipped.append({"method": m.name, "depth": depth, "width": width, "reason": why})
                    continue
                twin = m.same_as(lineage, depth, width) if m.same_as is not None else None
                done = next((r for r in rows if r["method"] == twin and r["depth"] == depth and r["width"] == width),
                            None) if twin in names else None
                if done is not None:  # the very same model: its row, not a second training
                    rows.append({**done, "method": m.name, "same_as": twin})
                    continue
                epochs = v.scratch_epochs if m.from_scratch else v.descendant_epochs
                per_seed = [_descendant(lineage, m, task, depth, width, s, epochs, desc_fp, cache)
                            for s in lineage.cfg.evaluate.seeds]
                acc, ci = mean_ci95([r["acc"] for r in per_seed])
                row = {"method": m.name, "depth": depth, "width": width, "heads": per_seed[0].get("heads"),
                       "params": per_seed[0]["params"],
                       "stored_params": per_seed[0]["stored_params"], "acc": acc, "acc_ci95": ci,
                       "curve": summary_curve(per_seed), "epochs": epochs,
                       "train_seconds": sum(r["train_seconds"] for r in per_seed),
                       "inherited_tensors": per_seed[0]["inherited"],
                       "per_seed": [{k: r[k] for k in ("seed", "acc", "curve", "curve_epochs")} for r in per_seed]}
                rows.append(row)
                log.info("depth %2d width %3d %-16s acc %.3f ± %s (%s params, %s stored)", depth, width, m.name, acc,
                         cell(ci), f"{row['params']:,}", f"{row['stored_params']:,}")
    return rows, skipped


def widths_of(cfg: Config, ancestry_width: int) -> list[int]:
    """The grid's widths: ``vit.widths``, or the ancestry's width alone."""
    return list(cfg.vit.widths) if cfg.vit.widths else [ancestry_width]


def _why_not(lineage: Lineage, m: DescendantMethod, depth: int, width: int) -> str | None:
    if width != lineage.width and not m.any_width:
        return f"builds the ancestry's width ({lineage.width}) only: {m.width_rule}"
    return m.skip(lineage, depth) if m.skip is not None else None


def _descendant(lineage: Lineage, m: DescendantMethod, task: Task, depth: int, width: int, s: int, epochs: int,
                desc_fp: dict[str, Any], cache: Path) -> dict[str, Any]:
    """One (method, depth, width, seed) training, or its cached record when the fingerprint matches."""
    cfg, recipe = lineage.cfg, lineage.recipe
    other = width != lineage.width  # the ancestry's width keeps the names and fingerprints of depth-only runs
    shape = {"width": width} if other else {}
    fp = fingerprint({**desc_fp, "method": m.name, "depth": depth, "seed": s, "epochs": epochs, **shape})
    path = cache / f"{m.name}-d{depth}{f'-w{width}' if other else ''}-s{s}.json"
    hit = None
    if path.is_file():
        try:
            hit = json.loads(path.read_text())
        except (OSError, ValueError):
            hit = None
    if isinstance(hit, dict) and hit.get("fingerprint") == fp:
        return hit
    seed = derive_seed(cfg.seed, "descendant", m.name, depth, s, *([width] if other else []))
    d = m.build(lineage, depth, task.num_classes, seed, **shape)
    res = fit(d.model, recipe.task_batches(task, seed), epochs,
              **recipe.options(seed=seed, lr=recipe.child_lr, evaluate=task.accuracy,
                               eval_epochs=eval_points(cfg.vit.eval_epochs, epochs),
                               desc=f"{m.name} depth {depth} seed {s}{f' width {width}' if other else ''}"))
    one = {"fingerprint": fp, "seed": s, "acc": res["curve"][-1], "curve": res["curve"],
           "curve_epochs": res["curve_epochs"], "train_seconds": res["train_seconds"],
           "params": sum(int(p.numel()) for p in d.model.parameters()), "heads": d.heads,
           "stored_params": d.stored_params, "inherited": len(d.inherited)}
    atomic_write_json(path, jsonable(one))
    return one


def _fewshot(lineage: Lineage, methods: list[DescendantMethod]) -> dict[str, Any]:
    """Every method on the same seeded N-way K-shot episodes of novel classes: full-batch fine-tuning."""
    cfg, recipe, data = lineage.cfg, lineage.recipe, lineage.data
    ev, epochs = cfg.evaluate, cfg.individual.epochs
    out: dict[str, Any] = {}
    for setting in ev.settings:
        ways, shots = parse_setting(setting)
        episodes = sample_episodes(data, list(lineage.split.novel), ways, shots, ev.queries, ev.episodes,
                                   seed=derive_seed(cfg.seed, "episodes", setting))
        res: dict[str, Any] = {}
        for depth in fewshot_depths(cfg, lineage.depth):
            for m in methods:
                if m.skip is not None and m.skip(lineage, depth) is not None:
                    continue
                accs = []
                bar = tqdm(episodes, desc=f"few-shot {setting} {m.name}@{depth}", unit="episode", leave=False,
                           disable=not recipe.progress, dynamic_ncols=True)
                for e, ep in enumerate(bar):
                    sx, sy, qx, qy = ep.tensors(data, lineage.spec)
                    seed = derive_seed(cfg.seed, "fewshot", setting, m.name, depth, e)
                    d = m.build(lineage, depth, ways, seed)
                    fit(d.model, Batches(sx, sy, len(sx), seed=seed), epochs,
                        **{**recipe.options(seed=seed, lr=recipe.child_lr, schedule=False), "progress": False})
                    accs.append(accuracy(d.model, qx, qy))
                mean, ci = mean_ci95(accs)
                res[f"{m.name}@{depth}"] = {"method": m.name, "depth": depth, "acc": mean, "acc_ci95": ci,
                                            "episodes": len(accs)}
        out[setting] = {"ways": ways, "shots": shots, "queries": ev.queries, "steps": epochs, "rows": res}
        log.info("few-shot %s: %s", setting, ", ".join(f"{k} {r['acc']:.3f}" for k, r in res.items()))
    return out


def _linearity(ancestry: torch.nn.Module) -> dict[str, Any]:
    try:
        return layer_linearity(ancestry, n_shuffles=5, seed=0)
    except ModelError as err:
        return {"skipped": str(err), "rows": [], "summary": {}}


def _report(lineage: Lineage, sections: dict[str, dict[str, Any]], methods: list[DescendantMethod], task: Task,
            rows: list[dict[str, Any]], skipped: list[dict[str, Any]], fewshot: dict[str, Any],
            linearity: dict[str, Any], device: torch.device, seconds: float) -> dict[str, Any]:
    cfg, v, recipe, split = lineage.cfg, lineage.cfg.vit, lineage.recipe, lineage.split
    source, novel = list(split.source), list(split.novel)
    anc = {k: val for k, val in lineage.info.items() if k not in ("loss", "gradient_share")}
    anc["gradient_share"] = lineage.info.get("gradient_share")
    return jsonable({
        "version": __version__,
        "paradigm": "vit",
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "device": str(device),
        "data": {"name": lineage.data.name, "image_size": lineage.data.image_size, "channels": lineage.data.channels,
                 "source_classes": len(source), "open_world_classes": len(split.open_world),
                 "novel_classes": len(novel), "source_images": lineage.source.sizes()},
        "split": {"source": source, "open_world": list(split.open_world), "novel": novel},
        "input_spec": lineage.spec,
        "ancestry": anc,
        **{name.replace("-", "_"): section for name, section in sections.items()},
        "descendants": {
            "methods": [m.name for m in methods],
            "widths": widths_of(cfg, lineage.width), "depths": list(v.depths), "ancestry_width": lineage.width,
            "width_rules": {m.name: m.width_rule for m in methods},
            "protocol": {**task.sizes(), "descendant_epochs": v.descendant_epochs,
                         "scratch_epochs": v.scratch_epochs, "eval_epochs": list(v.eval_epochs),
                         "seeds": list(cfg.evaluate.seeds), "lr": recipe.child_lr, "batch_size": recipe.batch_size,
                         "schedule": recipe.schedule, "augment": recipe.augment},
            "rows": rows,
            "skipped": skipped,
        },
        "fewshot": fewshot,
        "linearity": linearity,
        "seconds": seconds,
    })

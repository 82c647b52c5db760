"""The transformer-learngene path end to end (``paradigm = "vit"``): :func:`run_vit`.

source classes -> ancestry ViT (:mod:`~learngene.vit.ancestry`, recording each block's gradient share) -> the
learngene of every method that makes one (:mod:`~learngene.vit.methods`: Heur-LG blocks chosen by the criterion,
TLEG templates distilled into an auxiliary net, the frequency learngene's DCT coefficients) -> descendants of every
depth in ``vit.depths`` at every width in ``vit.widths`` (default: the ancestry's) by every method,
fine-tuned on classes neither the ancestry nor the auxiliary net ever saw (the novel classes; each class's images
split into train and test), over the seeds -> the few-shot episodes of ``[evaluate]`` and TLEG's linearity check
of the ancestry -> the report (:mod:`~learngene.vit.report`).

**Seeds.** Each learngene seed (``vit.learngene_seeds``, default the top-level ``seed``) is one lineage: its own
ancestry, auxiliary net, genes and descendants; the descendant seeds ``evaluate.seeds`` are nested in it and the
class split stays on the top-level ``seed``.  Within a lineage the methods share every draw that is not theirs to
make: a (depth, width, descendant seed) gets the same fresh head, data order and augmentation whatever the
method, and every method sees the same few-shot episodes.  Intervals are over learngenes (:mod:`~learngene.vit.compare`).
Every method also trains a run scheduled for each ``vit.budget_epochs`` (equal-budget comparisons).

Layout of ``out/``::

    config.json                      the run's configuration
    cache/ancestry/                  trained ancestry (network.json + model.safetensors; gradient record inside)
    cache/aux/                       trained auxiliary net (ExpandedViT)
    cache/descendants/*.json         one finished (method, depth[, width], seed[, budget]) training each
    genes/<method>/                  the learngenes (learngene.json + model.safetensors)
    lineages/seed-<s>/               the same cache/ and genes/ of every further learngene seed
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
from learngene.engine import eval_points, fit
from learngene.errors import ConfigError, DataError, ModelError
from learngene.models.vit import vit_config
from learngene.prepare import input_spec, load_data, make_split
from learngene.registry import DESCENDANT_METHODS
from learngene.runtime import derive_seed, resolve_device
from learngene.safeio import artifact_kind, atomic_write_bytes, atomic_write_json, jsonable, output_lock
from learngene.stats import format_ci
from learngene.vit.ancestry import UserAncestry, records_probe, train_ancestry, vit_shape
from learngene.vit.compare import aggregate, paired_differences
from learngene.vit.descendants import params_without_head
from learngene.vit.fewshot import fewshot_record, fewshot_settings, ncm_accuracy, train_episode
from learngene.vit.frequency import load_transformer_gene
from learngene.vit.linearity import layer_linearity
from learngene.vit.methods import DescendantMethod, Lineage, list_descendant_methods
from learngene.vit.report import (
    ACCURACY_PLOT,
    PARAMS_PLOT,
    plot_accuracy_vs_depth,
    plot_accuracy_vs_params,
    render_vit_report,
    summary_curve,
)
from learngene.vit.train import Recipe, Task, fingerprint

__all__ = ["fewshot_depths", "learngene_seeds", "lineage_dir", "run_vit"]

log = logging.getLogger(__name__)


def fewshot_depths(cfg: Config, ancestry_depth: int) -> list[int]:
    return list(cfg.vit.fewshot_depths) if cfg.vit.fewshot_depths is not None else [ancestry_depth]


def learngene_seeds(cfg: Config) -> list[int]:
    """The run's learngene seeds (its outermost random stage): ``vit.learngene_seeds``, else the top-level seed."""
    return list(cfg.vit.learngene_seeds) if cfg.vit.learngene_seeds is not None else [cfg.seed]


def lineage_dir(cfg: Config, out: Path, seed: int) -> Path:
    """Where a learngene seed's cache and genes live: the first at the run's root (``genes/<method>/``, what a
    user picks up), every further one under ``lineages/seed-<s>/``."""
    return out if seed == learngene_seeds(cfg)[0] else out / "lineages" / f"seed-{seed}"


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
        world = _World(cfg, out, Recipe.from_config(cfg, dev, progress), methods)
        lineages, sections = [], []
        for seed in learngene_seeds(cfg):
            lineage = _ancestry(world, seed)
            sections.append(_learngenes(lineage, methods))
            lineages.append(lineage)
        world.release()
        novel = list(world.split.novel)
        task = Task(world.data, novel, world.spec, cfg.stream.test_fraction, derive_seed(cfg.seed, "novel-split"), dev)
        rows, skipped = _descendants(lineages, methods, task, novel)
        report = _report(lineages, sections, methods, task, rows, skipped, _fewshot(lineages, methods),
                         _linearity(lineages[0].ancestry), dev, time.perf_counter() - start)
        atomic_write_json(out / "report.json", report)
        atomic_write_bytes(out / "report.md", render_vit_report(report).encode())
        main = [r for r in rows if not r["budget"]]
        plot_accuracy_vs_depth([r for r in main if r["width"] == lineages[0].width], out / "plots" / ACCURACY_PLOT)
        plot_accuracy_vs_params(main, out / "plots" / PARAMS_PLOT)
    log.info("done in %.1f s: %s", report["seconds"], out / "report.md")
    return report


# ---------------------------------------------------------------------- stages
class _World:
    """What every lineage of a run shares: data, class split, input spec, the ancestry's shape, the source task
    (its train / validation images) and a user's ancestry file, read and checked once before any training."""

    def __init__(self, cfg: Config, out: Path, recipe: Recipe, methods: list[DescendantMethod]) -> None:
        v = cfg.vit
        self.cfg, self.out, self.recipe, self.methods = cfg, out, recipe, methods
        # a user's ancestry: file, timm name, tensors and patch size checked before the (maybe long) data loading
        self.user = UserAncestry(cfg, out) if v.ancestry_weights else None
        if self.user is not None:
            self.user.build(cfg.data.image_size, cfg.data.channels or self.user.stem_channels(), 2, meta=True)
        self.data = data = load_data(cfg)
        self.split = split = make_split(cfg, data)
        self.source = source = list(split.source)
        if len(source) < 2 or len(split.novel) < 2:
            raise DataError(f"the split has {len(source)} source and {len(split.novel)} novel classes; the transformer "
                            "path needs at least 2 of each (raise data.max_classes or change data.split_fractions)")
        self.spec = input_spec(data, source)
        if self.user is None:
            self.shape = vit_shape(cfg, data.image_size, data.channels, len(source))
        else:
            probe = self.user.build(data.image_size, data.channels, len(source), meta=True)
            self.shape = vit_config(probe)
        for m in methods:
            if m.check is not None:
                m.check(cfg, self.shape["depth"])
        self.probe_record = records_probe(cfg, [m.name for m in methods])
        self.task = Task(data, source, self.spec, cfg.stream.test_fraction, derive_seed(cfg.seed, "source-split"),
                         recipe.device)

    def release(self) -> None:
        """Every lineage's ancestry is built: no second copy of a user's tensors kept through the run."""
        if self.user is not None:
            self.user.tensors = {}


def _ancestry(world: _World, seed: int) -> Lineage:
    """The trained (or cached) ancestry of learngene seed ``seed``, with everything the methods need around it."""
    cfg, recipe, user, v = world.cfg, world.recipe, world.user, world.cfg.vit
    out = lineage_dir(cfg, world.out, seed)
    user_model = None
    if user is not None:
        user_model = user.build(world.data.image_size, world.data.channels, len(world.source),
                                seed=derive_seed(seed, "ancestry-init"))
        ignored = [k for k in ("ancestry_depth", "patch_size", "embed_dim", "num_heads") if getattr(v, k) is not None]
        log.info("ancestry: %s%s", user.describe(),
                 f"; its shape replaces model.name and vit.{', vit.'.join(ignored)}" if ignored else "")
    data_fp = {"data": cfg.to_dict()["data"], "seed": cfg.seed, "source": world.source}
    anc_fields = {**data_fp, "learngene_seed": seed, "shape": world.shape, "epochs": v.ancestry_epochs,
                  "lr": recipe.lr, "wd": recipe.weight_decay, "bs": recipe.batch_size, "schedule": recipe.schedule,
                  "amp": recipe.amp, "test_fraction": cfg.stream.test_fraction}
    if user is not None:  # a changed weights file (its sha256) retrains
        anc_fields["user"] = {"sha256": user.sha256, "timm": user.timm, "kind": user.kind,
                              "probe_epochs": v.ancestry_probe_epochs, "probe_record": world.probe_record}
    anc_fp = fingerprint(anc_fields)
    ancestry, info = train_ancestry(cfg, world.shape, world.task, recipe, out / "cache" / "ancestry", anc_fp,
                                    user=user_model, probe_record=world.probe_record, seed=seed)
    del user_model
    info.update(preset=cfg.model.name if user is None else None, shape=world.shape, fingerprint=anc_fp,
                depth=len(ancestry.blocks), params_no_head=params_without_head(ancestry), learngene_seed=seed)
    if user is not None:
        info["user"] = {"weights": str(user.path), "kind": user.kind, "sha256": user.sha256,
                        "timm": user.timm or None, "adapted": user.adapted,
                        "probe_epochs": v.ancestry_probe_epochs, "fine_tune_epochs": v.ancestry_epochs}
    log.info("ancestry (learngene seed %d): val accuracy %.3f", seed, info["val_acc"])
    label = cfg.model.name if user is None else user.describe()
    return Lineage(cfg=cfg, out=out, recipe=recipe, ancestry=ancestry, info=info, fingerprint=anc_fp,
                   shape=world.shape, data=world.data, split=world.split, spec=world.spec, source=world.task,
                   provenance={"run": str(world.out.resolve()), "ancestry": label, "seed": cfg.seed,
                               "learngene_seed": seed},
                   seed=seed)


def _learngenes(lineage: Lineage, methods: list[DescendantMethod]) -> dict[str, dict[str, Any]]:
    """Every method's learngene, made once, saved under ``genes/<name>/`` and read back as descendants see it."""
    sections: dict[str, dict[str, Any]] = {}
    order = DESCENDANT_METHODS.in_order()
    for m in sorted((m for m in methods if m.learngene is not None), key=lambda m: order.index(m.name)):
        gene, section = m.learngene(lineage)
        where = lineage.out / "genes" / m.name
        gene.save(where)
        lineage.genes[m.name] = load_transformer_gene(where)
        anc = lineage.info["params_no_head"]
        sections[m.name] = {**section, "dir": str(where), "stored_params": gene.stored_params,
                            "stored_fraction_of_ancestry": gene.stored_params / anc}
    return sections


def _budgets(cfg: Config, m: DescendantMethod) -> list[tuple[int, bool]]:
    """(epochs, is a budget run) of every training of a method: its own run first, then the equal-budget ones."""
    main = cfg.vit.scratch_epochs if m.from_scratch else cfg.vit.descendant_epochs
    return [(main, False), *((e, True) for e in cfg.vit.budget_epochs if e != main)]


def _descendants(lineages: list[Lineage], methods: list[DescendantMethod], task: Task,
                 novel: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every (depth, width, method, budget) on the novel classes over the learngene and descendant seeds, each
    finished training cached."""
    first = lineages[0]
    v, seeds = first.cfg.vit, first.cfg.evaluate.seeds
    rows, skipped = [], []
    names = {m.name for m in methods}
    for depth in v.depths:  # depth outermost: an interrupted grid has every width of its first depths
        for width in widths_of(first.cfg, first.width):
            for m in methods:
                why = _why_not(first, m, depth, width)
                if why is not None:
                    skipped.append({"method": m.name, "depth": depth, "width": width, "reason": why})
                    continue
                twin = m.same_as(first, depth, width) if m.same_as is not None else None
                for epochs, budget in _budgets(first.cfg, m):
                    done = next((r for r in rows if r["method"] == twin and r["depth"] == depth
                                 and r["width"] == width and r["epochs"] == epochs and r["budget"] == budget),
                                None) if twin in names else None
                    if done is not None:  # the very same model: its row, not a second training
                        rows.append({**done, "method": m.name, "same_as": twin})
                        continue
                    groups = [[_descendant(lin, m, task, depth, width, s, epochs, budget, novel) for s in seeds]
                              for lin in lineages]
                    flat = [r for g in groups for r in g]
                    agg = aggregate([[r["acc"] for r in g] for g in groups])
                    row = {"method": m.name, "depth": depth, "width": width, "heads": flat[0].get("heads"),
                           "epochs": epochs, "budget": budget, "from_scratch": m.from_scratch,
                           "params": flat[0]["params"], "stored_params": flat[0]["stored_params"],
                           "acc": agg["mean"], "acc_ci95": agg["ci95"], "ci_n": agg["n"],
                           "ci_level": agg["ci_level"], "per_learngene": agg["means"],
                           "curve": summary_curve([_mean_record(g) for g in groups] if len(groups) > 1 else flat),
                           "train_seconds": sum(r["train_seconds"] for r in flat),
                           "inherited_tensors": flat[0]["inherited"],
                           "per_seed": [{"learngene_seed": lin.seed, **{k: r[k] for k in ("seed", "acc", "curve",
                                                                                           "curve_epochs")}}
                                        for lin, g in zip(lineages, groups) for r in g]}
                    rows.append(row)
                    log.info("depth %2d width %3d %-16s %3d ep: acc %.3f %s (%s params, %s stored)", depth, width,
                             m.name, epochs, row["acc"], format_ci(row["acc"], row["acc_ci95"], row["ci_n"]),
                             f"{row['params']:,}", f"{row['stored_params']:,}")
    return rows, skipped


def widths_of(cfg: Config, ancestry_width: int) -> list[int]:
    """The grid's widths: ``vit.widths``, or the ancestry's width alone."""
    return list(cfg.vit.widths) if cfg.vit.widths else [ancestry_width]


def _why_not(lineage: Lineage, m: DescendantMethod, depth: int, width: int) -> str | None:
    if width != lineage.width and not m.any_width:
        return f"builds the ancestry's width ({lineage.width}) only: {m.width_rule}"
    return m.skip(lineage, depth) if m.skip is not None else None


def _mean_record(group: list[dict[str, Any]]) -> dict[str, Any]:
    """One learngene's descendants as one record: its mean accuracy curve."""
    curves = [r["curve"] for r in group]
    return {"curve_epochs": group[0]["curve_epochs"], "curve": [sum(c) / len(c) for c in zip(*curves)]}


def _descendant(lineage: Lineage, m: DescendantMethod, task: Task, depth: int, width: int, s: int, epochs: int,
                budget: bool, novel: list[str]) -> dict[str, Any]:
    """One (method, depth, width, seed, budget) training, or its cached record when the fingerprint matches."""
    cfg, recipe, v = lineage.cfg, lineage.recipe, lineage.cfg.vit
    other = width != lineage.width  # the ancestry's width keeps the names and fingerprints of depth-only runs
    shape = {"width": width} if other else {}
    # the saved genes' sha256: descendants are reused only for the same genes
    gene_shas = {name: gene.manifest()["sha256"] for name, gene in lineage.genes.items()}
    fp = fingerprint({"ancestry": lineage.fingerprint, "learngene_seed": lineage.seed, "genes": gene_shas,
                      "lr": recipe.child_lr, "wd": recipe.weight_decay, "bs": recipe.batch_size,
                      "schedule": recipe.schedule, "amp": recipe.amp, "augment": recipe.augment,
                      "eval": v.eval_epochs, "novel": novel, "test_fraction": cfg.stream.test_fraction,
                      "method": m.name, "depth": depth, "seed": s, "epochs": epochs, **shape})
    path = (lineage.out / "cache" / "descendants"
            / f"{m.name}-d{depth}{f'-w{width}' if other else ''}-s{s}{f'-e{epochs}' if budget else ''}.json")
    hit = None
    if path.is_file():
        try:
            hit = json.loads(path.read_text())
        except (OSError, ValueError):
            hit = None
    if isinstance(hit, dict) and hit.get("fingerprint") == fp:
        return hit
    # the method is not part of the seed: every method's descendant of a shape gets the same head, data order and
    # augmentation
    seed = derive_seed(lineage.seed, "descendant", depth, s, *([width] if other else []))
    d = m.build(lineage, depth, task.num_classes, seed, **shape)
    res = fit(d.model, recipe.task_batches(task, seed), epochs,
              **recipe.options(seed=seed, lr=recipe.child_lr, evaluate=task.accuracy,
                               eval_epochs=eval_points(v.eval_epochs, epochs),
                               desc=f"{m.name} depth {depth} seed {s}{f' width {width}' if other else ''}"))
    one = {"fingerprint": fp, "seed": s, "acc": res["curve"][-1], "curve": res["curve"],
           "curve_epochs": res["curve_epochs"], "train_seconds": res["train_seconds"],
           "params": sum(int(p.numel()) for p in d.model.parameters()), "heads": d.heads,
           "stored_params": d.stored_params, "inherited": len(d.inherited)}
    atomic_write_json(path, jsonable(one))
    return one


def _fewshot(lineages: list[Lineage], methods: list[DescendantMethod]) -> dict[str, Any]:
    """Every method of every lineage on the same seeded N-way K-shot episodes of novel classes (the few-shot
    recipe of :mod:`learngene.vit.fewshot`); nearest-class-mean on each descendant's untrained features beside it."""
    first = lineages[0]
    cfg, recipe, data = first.cfg, first.recipe, first.data
    ev = cfg.evaluate
    out: dict[str, Any] = {}
    for setting in ev.settings:
        ways, shots = parse_setting(setting)
        episodes = sample_episodes(data, list(first.split.novel), ways, shots, ev.queries, ev.episodes,
                                   seed=derive_seed(cfg.seed, "episodes", setting))
        tensors = [ep.tensors(data, first.spec) for ep in episodes]
        res: dict[str, Any] = {}
        for depth in fewshot_depths(cfg, first.depth):
            for m in methods:
                if m.skip is not None and m.skip(first, depth) is not None:
                    continue
                twin = m.same_as(first, depth, first.width) if m.same_as is not None else None
                if f"{twin}@{depth}" in res:  # the very same model on the same episodes: its row, not a rerun
                    res[f"{m.name}@{depth}"] = {**res[f"{twin}@{depth}"], "method": m.name, "same_as": twin}
                    continue
                groups, ncm_groups = [], []
                for lin in lineages:
                    accs, ncms = [], []
                    bar = tqdm(tensors, desc=f"few-shot {setting} {m.name}@{depth} (learngene seed {lin.seed})",
                               unit="episode", leave=False, disable=not recipe.progress, dynamic_ncols=True)
                    for e, (sx, sy, qx, qy) in enumerate(bar):
                        # the method is not part of the seed: every method gets the same head and draws
                        seed = derive_seed(lin.seed, "fewshot", setting, depth, e)
                        d = m.build(lin, depth, ways, seed)
                        ncms.append(ncm_accuracy(d.model, sx, sy, qx, qy))
                        accs.append(train_episode(d, sx, sy, qx, qy, fewshot_settings(cfg), seed=seed))
                    groups.append(accs)
                    ncm_groups.append(ncms)
                agg, ncm = aggregate(groups), aggregate(ncm_groups)
                res[f"{m.name}@{depth}"] = {"method": m.name, "depth": depth, "acc": agg["mean"],
                                            "acc_ci95": agg["ci95"], "ci_n": agg["n"], "ci_level": agg["ci_level"],
                                            "ncm_acc": ncm["mean"], "ncm_ci95": ncm["ci95"],
                                            "episodes": len(tensors), "learngenes": len(lineages),
                                            "per_learngene": groups, "ncm_per_learngene": ncm_groups}
        out[setting] = {"ways": ways, "shots": shots, "queries": ev.queries, "rows": res,
                        "recipe": fewshot_record(cfg), "paired": _paired_fewshot(res, [m.name for m in methods])}
        log.info("few-shot %s: %s", setting, ", ".join(f"{k} {r['acc']:.3f}" for k, r in res.items()))
    return out


def _paired_fewshot(res: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    """``a - b`` over the same episodes, per learngene (methods later in ``order`` minus earlier ones)."""
    out = []
    rows = list(res.values())
    rank = {m: i for i, m in enumerate(order)}
    for a in rows:
        for b in rows:
            if a["depth"] != b["depth"] or rank[a["method"]] <= rank[b["method"]] or a.get("same_as") == b["method"]:
                continue
            agg = aggregate([[x - y for x, y in zip(ga, gb)]
                             for ga, gb in zip(a["per_learngene"], b["per_learngene"])])
            out.append({"a": a["method"], "b": b["method"], "depth": a["depth"], "mean": agg["mean"],
                        "ci95": agg["ci95"], "n": agg["n"], "ci_level": agg["ci_level"],
                        "excludes_0": agg["excludes_0"]})
    return out


def _linearity(ancestry: torch.nn.Module) -> dict[str, Any]:
    try:
        return layer_linearity(ancestry, n_shuffles=5, seed=0)
    except ModelError as err:
        return {"skipped": str(err), "rows": [], "summary": {}}


def _report(lineages: list[Lineage], sections: list[dict[str, dict[str, Any]]], methods: list[DescendantMethod],
            task: Task, rows: list[dict[str, Any]], skipped: list[dict[str, Any]], fewshot: dict[str, Any],
            linearity: dict[str, Any], device: torch.device, seconds: float) -> dict[str, Any]:
    first = lineages[0]
    cfg, v, recipe, split = first.cfg, first.cfg.vit, first.recipe, first.split
    source, novel = list(split.source), list(split.novel)

    def ancestry_record(lineage: Lineage) -> dict[str, Any]:
        anc = {k: val for k, val in lineage.info.items() if k not in ("loss", "gradient_share")}
        anc["gradient_share"] = lineage.info.get("gradient_share")
        return anc

    per_lineage = [{"learngene_seed": lin.seed, "dir": str(lin.out), "ancestry": ancestry_record(lin),
                    **{name.replace("-", "_"): sec for name, sec in secs.items()}}
                   for lin, secs in zip(lineages, sections)]
    return jsonable({
        "version": __version__,
        "paradigm": "vit",
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "device": str(device),
        "data": {"name": first.data.name, "image_size": first.data.image_size, "channels": first.data.channels,
                 "source_classes": len(source), "open_world_classes": len(split.open_world),
                 "novel_classes": len(novel), "source_images": first.source.sizes()},
        "split": {"source": source, "open_world": list(split.open_world), "novel": novel},
        "input_spec": first.spec,
        # the first learngene seed's ancestry and genes (those saved at the run's root); every one in "lineages"
        "ancestry": ancestry_record(first),
        **{name.replace("-", "_"): section for name, section in sections[0].items()},
        "learngene_seeds": [lin.seed for lin in lineages],
        "lineages": per_lineage,
        "descendants": {
            "methods": [m.name for m in methods],
            "widths": widths_of(cfg, first.width), "depths": list(v.depths), "ancestry_width": first.width,
            "width_rules": {m.name: m.width_rule for m in methods},
            "protocol": {**task.sizes(), "descendant_epochs": v.descendant_epochs,
                         "scratch_epochs": v.scratch_epochs, "budget_epochs": list(v.budget_epochs),
                         "eval_epochs": list(v.eval_epochs), "learngene_seeds": [lin.seed for lin in lineages],
                         "seeds": list(cfg.evaluate.seeds), "lr": recipe.child_lr, "batch_size": recipe.batch_size,
                         "schedule": recipe.schedule, "augment": recipe.augment,
                         "paired": "within a learngene seed, every method's descendant of a (depth, width, seed) has "
                                   "the same fresh head, data order and augmentation"},
            "rows": rows,
            "paired": paired_differences(rows, [m.name for m in methods]),
            "skipped": skipped,
        },
        "fewshot": fewshot,
        "linearity": linearity,
        "seconds": seconds,
    })

"""Whole runs (``learngene run`` for either paradigm) and the CNN stages after the collective model over a run
directory: select the learngene, evaluate the individual models against the baselines."""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import logging
from pathlib import Path
from typing import Any

import torch

from learngene import __version__
from learngene.collective.recorder import GradientRecorder
from learngene.collective_run import check_same_config, cnn_stage, load_collective_run, run_collective
from learngene.config import Config, parse_setting
from learngene.criterion import CriterionContext, select_layers
from learngene.data import TaskStream, sample_episodes
from learngene.distributed import SINGLE, DistInfo, barrier
from learngene.errors import CheckpointError, LearngeneError
from learngene.evaluate import evaluate_methods
from learngene.gene import Learngene
from learngene.individual import PseudoTaskScorer
from learngene.plots import plot_bars, plot_criterion, plot_curves, plot_tradeoff
from learngene.prepare import load_data, make_split, make_stream
from learngene.registry import CRITERIA, DESCENDANT_METHODS, METHODS, MODELS, SOURCES
from learngene.report import methods_table, render_evaluation, write_report
from learngene.safeio import (
    atomic_write_bytes,
    atomic_write_json,
    check_writable_dir,
    fresh_output,
    jsonable,
    read_json,
)
from learngene.vit.report import render_vit_report
from learngene.vit.run import run_vit

log = logging.getLogger(__name__)


def pseudo_pool(stream: TaskStream) -> tuple[list[str], str]:
    """Classes for pseudo-target tasks: source classes the stream never used, else the open world. Never novel."""
    split = stream.split
    unseen = [c for c in split.source if c not in set(stream.class_order)]
    if len(unseen) >= 2:
        return unseen, "source (never in the stream)"
    if len(split.open_world) >= 2:
        return list(split.open_world), "open-world"
    return list(split.source), "source (seen by the collective model: optimistic)"


def preflight(cfg: Config, data) -> None:
    """Check that every later stage can run on this data before the collective model trains for hours.

    One episode of each evaluation setting (novel classes) and of the validation criterion's pseudo-tasks is
    drawn: the same calls, with the same messages, that would otherwise fail after the collective stage.
    """
    stream = make_stream(cfg, data, make_split(cfg, data))
    for setting in cfg.evaluate.settings:
        ways, shots = parse_setting(setting)
        sample_episodes(data, list(stream.split.novel), ways, shots, cfg.evaluate.queries, 1)
    if cfg.criterion.name == "validation":
        pool, _ = pseudo_pool(stream)
        ways = min(cfg.stream.ways, len(pool))
        if ways < 2:
            raise LearngeneError(
                "the validation criterion needs at least 2 classes outside the stream and the novel split for "
                "pseudo-tasks; use criterion.name = 'gradient_stability' or a split with open-world classes")
        sample_episodes(data, pool, ways, cfg.criterion.pseudo_shots, cfg.evaluate.queries, 1)


def select_learngene(network, stream: TaskStream, *, cfg: Config | None = None,
                     recorder: GradientRecorder | None = None, input_spec: dict[str, Any] | None = None,
                     criterion: str | None = None, provenance: dict[str, Any] | None = None,
                     progress: bool = True) -> tuple[Learngene, dict[str, Any]]:
    """Choose the learngene of a trained collective ``network`` with a criterion; returns (gene, criterion record).

    ``recorder`` holds the gradient statistics recorded while it learned ``stream`` (the gradient_stability
    criterion needs them; ``trainer.plugin("recorder").recorder``); the validation criterion scores windows on
    pseudo-tasks from source classes the stream never used (it trains individual models for every candidate
    window: minutes, with a progress bar). ``criterion`` overrides ``cfg.criterion.name``. With neither, a
    ``recorder`` means the paper's rule (``gradient_stability``: the statistics were recorded for it) and no
    recorder means ``validation``; the choice is logged.
    """
    from learngene.config import Config as _Config

    if criterion is None and cfg is None:
        criterion = "gradient_stability" if recorder is not None else "validation"
        log.info("select_learngene: criterion %r (%s; pass criterion= to choose)", criterion,
                 "the paper's rule, from the recorder's gradient statistics" if recorder is not None else
                 "no recorder given: windows scored on source-class pseudo-tasks")
    cfg = copy.deepcopy(cfg) if cfg is not None else _Config()
    if criterion is not None:
        cfg.criterion.name = criterion
        cfg.validate()
    network = copy.deepcopy(network).cpu().eval()  # the caller's model (maybe on a GPU, mid-training) is left as it is
    data = stream.data
    layer_names = network.conv_layer_names()
    fractions = norms = None
    if recorder is not None and recorder.records:
        fractions, norms = recorder.per_task("fraction"), recorder.per_task("grad_norm")
        order = [recorder.layer_names.index(n) for n in layer_names if n in recorder.layer_names]
        if len(order) == len(layer_names):
            fractions, norms = fractions[:, order], norms[:, order]
        else:
            fractions = norms = None
    spec = input_spec if input_spec is not None else data.input_spec(stream.split.source)
    pseudo, pool = pseudo_pool(stream)
    scorer = PseudoTaskScorer(network, data, pseudo, spec, cfg) if min(cfg.stream.ways, len(pseudo)) >= 2 else None
    ctx = CriterionContext(network=network, layer_names=layer_names, grad_stats=fractions, grad_norms=norms,
                           cfg=cfg, data=data, pseudo_classes=pseudo, pseudo_pool=pool, input_spec=spec,
                           score_window=scorer, progress=progress)
    result = select_layers(ctx)
    prov = {
        "task_index": len(stream) - 1,
        "seed": cfg.seed,
        "package_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": data.name,
        **(provenance or {}),
    }
    # the [individual] settings this run chose on its pseudo-tasks travel with the gene: `learngene inherit`
    # starts from them when the user gives no preset (pooling, augmentation, epochs, lr, ...)
    gene = Learngene.from_model(network, result.selected, input_spec=spec, criterion=result.to_dict(),
                                provenance=prov, individual=dataclasses.asdict(cfg.individual))
    return gene, result.to_dict()


def select_gene(run_dir: str | Path, gene_dir: str | Path, *, cfg: Config | None = None, data=None,
                overwrite: bool = False, dist: DistInfo = SINGLE, part_of_run: bool = False,
                progress: bool = True) -> tuple[Learngene, dict[str, Any]]:
    """Apply the configured criterion to a finished collective run and save the learngene.

    ``gene_dir`` is checked before the criterion runs, so a refused directory costs nothing.
    """
    if dist.is_main:
        check_writable_dir(gene_dir, overwrite=overwrite, resumable=False, kind="learngene", part_of_run=part_of_run)
    run = load_collective_run(run_dir)
    cfg = (cfg or run["config"]).require_cnn("learngene select")
    data = data if data is not None else load_data(cfg)
    stream = TaskStream.from_manifest(data, run["stream_manifest"])
    gene, result = select_learngene(run["network"], stream, cfg=cfg, recorder=GradientRecorder.load(run_dir),
                                    input_spec=run["meta"]["input_spec"], progress=progress and dist.is_main,
                                    provenance={"collective_run": str(Path(run_dir).resolve())})
    if dist.is_main:  # every rank computed the same selection; one writes it
        gene.save(gene_dir)
    barrier(dist)
    return gene, result


BASELINES_DIR = "baselines"


def evaluate_run(run_dir: str | Path, gene: Learngene, *, cfg: Config | None = None, data=None,
                 progress: bool = True, dist: DistInfo = SINGLE,
                 device: torch.device | str = "cpu") -> dict[str, Any]:
    """Evaluate every method on a finished collective run.

    The ``joint`` and ``protonet`` baselines are trained on the run's stream (on ``device``) and cached in
    ``run_dir/baselines/``, so evaluating again (another gene, other settings) does not retrain them. Their
    image budget is each task's training images x train.epochs; with exemplar replay the collective model
    processed more, so the run's measured ``images_seen`` is the budget then.
    """
    run = load_collective_run(run_dir)
    cfg = (cfg or run["config"]).require_cnn("learngene evaluate")
    data = data if data is not None else load_data(cfg)
    stream = TaskStream.from_manifest(data, run["stream_manifest"])
    network = run["network"]
    seen = run["report"].get("images_seen")
    budget = int(seen) if cfg.train.memory_per_class > 0 and seen else None
    return evaluate_methods(cfg, data, list(stream.split.novel), network, gene, network.conv_layer_names(),
                            run["meta"]["input_spec"], progress=progress, dist=dist, stream=stream,
                            cache_dir=Path(run_dir) / BASELINES_DIR, device=device, budget_images=budget)


def plot_settings(individual: dict[str, Any], plots: Path) -> None:
    """Per evaluation setting: query accuracy after each epoch, and mean accuracy with its CI per method."""
    for setting, res in individual["settings"].items():
        ms = res["methods"]
        aliases = {m: r["same_as"] for m, r in ms.items() if r.get("same_as")}
        # untrained rows (nearest class mean) have no curve: they are drawn as horizontal reference lines
        plot_curves({m: (r["curve_epochs"], r["curve"]) for m, r in ms.items() if r["curve"]},
                    plots / f"convergence_{setting}.png", title=f"query accuracy after each epoch, {setting}",
                    references={m: r["acc_mean"] for m, r in ms.items() if not r["curve"]}, aliases=aliases)
        plot_bars({m: r["acc_mean"] for m, r in ms.items()}, {m: r["acc_ci95"] for m, r in ms.items()},
                  plots / f"accuracy_{setting}.png", title=f"{setting}: mean accuracy with 95% CI", aliases=aliases)
        # the trade-off a user weighs: accuracy against the model's size and against training time per task
        plot_tradeoff(ms, "params", plots / f"tradeoff_params_{setting}.png",
                      title=f"{setting}: accuracy against parameters")
        plot_tradeoff(ms, "train_seconds_mean", plots / f"tradeoff_time_{setting}.png",
                      title=f"{setting}: accuracy against training time per task")


def write_evaluation(result: dict[str, Any], out: str | Path, *, run_dir: str | Path, gene_dir: str | Path) -> None:
    """What `learngene evaluate` leaves in ``out``: evaluation.json, evaluation.md (the tables) and plots/."""
    out = Path(out)
    atomic_write_json(out / "evaluation.json", jsonable(result))
    atomic_write_bytes(out / "evaluation.md", render_evaluation(result, run_dir=run_dir, gene_dir=gene_dir).encode())
    plot_settings(result, out / "plots")




def check_names(cfg: Config) -> Config:
    """Refuse a name the config gives a registry that nothing registered (checked here, where every registry is
    filled, before anything runs): the data source, the model, the criterion and the compared methods."""
    SOURCES.check(cfg.data.source, "data.source")
    if cfg.paradigm == "cnn":  # a transformer's model.name is checked against the ViT presets (vit_shape)
        MODELS.check(cfg.model.name, "model.name")
    CRITERIA.check(cfg.criterion.name, "criterion.name")
    methods = METHODS if cfg.paradigm == "cnn" else DESCENDANT_METHODS
    for name in cfg.evaluate.methods or []:
        methods.check(name, "evaluate.methods")
    return cfg


def run_paradigm(cfg: Config, out: str | Path, *, resume: bool = False, overwrite: bool = False,
                 device: torch.device | str = "cpu", progress: bool = True,
                 dist: DistInfo = SINGLE) -> dict[str, Any]:
    """``learngene run``: the whole paradigm ``cfg.paradigm`` names into ``out``; returns the report it wrote.

    ``cnn``: collective -> criterion -> gene -> individuals + baselines; ``vit``:
    :func:`learngene.vit.run.run_vit` (``resume`` reuses its cached stages, as any rerun does).
    """
    check_names(cfg)
    if cfg.paradigm == "vit":
        if not resume:
            check_writable_dir(out, overwrite=overwrite, kind="run")
        return run_vit(cfg, out, progress=progress, device=device)
    return _run_cnn(cfg, out, resume=resume, overwrite=overwrite, device=device, progress=progress, dist=dist)


def run_summary(cfg: Config, report: dict[str, Any], out: str | Path) -> str:
    """What ``learngene run`` prints once a run is done."""
    if cfg.paradigm == "vit":
        return f"{render_vit_report(report)}\n\nreport: {Path(out) / 'report.md'}"
    ind = report["individual"]
    ow = report["collective"].get("open_world") or {}
    lines = [f"learngene selected: {', '.join(report['criterion']['selected'])} ({report['criterion']['name']})",
             f"collective: final avg accuracy {report['collective']['final']['average_accuracy']:.3f}, "
             f"open-world AUROC {ow.get('auroc', float('nan')):.3f}"]
    for setting, res in ind["settings"].items():
        lines += ["", f"{setting}:", methods_table(res["methods"])]
    return "\n".join([*lines, "", f"report: {Path(out) / 'report.md'}"])


@cnn_stage("learngene run")
def _run_cnn(cfg: Config, out: str | Path, *, resume: bool = False, overwrite: bool = False,
             device: torch.device | str = "cpu", progress: bool = True,
             dist: DistInfo = SINGLE) -> dict[str, Any]:
    """collective -> criterion -> gene -> individuals + baselines -> report.json / report.md / plots."""
    out = Path(out)
    if not resume and dist.is_main:
        fresh_output(out, kind="run", outputs=("collective", "gene", "report.json", "report.md", "plots"),
                     overwrite=overwrite)
    barrier(dist)
    coll_dir = out / "collective"
    if resume and not ((coll_dir / "collective.json").is_file() or (coll_dir / "checkpoints" / "latest.json").is_file()):
        raise CheckpointError(f"--resume given but {coll_dir} has no checkpoint; start without --resume "
                              "(with --overwrite if the directory is not empty)")
    if resume and (coll_dir / "config.json").is_file():
        check_same_config(coll_dir, cfg)  # before any data is read or anything is written
    data = load_data(cfg)
    preflight(cfg, data)
    if resume and (coll_dir / "collective.json").is_file():
        collective = read_json(coll_dir / "collective.json", "collective report")
    else:
        run_collective(cfg, coll_dir, resume=resume and (coll_dir / "checkpoints" / "latest.json").is_file(),
                       overwrite=True, device=device, progress=progress, data=data, dist=dist, part_of_run=True)
        collective = read_json(coll_dir / "collective.json", "collective report")
    gene, criterion = select_gene(coll_dir, out / "gene", cfg=cfg, data=data, dist=dist, overwrite=True,
                                  part_of_run=True, progress=progress)
    individual = evaluate_run(coll_dir, gene, cfg=cfg, data=data, progress=progress, dist=dist,
                              device=device)
    if not dist.is_main:
        return {"individual": individual, "criterion": criterion, "collective": collective}
    stream_manifest = load_collective_run(coll_dir)["stream_manifest"]
    report = {
        "version": __version__,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "split": collective["split"],
        "data": data.name,
        "machine": collective.get("machine"),
        "collective": {
            "open_world": collective.get("open_world"),
            "final": collective["final"],
            "memory": collective.get("memory"),
            "images_seen": collective.get("images_seen"),
            "forgetting_curve": collective["forgetting_curve"],
            "average_accuracy_curve": collective["average_accuracy_curve"],
            "n_tasks": collective["n_tasks"],
            "class_order": stream_manifest.get("class_order"),
        },
        "criterion": criterion,
        "gene": {"dir": str(out / "gene"), "layers": gene.layer_names, "params": gene.num_params,
                 "effective_params": gene.effective_params, "effective_widths": gene.effective_widths},
        "individual": individual,
    }
    atomic_write_json(out / "report.json", jsonable(report))
    write_report(report, out / "report.md")
    plots = out / "plots"
    plot_settings(individual, plots)
    # the scores that chose the gene, chosen window marked (the gradient heatmap stays in collective/plots/)
    plot_criterion(criterion.get("candidates") or [], criterion["selected"], plots / "criterion_scores.png",
                   title=f"criterion `{criterion['name']}`: score of every candidate window")
    return report

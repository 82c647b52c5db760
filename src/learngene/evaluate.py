"""Few-shot evaluation of individual models against baselines on the same target tasks and budget.

Methods: ``learngene`` (criterion-selected gene), ``scratch`` (same architecture, random init), ``finetune``
(whole collective network + new head), ``linear-probe`` (frozen collective features + new head) and the
ablations ``gene-bottom`` / ``gene-top`` / ``gene-random-layers`` (genes of the same size elsewhere).
Every (setting, seed) draws its own episodes from the novel classes; every method sees the same episodes.

Untrained references, scored by cosine nearest class mean (:mod:`learngene.baselines`) on frozen features:
``ncm-collective`` (the collective network's penultimate features), ``ncm-gene`` (the collective network's
blocks up to the gene's last one), ``joint`` (the same architecture trained on all stream classes at once)
and ``protonet`` (trained episodically on the stream's classes); the last two get the stream's image budget.
"""

from __future__ import annotations

import copy
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learngene import baselines
from learngene.config import Config, parse_setting
from learngene.data import Episode, ImageSet, TaskStream, sample_episodes
from learngene.data.transforms import normalize
from learngene.distributed import SINGLE, DistInfo, all_gather_objects, barrier
from learngene.errors import ConfigError
from learngene.gene import Learngene
from learngene.individual import (
    IndividualSpec,
    TrainSettings,
    build_individual,
    train_few_shot,
    weights_fingerprint,
)
from learngene.runtime import derive_seed
from learngene.stats import mean_ci95

METHODS = ("learngene", "scratch", "finetune", "linear-probe", "gene-bottom", "gene-top",
           "gene-random-layers", "ncm-collective", "ncm-gene", "joint", "protonet")
NCM_METHODS = ("ncm-collective", "ncm-gene", "joint", "protonet")  # frozen features + nearest class mean
TRAINED_BASELINES = ("joint", "protonet")  # need the stream; trained once per run and cached
GENE_METHODS = ("learngene", "gene-bottom", "gene-top", "gene-random-layers")


def individual_spec(cfg: Config) -> IndividualSpec:
    i = cfg.individual
    return IndividualSpec(before=list(i.before), after=list(i.after), hidden=list(i.hidden), match_spatial=i.pool_before)


def train_settings(cfg: Config) -> TrainSettings:
    i = cfg.individual
    return TrainSettings(epochs=i.epochs, batch_size=i.batch_size, lr=i.lr, momentum=i.momentum,
                         weight_decay=i.weight_decay, inherit_mode=i.inherit_mode, ewc_lambda=i.ewc_lambda,
                         lr_scale=i.lr_scale, imprint=i.imprint, curve_every=cfg.evaluate.curve_every)


def spatial_in(network: nn.Module, layer_name: str, image_size: int) -> int:
    size = image_size
    for name, block in network.features.named_children():
        if f"features.{name}" == layer_name:
            return size
        if isinstance(getattr(block, "pool", None), nn.MaxPool2d):
            size //= 2
    raise ConfigError(f"{layer_name} is not a conv block of the collective model")


def gene_from_network(network: nn.Module, layers: list[str], spec: dict[str, Any], criterion: dict | None = None,
                      provenance: dict | None = None) -> Learngene:
    full = {**spec, "spatial_in": spatial_in(network, layers[0], spec["image_size"])}
    return Learngene.from_model(network, layers, input_spec=full, criterion=criterion, provenance=provenance)


def episode_tensors(data: ImageSet, ep: Episode, spec: dict[str, Any]):
    sx = normalize(data.images[ep.support_indices], spec["mean"], spec["std"])
    qx = normalize(data.images[ep.query_indices], spec["mean"], spec["std"])
    return sx, ep.support_labels.long(), qx, ep.query_labels.long()


class LinearProbe(nn.Module):
    """Frozen collective features (always in eval mode) + a new linear classifier."""

    def __init__(self, backbone: nn.Module, ways: int):
        super().__init__()
        self.backbone = backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.classifier = nn.Linear(backbone.classifier.in_features, ways)

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward_penultimate(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.backbone.forward_penultimate(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_penultimate(x))


def _finetune_model(network: nn.Module, ways: int) -> nn.Module:
    model = copy.deepcopy(network)
    model.classifier = nn.Linear(model.classifier.in_features, ways)
    return model


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ablation_genes(network: nn.Module, layer_names: list[str], selected: list[str], spec: dict[str, Any],
                   seed: int) -> dict[str, Learngene]:
    k = len(selected)
    n = len(layer_names)
    start = layer_names.index(selected[0])
    # a window that is neither the selected one nor the bottom/top ablations, when the network has one
    windows = list(range(n - k + 1))
    others = [a for a in windows if a not in (start, 0, n - k)] or [a for a in windows if a != start] or [start]
    r = random.Random(seed).choice(others)
    return {
        "gene-bottom": gene_from_network(network, layer_names[:k], spec),
        "gene-top": gene_from_network(network, layer_names[n - k :], spec),
        "gene-random-layers": gene_from_network(network, layer_names[r : r + k], spec),
    }


def _same_gene(a: Learngene, b: Learngene) -> bool:
    """Equal as far as an individual model can tell: layers (names, shapes, flags), input spec, tensors.

    Why everything: a pool flag or the input spec (spatial size, normalization) changes the individual model
    built around the gene even when the tensors are identical, so such genes must be trained separately.
    """
    if a.layers != b.layers or a.input_spec != b.input_spec:
        return False
    ta, tb = a.tensors, b.tensors
    return ta.keys() == tb.keys() and all(
        ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]) for k in ta
    )


def duplicate_genes(methods: list[str], gene: Learngene, ablations: dict[str, Learngene]) -> dict[str, str]:
    """Map each gene method that would inherit exactly the same layers as an earlier one to that method.

    Why: when the criterion picks the bottom window, ``gene-bottom`` *is* ``learngene``, and in a shallow network
    ``gene-random-layers`` can only be ``gene-top``; training them again costs time and adds no information.
    The report keeps every method's row and marks the copies with ``same_as``.
    """
    candidates = {"learngene": gene, **ablations}
    first: list[str] = []
    aliases: dict[str, str] = {}
    for m in methods:
        if m not in candidates:
            continue
        twin = next((f for f in first if _same_gene(candidates[f], candidates[m])), None)
        if twin is None:
            first.append(m)
        else:
            aliases[m] = twin
    return aliases


def evaluate_methods(
    cfg: Config,
    data: ImageSet,
    novel: list[str],
    network: nn.Module,
    gene: Learngene,
    layer_names: list[str],
    spec: dict[str, Any],
    *,
    methods: list[str] | None = None,
    progress: bool = True,
    dist: DistInfo = SINGLE,
    stream: TaskStream | None = None,
    cache_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    budget_images: int | None = None,
) -> dict[str, Any]:
    """Run every method on every setting and seed; returns the ``individual`` report section.

    ``joint`` and ``protonet`` are trained on ``stream`` (on ``device``) once and cached under ``cache_dir``,
    with the stream's image budget (``budget_images`` replaces it, see :func:`baselines.joint_plan`);
    without a stream they are left out when they come from the config's default list (and refused when asked
    for explicitly). Under torchrun the episodes are sharded across ranks (episode i goes to rank i mod world)
    and gathered: each episode's result depends only on its own seeds, so the report equals the single-process
    one; rank 0 trains the baselines and the other ranks load them from the cache.
    """
    from tqdm.auto import tqdm

    explicit = methods is not None
    methods = list(methods or cfg.evaluate.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown evaluation methods {unknown}; available: {', '.join(METHODS)}")
    skipped: dict[str, str] = {}
    if stream is None and any(m in TRAINED_BASELINES for m in methods):
        if explicit:
            asked = [m for m in methods if m in TRAINED_BASELINES]
            raise ConfigError(f"methods {asked} train on the collective model's stream: pass stream= "
                              "(evaluate_run does) or leave them out")
        skipped = {m: "needs the stream (not given)" for m in methods if m in TRAINED_BASELINES}
        methods = [m for m in methods if m not in skipped]
    ind_spec = individual_spec(cfg)
    base = train_settings(cfg)
    network = network.cpu().eval()
    ablations = ablation_genes(network, layer_names, gene.layer_names, spec, cfg.seed)
    aliases = duplicate_genes(methods, gene, ablations)
    frozen, trained = _frozen_features(methods, cfg, network, gene, spec, stream, cache_dir, device, dist,
                                       progress, budget_images)
    results: dict[str, Any] = {}
    jobs = [(s, seed) for s in cfg.evaluate.settings for seed in cfg.evaluate.seeds]
    for setting, seed in jobs:
        ways, shots = parse_setting(setting)
        episodes = sample_episodes(data, novel, ways, shots, cfg.evaluate.queries, cfg.evaluate.episodes,
                                   seed=derive_seed(cfg.seed, "episodes", setting, seed) % (2**31))
        per = results.setdefault(setting, {m: [] for m in methods})
        bar = tqdm(enumerate(episodes), total=len(episodes), desc=f"{setting} seed {seed}",
                   disable=not (progress and dist.is_main),
                   leave=False, dynamic_ncols=True)
        for i, ep in bar:
            if i % dist.world_size != dist.rank:
                continue
            sx, sy, qx, qy = episode_tensors(data, ep, spec)
            init_seed = derive_seed(cfg.seed, "init", setting, seed, i) % (2**31)
            done: dict[str, dict[str, Any]] = {}
            for m in methods:
                if m in aliases:  # same layers, same tensors, same training: the run would repeat bit for bit
                    per[m].append({**done[aliases[m]], "same_as": aliases[m]})
                    continue
                if m in frozen:
                    features, n_params = frozen[m]
                    tick = time.perf_counter()
                    acc = baselines.ncm_accuracy(features, sx, sy, qx, qy)
                    done[m] = {"episode": i, "seed": seed, "accuracy": acc, "curve": [], "curve_epochs": [],
                               "train_seconds": time.perf_counter() - tick, "params": n_params,
                               "inherited_params": n_params}
                    per[m].append(done[m])
                    continue
                model, settings, use_ewc = _build(m, network, gene, ablations, ind_spec, base, ways, init_seed)
                # what this target task starts from, recorded before any training touches the model
                start = weights_fingerprint(model.gene.state_dict()) if m in GENE_METHODS else None
                out = train_few_shot(model, sx, sy, settings, query_x=qx, query_y=qy, seed=init_seed,
                                     use_gene_ewc=use_ewc)
                if m == "scratch":
                    inherited = 0
                elif hasattr(model, "inherited_params"):
                    inherited = model.inherited_params()
                else:
                    inherited = _n_params(model) - _n_params(model.classifier)
                done[m] = {"episode": i, "seed": seed, "accuracy": out["accuracy"], "curve": out["curve"],
                           "curve_epochs": out["curve_epochs"],
                           "train_seconds": out["train_seconds"], "params": _n_params(model),
                           "inherited_params": inherited}
                if start is not None:
                    done[m]["start_sha256"] = start
                per[m].append(done[m])
    summary = summarize(merge_shards(all_gather_objects(dist, results)), cfg)
    if trained or skipped:
        summary["baselines"] = {**trained, **{m: {"skipped": why} for m, why in skipped.items()}}
    return summary


def _frozen_features(methods: list[str], cfg: Config, network: nn.Module, gene: Learngene,
                     spec: dict[str, Any], stream: TaskStream | None, cache_dir: str | Path | None,
                     device: torch.device | str, dist: DistInfo, progress: bool,
                     budget_images: int | None) -> tuple[dict[str, tuple[Any, int]], dict[str, Any]]:
    """Feature functions (and their parameter counts) of the NCM rows; trains or loads joint and protonet."""
    frozen: dict[str, tuple[Any, int]] = {}
    trained: dict[str, Any] = {}
    if "ncm-collective" in methods:
        frozen["ncm-collective"] = (baselines.penultimate_features(network),
                                    baselines.feature_params(network))
    if "ncm-gene" in methods:
        last = gene.layer_names[-1]
        own = network.state_dict()
        if any(k not in own or not torch.equal(own[k], v) for k, v in gene.tensors.items()):
            raise ConfigError("ncm-gene computes the gene's features through the collective network, but "
                              "this gene's tensors are not that network's; evaluate it with its own run or "
                              "drop 'ncm-gene'")
        frozen["ncm-gene"] = (baselines.block_features(network, last),
                              baselines.feature_params(network, last))
    architecture = network.config()
    for name in (m for m in TRAINED_BASELINES if m in methods):
        assert stream is not None
        train = baselines.train_joint if name == "joint" else baselines.train_protonet
        key = baselines.cache_key(name, architecture, stream, spec, cfg, budget_images)
        where = Path(cache_dir) / name if cache_dir is not None else None

        def fit(train=train) -> tuple[nn.Module, dict[str, Any]]:
            return train(architecture, stream, spec, cfg, device=device, progress=progress and dist.is_main,
                         budget_images=budget_images)

        if dist.is_main or where is None:
            model, info = baselines.cached_baseline(where, key, fit)
        barrier(dist)
        if not dist.is_main and where is not None:
            model, info = baselines.load_baseline(where, key)
            info = {**info, "cached": True}
        frozen[name] = (baselines.penultimate_features(model), baselines.feature_params(model))
        # whether it came from the cache stays out of the report: a rerun must give the same report
        trained[name] = {**{k: v for k, v in info.items() if k != "cached"},
                         "dir": str(where) if where is not None else None}
    return frozen, trained


def _build(m: str, network, gene, ablations, ind_spec, base: TrainSettings, ways: int, seed: int):
    settings = copy.copy(base)
    if m == "learngene":
        return build_individual(gene, ind_spec, ways, seed=seed), settings, True
    if m == "scratch":
        settings.inherit_mode = "free"
        return build_individual(gene, ind_spec, ways, seed=seed, inherit=False), settings, False
    if m in ablations:
        return build_individual(ablations[m], ind_spec, ways, seed=seed), settings, True
    torch.manual_seed(seed)
    if m == "finetune":
        settings.inherit_mode = "free"
        return _finetune_model(network, ways), settings, False
    if m == "linear-probe":
        settings.train_prefixes = ("classifier.",)
        return LinearProbe(copy.deepcopy(network), ways), settings, False
    raise ConfigError(f"unknown method {m!r}")


def paired_difference(runs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and 95% CI of ``accuracy - reference accuracy`` over the (seed, episode) pairs both have.

    Why paired: every method sees the same episodes, and episode difficulty varies far more than the methods
    do, so per-episode differences give a much tighter interval than comparing two independent means.
    """
    ref = {(r["seed"], r["episode"]): r["accuracy"] for r in reference}
    diffs = [r["accuracy"] - ref[(r["seed"], r["episode"])] for r in runs if (r["seed"], r["episode"]) in ref]
    mean, ci = mean_ci95(diffs)
    excludes = math.isfinite(ci) and (mean - ci > 0 or mean + ci < 0)
    return {"mean": mean, "ci95": ci, "n": len(diffs), "ci_excludes_0": excludes}


def summarize(results: dict[str, dict[str, list[dict[str, Any]]]], cfg: Config) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for setting, per in results.items():
        methods: dict[str, Any] = {}
        for m, runs in per.items():
            accs = [r["accuracy"] for r in runs]
            mean, ci = mean_ci95(accs)
            n_epochs = max((len(r["curve"]) for r in runs), default=0)
            curve = [sum(r["curve"][e] for r in runs) / len(runs) for e in range(n_epochs)] if runs else []
            epochs = runs[0]["curve_epochs"] if runs else []
            final = curve[-1] if curve else float("nan")
            to90 = next((epochs[e] for e, v in enumerate(curve) if v >= 0.9 * final), None) if curve else None
            methods[m] = {
                "acc_mean": mean,
                "acc_ci95": ci,
                "n": len(accs),
                "params": runs[0]["params"] if runs else None,
                "inherited_params": runs[0]["inherited_params"] if runs else None,
                "train_seconds_mean": sum(r["train_seconds"] for r in runs) / max(len(runs), 1),
                "epochs_to_90pct_final": to90,
                "curve": curve,
                "curve_epochs": epochs,
                "accuracies": accs,
                # per (seed, episode): the pairing key of the paired comparisons, and for gene-based methods
                # the fingerprint of the inherited weights the model started from
                "runs": [{k: r[k] for k in ("seed", "episode", "accuracy", "start_sha256") if k in r}
                         for r in runs],
            }
            if "scratch" in per and m != "scratch":
                methods[m]["vs_scratch"] = paired_difference(runs, per["scratch"])
            twin = next((r["same_as"] for r in runs if "same_as" in r), None)
            if twin:
                methods[m]["same_as"] = twin
        settings[setting] = {"methods": methods}
        if "ncm-collective" in per and "joint" in per:
            gap = paired_difference(per["ncm-collective"], per["joint"])
            settings[setting]["ncm_collective_minus_joint"] = gap
    headline = cfg.evaluate.headline
    return {
        "headline": headline,
        "methods": settings.get(headline, {}).get("methods", {}),
        "settings": settings,
        "episodes_per_seed": cfg.evaluate.episodes,
        "queries_per_class": cfg.evaluate.queries,
        "seeds": list(cfg.evaluate.seeds),
        "ci": "95% Student-t interval over all (episode, seed) pairs",
        "paired_ci": "vs_scratch and ncm_collective_minus_joint: mean and 95% Student-t interval of the "
                     "per-(episode, seed) accuracy differences",
    }


def merge_shards(parts: list[dict[str, dict[str, list[dict[str, Any]]]]]) -> dict[str, dict[str, list]]:
    merged: dict[str, dict[str, list]] = {}
    for part in parts:
        for setting, per in part.items():
            dst = merged.setdefault(setting, {})
            for m, runs in per.items():
                dst.setdefault(m, []).extend(runs)
    for per in merged.values():
        for runs in per.values():
            runs.sort(key=lambda r: (r["seed"], r["episode"]))  # one canonical order, however many ranks
    return merged


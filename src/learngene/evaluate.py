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
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learngene import baselines
from learngene.config import Config, IndividualConfig, check_method_lr, parse_setting
from learngene.data import ImageSet, TaskStream, sample_episodes
from learngene.distributed import SINGLE, DistInfo, all_gather_objects, barrier
from learngene.errors import ConfigError
from learngene.evaluation_summary import merge_shards, paired_difference, summarize  # noqa: F401 - re-exported
from learngene.gene import Learngene
from learngene.individual import build_individual, train_few_shot, weights_fingerprint
from learngene.models.heads import make_classifier
from learngene.registry import METHODS
from learngene.runtime import derive_seed, progress_bar, seeded
from learngene.stats import calibration

__all__ = ["Method", "MethodContext", "Trained", "evaluate_methods", "list_methods", "register_method"]


@dataclass
class Trained:
    """What a trained method hands the few-shot loop for one episode."""

    model: nn.Module
    settings: IndividualConfig
    use_gene_ewc: bool = True
    train_prefixes: tuple[str, ...] | None = None
    inherited: int | None = None  # inherited parameters; None: the model's inherited_params() or all but the head
    # name prefixes of the inherited (pretrained) parameters: held near their start, BatchNorm kept, frozen in a
    # head stage (train_few_shot); () for a model trained from scratch
    inherited_prefixes: tuple[str, ...] = ("gene.",)


@dataclass
class MethodContext:
    """Everything a method may need, shared by every method of one evaluation."""

    cfg: Config
    network: nn.Module  # the collective network (eval mode, CPU)
    gene: Learngene
    layer_names: list[str]  # the network's conv blocks, in order
    spec: dict[str, Any]  # input normalization
    stream: TaskStream | None = None
    cache_dir: str | Path | None = None
    device: torch.device | str = "cpu"
    dist: DistInfo = SINGLE
    progress: bool = True
    budget_images: int | None = None
    trained: dict[str, Any] = field(default_factory=dict)  # reports of baselines trained for this evaluation

    @cached_property
    def ablations(self) -> dict[str, Learngene]:
        return ablation_genes(self.network, self.layer_names, self.gene.layer_names, self.spec, self.cfg.seed)


@dataclass(frozen=True)
class Method:
    """One row of the comparison table: trained per episode (``build``) or scored by nearest class mean on
    frozen features (``features``)."""

    name: str
    description: str
    build: Callable[[MethodContext, int, int], Trained] | None = None  # (ctx, ways, seed)
    features: Callable[[MethodContext], tuple[Callable, int]] | None = None  # -> (feature fn, parameters)
    needs_stream: bool = False  # trained on the collective model's stream (joint, protonet)
    # the gene it inherits (its model has a ``gene`` part): fingerprinted per episode, and a method whose gene
    # equals an earlier one's is not trained twice
    gene: Callable[[MethodContext], Learngene] | None = None

    @property
    def frozen(self) -> bool:
        return self.features is not None

    @property
    def from_gene(self) -> bool:
        return self.gene is not None


def register_method(name: str, description: str, *, build=None, features=None, needs_stream: bool = False,
                    gene=None) -> Method:
    """Add a row to every comparison: ``build(ctx, ways, seed) -> Trained`` or ``features(ctx) -> (fn, params)``.

    ``gene(ctx) -> Learngene``: the gene a trained method's model inherits (its model must then have a ``gene``
    part); its starting weights are fingerprinted per episode. A registered method is accepted by
    ``evaluate.methods`` and listed by ``learngene list methods``.
    """
    if (build is None) == (features is None):
        raise ConfigError(f"method {name!r} needs exactly one of build= (trained) or features= (nearest class mean)")
    if gene is not None and build is None:
        raise ConfigError(f"method {name!r}: gene= goes with build= (a trained model that inherits it)")
    return METHODS.register(name, Method(name, description, build, features, needs_stream, gene))


def list_methods() -> list[str]:
    """Every registered method, in registration order (the order of the default comparison table)."""
    return METHODS.in_order()


class LinearProbe(nn.Module):
    """Frozen collective features (always in eval mode) + a new linear classifier."""

    def __init__(self, backbone: nn.Module, ways: int, classifier: str = "linear"):
        super().__init__()
        self.backbone = backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.classifier = make_classifier(classifier, backbone.classifier.in_features, ways)

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward_penultimate(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.backbone.forward_penultimate(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_penultimate(x))


def _finetune_model(network: nn.Module, ways: int, classifier: str = "linear") -> nn.Module:
    model = copy.deepcopy(network)
    model.classifier = make_classifier(classifier, model.classifier.in_features, ways)
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
        "gene-bottom": Learngene.from_model(network, layer_names[:k], input_spec=spec),
        "gene-top": Learngene.from_model(network, layer_names[n - k :], input_spec=spec),
        "gene-random-layers": Learngene.from_model(network, layer_names[r : r + k], input_spec=spec),
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


def duplicate_genes(methods: list[str], genes: dict[str, Learngene]) -> dict[str, str]:
    """Map each gene method that would inherit exactly the same layers as an earlier one to that method.

    Why: when the criterion picks the bottom window, ``gene-bottom`` *is* ``learngene``, and in a shallow network
    ``gene-random-layers`` can only be ``gene-top``; training them again costs time and adds no information.
    The report keeps every method's row and marks the copies with ``same_as``.
    """
    candidates = genes
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
    explicit = methods is not None
    check_method_lr(cfg)
    methods = list(methods or cfg.evaluate.methods or list_methods())
    for m in methods:
        METHODS.check(m, "evaluate.methods")
    rows = {m: METHODS.get(m) for m in methods}
    skipped: dict[str, str] = {}
    if stream is None and any(r.needs_stream for r in rows.values()):
        if explicit:
            asked = [m for m, r in rows.items() if r.needs_stream]
            raise ConfigError(f"methods {asked} train on the collective model's stream: pass stream= "
                              "(evaluate_run does) or leave them out")
        skipped = {m: "needs the stream (not given)" for m, r in rows.items() if r.needs_stream}
        methods = [m for m in methods if m not in skipped]
    # a copy: the caller's model (maybe on a GPU, mid-training) stays where it is
    ctx = MethodContext(cfg=cfg, network=copy.deepcopy(network).cpu().eval(), gene=gene, layer_names=layer_names,
                        spec=spec,
                        stream=stream, cache_dir=cache_dir, device=device, dist=dist, progress=progress,
                        budget_images=budget_images)
    gene_rows = [m for m in methods if rows[m].from_gene]
    # a copy only when the training is the same too (a method with its own lr is trained on its own)
    aliases = {m: twin for m, twin in duplicate_genes(gene_rows, _gene_of(ctx, gene_rows)).items()
               if method_lr(cfg, m) == method_lr(cfg, twin)}
    # every target episode is drawn before anything trains: an impossible setting fails now, with its own message
    drawn = {(setting, seed): sample_episodes(data, novel, *parse_setting(setting), cfg.evaluate.queries,
                                              cfg.evaluate.episodes,
                                              seed=derive_seed(cfg.seed, "episodes", setting, seed) % (2**31))
             for setting in cfg.evaluate.settings for seed in cfg.evaluate.seeds}
    frozen = {m: rows[m].features(ctx) for m in methods if rows[m].frozen}
    results: dict[str, Any] = {}
    for (setting, seed), episodes in drawn.items():
        ways, shots = parse_setting(setting)
        per = results.setdefault(setting, {m: [] for m in methods})
        bar = progress_bar(enumerate(episodes), total=len(episodes), desc=f"{setting} seed {seed}",
                           enabled=progress and dist.is_main)
        for i, ep in bar:
            if i % dist.world_size != dist.rank:
                continue
            sx, sy, qx, qy = ep.tensors(data, spec)
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
                job = rows[m].build(ctx, ways, init_seed)
                if m in cfg.evaluate.method_lr:  # the method's own lr, chosen for it on pseudo-tasks
                    job = replace(job, settings=replace(job.settings, lr=cfg.evaluate.method_lr[m]))
                model = job.model
                # what this target task starts from, recorded before any training touches the model
                part = getattr(model, "gene", None) if rows[m].from_gene else None
                start = weights_fingerprint(part.state_dict()) if isinstance(part, nn.Module) else None
                out = train_few_shot(model, sx, sy, job.settings, query_x=qx, query_y=qy, seed=init_seed,
                                     use_gene_ewc=job.use_gene_ewc, train_prefixes=job.train_prefixes,
                                     curve_every=cfg.evaluate.curve_every, inherited=job.inherited_prefixes)
                if job.inherited is not None:
                    inherited = job.inherited
                elif hasattr(model, "inherited_params"):
                    inherited = model.inherited_params()
                else:
                    inherited = _n_params(model) - _n_params(model.classifier)
                done[m] = {"episode": i, "seed": seed, "accuracy": out["accuracy"], "curve": out["curve"],
                           "curve_epochs": out["curve_epochs"],
                           "train_seconds": out["train_seconds"], "params": _n_params(model),
                           "inherited_params": inherited, "lr": job.settings.lr,
                           "ece": calibration(model, qx, qy)["ece"]}
                if start is not None:
                    done[m]["start_sha256"] = start
                per[m].append(done[m])
    summary = summarize(merge_shards(all_gather_objects(dist, results)), cfg)
    summary["learning_rates"] = learning_rates(cfg, methods)
    if ctx.trained or skipped:
        summary["baselines"] = {**ctx.trained, **{m: {"skipped": why} for m, why in skipped.items()}}
    return summary


def method_lr(cfg: Config, method: str) -> float:
    """The few-shot learning rate of a trained method: its own (evaluate.method_lr), else individual.lr."""
    return cfg.evaluate.method_lr.get(method, cfg.individual.lr)


def learning_rates(cfg: Config, methods: list[str]) -> dict[str, Any]:
    """Which trained methods have their own lr and which share individual.lr: the report says so."""
    trained = [m for m in methods if METHODS.get(m).build is not None]
    return {"own": {m: cfg.evaluate.method_lr[m] for m in trained if m in cfg.evaluate.method_lr},
            "shared": [m for m in trained if m not in cfg.evaluate.method_lr], "individual_lr": cfg.individual.lr}


def _gene_of(ctx: MethodContext, names: list[str]) -> dict[str, Learngene]:
    return {m: METHODS.get(m).gene(ctx) for m in names}


# ------------------------------------------------------------------------------------------ built-in methods
def _learngene(ctx: MethodContext, ways: int, seed: int) -> Trained:
    return Trained(build_individual(ctx.gene, ctx.cfg.individual, ways, seed=seed), ctx.cfg.individual)


def _scratch(ctx: MethodContext, ways: int, seed: int) -> Trained:
    model = build_individual(ctx.gene, ctx.cfg.individual, ways, seed=seed, inherit=False)
    return Trained(model, replace(ctx.cfg.individual, inherit_mode="free"), use_gene_ewc=False, inherited=0,
                   inherited_prefixes=())


def _finetune(ctx: MethodContext, ways: int, seed: int) -> Trained:
    """The whole collective network with a new head, trained by the same recipe as the individual models (head,
    BatchNorm, augmentation, stages) with every pretrained layer free: what a user would pick instead."""
    with seeded(seed):
        model = _finetune_model(ctx.network, ways, ctx.cfg.individual.classifier)
    return Trained(model, replace(ctx.cfg.individual, inherit_mode="free"), use_gene_ewc=False,
                   inherited_prefixes=_all_but_classifier(model))


def _linear_probe(ctx: MethodContext, ways: int, seed: int) -> Trained:
    with seeded(seed):
        model = LinearProbe(copy.deepcopy(ctx.network), ways, ctx.cfg.individual.classifier)
    return Trained(model, ctx.cfg.individual, use_gene_ewc=False, train_prefixes=("classifier.",),
                   inherited_prefixes=("backbone.",))


def _all_but_classifier(model: nn.Module) -> tuple[str, ...]:
    return tuple(f"{name}." for name, _ in model.named_children() if name != "classifier")


def _ablation(name: str) -> Callable[[MethodContext, int, int], Trained]:
    def build(ctx: MethodContext, ways: int, seed: int) -> Trained:
        return Trained(build_individual(ctx.ablations[name], ctx.cfg.individual, ways, seed=seed), ctx.cfg.individual)

    return build


def _ablation_gene(name: str) -> Callable[[MethodContext], Learngene]:
    return lambda ctx: ctx.ablations[name]


def _ncm_collective(ctx: MethodContext) -> tuple[Callable, int]:
    return baselines.penultimate_features(ctx.network), baselines.feature_params(ctx.network)


def _ncm_gene(ctx: MethodContext) -> tuple[Callable, int]:
    last = ctx.gene.layer_names[-1]
    own = ctx.network.state_dict()
    if any(k not in own or not torch.equal(own[k], v) for k, v in ctx.gene.tensors.items()):
        raise ConfigError("ncm-gene computes the gene's features through the collective network, but "
                          "this gene's tensors are not that network's; evaluate it with its own run or "
                          "drop 'ncm-gene'")
    # pooled as the individual model's head pools them: the untrained gene with the same read-out
    features = baselines.block_features(ctx.network, last, pool=ctx.cfg.individual.pool)
    return features, baselines.feature_params(ctx.network, last)


def _stream_baseline(name: str, train: Callable) -> Callable[[MethodContext], tuple[Callable, int]]:
    """joint / protonet: trained once on the stream (rank 0), cached in the run, then frozen."""

    def features(ctx: MethodContext) -> tuple[Callable, int]:
        assert ctx.stream is not None
        architecture = ctx.network.config()
        key = baselines.cache_key(name, architecture, ctx.stream, ctx.spec, ctx.cfg, ctx.budget_images)
        where = Path(ctx.cache_dir) / name if ctx.cache_dir is not None else None

        def fit() -> tuple[nn.Module, dict[str, Any]]:
            return train(architecture, ctx.stream, ctx.spec, ctx.cfg, device=ctx.device,
                         progress=ctx.progress and ctx.dist.is_main, budget_images=ctx.budget_images)

        if ctx.dist.is_main or where is None:
            model, info = baselines.cached_baseline(where, key, fit)
        barrier(ctx.dist)
        if not ctx.dist.is_main and where is not None:
            model, info = baselines.load_baseline(where, key)
            info = {**info, "cached": True}
        # whether it came from the cache stays out of the report: a rerun must give the same report
        ctx.trained[name] = {**{k: v for k, v in info.items() if k != "cached"},
                             "dir": str(where) if where is not None else None}
        return baselines.penultimate_features(model), baselines.feature_params(model)

    return features


register_method("learngene", "the criterion's gene + fresh layers + new head, inherited layers kept near the "
                "gene (EWC)", build=_learngene, gene=lambda ctx: ctx.gene)
register_method("scratch", "the same architecture, randomly initialized", build=_scratch)
register_method("finetune", "the whole collective network with a new head, every weight trained", build=_finetune)
register_method("linear-probe", "frozen collective features + a new linear head", build=_linear_probe)
register_method("gene-bottom", "a gene of the same size from the first blocks", build=_ablation("gene-bottom"),
                gene=_ablation_gene("gene-bottom"))
register_method("gene-top", "a gene of the same size from the last blocks", build=_ablation("gene-top"),
                gene=_ablation_gene("gene-top"))
register_method("gene-random-layers", "a gene of the same size from another window",
                build=_ablation("gene-random-layers"), gene=_ablation_gene("gene-random-layers"))
register_method("ncm-collective", "cosine nearest class mean on the collective network's penultimate features",
                features=_ncm_collective)
register_method("ncm-gene", "cosine nearest class mean on the collective network's blocks up to the gene's last",
                features=_ncm_gene)
register_method("joint", "the same backbone trained on all stream classes at once (stream's image budget), NCM",
                features=_stream_baseline("joint", baselines.train_joint), needs_stream=True)
register_method("protonet", "the same backbone trained episodically on the stream's classes (same budget), NCM",
                features=_stream_baseline("protonet", baselines.train_protonet), needs_stream=True)

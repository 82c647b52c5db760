"""Individual models: fresh layers + an inherited learngene + a new head, trained on a few-shot target task.

Layout (stable state-dict prefixes): ``before.{i}`` fresh conv blocks, ``gene.{k}`` the inherited blocks,
``after.{i}`` fresh conv blocks, ``head.*`` hidden MLP, ``classifier.*`` the new C-way output layer.
Every target task starts from a *fresh* copy of the gene (the paper's code reused the fine-tuned model).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from learngene.artifacts import INDIVIDUAL
from learngene.collective.ewc import EWC
from learngene.collective.fisher import diagonal_fisher
from learngene.config import IndividualConfig
from learngene.engine import Batches, accuracy, fit
from learngene.errors import LearngeneError, ModelError
from learngene.models.heads import imprint
from learngene.models.individual import IndividualModel, plan_individual  # noqa: F401 - re-exported
from learngene.models.inputs import check_few_shot_inputs
from learngene.models.io import load_network, save_network
from learngene.runtime import seeded
from learngene.stats import calibration

GENE_PREFIX = "gene."


def weights_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` (in name order).

    Why: the evaluation records the fingerprint of the inherited weights each individual model *starts* from,
    so a test can prove against the gene file that no target task starts from a model trained on another one.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def build_individual(gene, spec: IndividualConfig, num_classes: int, *, seed: int = 0,
                     inherit: bool = True) -> IndividualModel:
    """A descendant around ``gene``; ``inherit=False`` gives the same architecture with random init (scratch)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(f"build_individual: num_classes = {num_classes!r}; a classifier needs at least 2 classes "
                         "(the number of classes of the target task)")
    return gene.build(num_classes, settings=spec, seed=seed, inherit=inherit)


@torch.no_grad()
def imprint_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Weight imprinting: each class's row is its mean support feature, so training starts from a sensible head
    (a cosine head starts as cosine nearest-class-mean: :func:`learngene.models.heads.imprint`).  An individual
    model's classifier reads ``forward_penultimate``; a timm model's head (a transformer descendant) its pooled
    features (``forward_head(..., pre_logits=True)``)."""
    was = model.training
    model.eval()
    if hasattr(model, "forward_penultimate"):
        feats, classifier = model.forward_penultimate(x), model.classifier
    else:
        feats, classifier = model.forward_head(model.forward_features(x), pre_logits=True), model.head
    model.train(was)
    imprint(classifier, feats, y)


def _is_inherited(name: str, inherited: tuple[str, ...]) -> bool:
    return name.startswith(inherited)


def _param_groups(model: nn.Module, s: IndividualConfig, train_prefixes: tuple[str, ...] | None,
                  inherited: tuple[str, ...], stage: str) -> list[dict[str, Any]]:
    """The trainable parameters of a stage, with their learning rates.

    ``stage="head"``: the inherited layers stay frozen; only the fresh layers and the head learn.
    ``stage="main"``: inherited layers learn too (at ``lr * lr_scale`` in ``lr_scale`` mode), unless frozen.
    """
    fresh, kept = [], []
    for name, p in model.named_parameters():
        trainable = train_prefixes is None or name.startswith(train_prefixes)
        if _is_inherited(name, inherited):
            trainable = trainable and stage == "main" and s.inherit_mode != "freeze"
            p.requires_grad_(trainable)
            if trainable:
                kept.append(p)
        else:
            p.requires_grad_(trainable)
            if trainable:
                fresh.append(p)
    groups = [{"params": fresh, "lr": s.lr}]
    if kept:
        groups.append({"params": kept, "lr": s.lr * (s.lr_scale if s.inherit_mode == "lr_scale" else 1.0)})
    return [g for g in groups if g["params"]]


def _set_train_mode(model: nn.Module, s: IndividualConfig, inherited: tuple[str, ...], stage: str) -> None:
    """Training mode, with the inherited BatchNorm layers kept on the gene's statistics when ``bn = frozen``
    and always in the head stage (where the gene is frozen whole)."""
    model.train()
    if s.bn == "frozen" or stage == "head":
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and _is_inherited(f"{name}.", inherited):
                module.eval()


def _augmenter(kind: str):
    """Augmentation of normalized batches: the transform sees the image minus its background (its per-channel
    minimum), so the pixels it brings in from outside the frame are background, not the mean grey."""
    if kind == "none":
        return None
    from learngene.data.transforms import BatchAugment

    aug = BatchAugment(kind)

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        bg = x.amin(dim=(2, 3), keepdim=True)
        return aug(x - bg, generator) + bg

    return apply


def train_few_shot(model: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor, s: IndividualConfig, *,
                   query_x: torch.Tensor | None = None, query_y: torch.Tensor | None = None, seed: int = 0,
                   use_gene_ewc: bool = True, train_prefixes: tuple[str, ...] | None = None,
                   curve_every: int = 1, inherited: tuple[str, ...] = (GENE_PREFIX,)) -> dict[str, Any]:
    """Train on the support set (settings: ``epochs``, ``lr``, ``inherit_mode``, ... of ``cfg.individual``);
    query accuracy every ``curve_every`` epochs and after the last (the convergence curve).

    The recipe builds on the gene rather than overwriting it: the head is imprinted with the class prototypes
    (``imprint``; with a cosine head the model starts as cosine nearest-class-mean on the inherited features),
    an optional first stage trains only what is fresh (``head_epochs``: the inherited layers frozen), then the
    main stage trains everything with the inherited layers held near the gene (``inherit_mode``: EWC, a lower
    lr, or frozen), their BatchNorm statistics kept (``bn = frozen``) and the support images augmented
    (``augment``). ``inherited``: the name prefixes of the inherited parameters (``gene.`` for an individual
    model; every layer but the head for a whole pretrained network).

    ``train_prefixes``: only parameters whose names start with one of them train (a linear probe:
    ``("classifier.",)``). Dropout draws come from ``seed`` without touching the caller's global RNG.
    """
    check_few_shot_inputs(model, support_x, support_y, query_x, query_y)
    with seeded(seed):
        return _train_few_shot(model, support_x, support_y, s, query_x, query_y, seed, use_gene_ewc,
                               train_prefixes, curve_every, tuple(inherited))


def _train_few_shot(model, support_x, support_y, s: IndividualConfig, query_x, query_y, seed: int,
                    use_gene_ewc: bool, train_prefixes, curve_every: int, inherited: tuple[str, ...]) -> dict[str, Any]:
    if s.imprint:
        imprint_classifier(model, support_x, support_y)
    has_inherited = any(_is_inherited(n, inherited) for n, _ in model.named_parameters())
    ewc = None
    if use_gene_ewc and s.inherit_mode == "ewc" and s.ewc_lambda > 0 and has_inherited:
        def select(name: str, p: nn.Parameter) -> bool:
            return _is_inherited(name, inherited)

        ewc = EWC(s.ewc_lambda, params=select)
        fisher = diagonal_fisher(model, support_x, support_y, params=select)
        top = max(float(f.max()) for f in fisher.values())
        if top > 0:  # the most important inherited weight gets weight 1: lambda * lr stays a stable step size
            fisher = {k: f / top for k, f in fisher.items()}
        ewc.set_reference(model, fisher)
    # one generator through both stages: the support set's order and augmentation draws continue across them
    batches = Batches(support_x, support_y, s.batch_size, augment=_augmenter(s.augment), seed=seed)
    # a model with nothing inherited (scratch) trains every epoch of the budget as one stage
    stages = [("head", s.head_epochs), ("main", s.epochs)] if has_inherited else [("main", s.head_epochs + s.epochs)]
    stages = [(stage, e) for stage, e in stages if e > 0]
    total = sum(e for _, e in stages)
    # the convergence curve: every curve_every epochs counted over both stages, and after the last
    points = {e for e in range(1, total + 1) if e == total or e % curve_every == 0} if query_x is not None else set()
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    device = next(model.parameters()).device
    curve: list[float] = []
    curve_epochs: list[int] = []
    seconds = 0.0
    done = 0  # epochs of the earlier stages
    for stage, epochs in stages:
        groups = _param_groups(model, s, train_prefixes, inherited, stage)
        if groups:
            res = fit(
                model, batches, epochs, device=device, what="individual model",
                optimizer=torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay),
                scheduler=torch.optim.lr_scheduler.CosineAnnealingLR if s.schedule == "cosine" and stage == "main"
                else None,
                loss=_few_shot_loss(ewc if stage == "main" else None),
                train_mode=lambda m, stage=stage: _set_train_mode(m, s, inherited, stage),
                evaluate=lambda m: accuracy_of(m, query_x, query_y),
                eval_epochs=[e - done for e in points if done < e <= done + epochs],
                nonfinite=lambda e, b, done=done: (
                    f"non-finite loss while training an individual model (epoch {done + e}, batch {b}); lower "
                    f"individual.lr (now {s.lr}) or individual.ewc_lambda (now {s.ewc_lambda})"),
            )
            curve += res["curve"]
            curve_epochs += [done + e for e in res["curve_epochs"]]
            seconds += res["train_seconds"]  # training only: the curve's query passes are not counted
        done += epochs
    for name, p in model.named_parameters():  # as the caller left them (a linear probe's backbone stays frozen)
        p.requires_grad_(flags[name])
    out: dict[str, Any] = {"curve": curve, "curve_epochs": curve_epochs, "train_seconds": seconds}
    if ewc is not None:
        out["ewc_penalty_final"] = float(ewc.penalty(model).detach())
    if query_x is not None:
        out["accuracy"] = curve[-1] if curve else accuracy_of(model, query_x, query_y)
        model.eval()  # as the last query pass leaves it
    return out


def _few_shot_loss(ewc: EWC | None):
    """Cross-entropy on the support batch, plus the EWC penalty that holds the inherited layers near the gene."""
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = F.cross_entropy(model(x), y)
        return value + ewc.penalty(model) if ewc is not None else value

    return loss


def accuracy_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    return accuracy(model, x, y, batch_size=batch_size)


PREPROCESSING_KEYS = ("image_size", "channels", "mean", "std")


def save_individual(model: IndividualModel, directory: str | os.PathLike[str], *, classes: Sequence[str],
                    preprocessing: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """Save a trained individual model so that ``learngene predict --model DIRECTORY`` can use it.

    ``classes`` name the outputs in order; ``preprocessing`` gives ``image_size``, ``channels``, ``mean`` and
    ``std`` and optionally ``invert`` and ``resize`` (a gene's ``input_spec``: its input contract); extra
    ``fields`` (provenance, accuracy, ...) go into ``model.json``.
    """
    classes = [str(c) for c in classes]
    if len(classes) != model.num_classes:
        raise ModelError(f"save_individual: {len(classes)} class names for a {model.num_classes}-way model")
    missing = [k for k in PREPROCESSING_KEYS if k not in preprocessing]
    if missing:
        raise ModelError(f"save_individual: preprocessing lacks {missing}; pass the gene's input_spec")
    pre = {k: preprocessing[k] for k in PREPROCESSING_KEYS}
    # how files are read (inversion, resize mode) travels with the model so that predict reads them the same way
    from learngene.data.contract import file_settings

    pre.update(file_settings(preprocessing))
    return save_network(model, directory, INDIVIDUAL, {"classes": classes, "preprocessing": pre, **fields})


def load_individual(directory: str | os.PathLike[str]) -> tuple[IndividualModel, dict[str, Any]]:
    """The individual model saved by :func:`save_individual` (eval mode) and its manifest, fully checked."""
    model, meta = load_network(directory, INDIVIDUAL)
    where = Path(directory)
    where = where / INDIVIDUAL.manifest if where.is_dir() else where
    classes, pre = meta.get("classes"), meta.get("preprocessing")
    if not isinstance(classes, list) or len(classes) != model.num_classes:
        raise INDIVIDUAL.error(
            f"{where}: 'classes' must list the model's {model.num_classes} class names; the manifest was edited or "
            "is corrupt, run `learngene inherit` again"
        )
    if not isinstance(pre, dict) or not set(PREPROCESSING_KEYS) <= set(pre):
        raise INDIVIDUAL.error(
            f"{where}: 'preprocessing' must give image_size, channels, mean and std; the manifest was edited or "
            "is corrupt, run `learngene inherit` again"
        )
    return model, meta


class PseudoTaskScorer:
    """Mean query accuracy of individual models built around a window of the collective network, on seeded
    pseudo-target tasks from classes the collective model never trained on (the validation criterion's score).

    ``scorer(layers)`` inherits the window's blocks; ``scorer(layers, inherit=False)`` trains the same
    architecture from scratch (the reference). Every call sees the same episodes and seeds.
    """

    def __init__(self, network: nn.Module, data, classes: Sequence[str], input_spec: dict[str, Any], cfg) -> None:
        c = cfg.criterion
        self.ways = min(cfg.stream.ways, len(classes))
        if self.ways < 2:
            raise LearngeneError(
                "the validation criterion needs at least 2 classes outside the stream and the novel split for "
                "pseudo-tasks; use criterion.name = 'gradient_stability' or a split with open-world classes"
            )
        self.network, self.input_spec, self.seed, self.shots = network, input_spec, cfg.seed, c.pseudo_shots
        self._data, self._classes, self._cfg = data, list(classes), cfg
        self.settings = replace(cfg.individual, epochs=c.pseudo_epochs)
        self._tensors: list | None = None  # drawn on first use: a criterion that never scores needs no episodes

    @property
    def tensors(self) -> list:
        if self._tensors is None:
            from learngene.data import sample_episodes

            c, cfg = self._cfg.criterion, self._cfg
            self.episodes = sample_episodes(self._data, self._classes, self.ways, c.pseudo_shots,
                                            cfg.evaluate.queries, c.pseudo_tasks, seed=cfg.seed + 7919)
            self._tensors = [ep.tensors(self._data, self.input_spec) for ep in self.episodes]
        return self._tensors

    def describe(self) -> str:
        return f"{len(self.tensors)} pseudo-target {self.ways}-way {self.shots}-shot tasks"

    def __call__(self, layers: Sequence[str], inherit: bool = True) -> float:
        from learngene.gene import Learngene

        gene = Learngene.from_model(self.network, list(layers), input_spec=self.input_spec)
        accs = []
        for i, (sx, sy, qx, qy) in enumerate(self.tensors):
            model = build_individual(gene, self.settings, self.ways, seed=self.seed + i, inherit=inherit)
            out = train_few_shot(model, sx, sy, self.settings, query_x=qx, query_y=qy, seed=i, use_gene_ewc=inherit,
                                 inherited=(GENE_PREFIX,) if inherit else ())
            accs.append(out["accuracy"])
        return sum(accs) / len(accs)


def read_support_query(support_dir: str | os.PathLike[str], query_dir: str | os.PathLike[str] | None,
                       input_spec: Mapping[str, Any], *, invert: bool | str | None = None,
                       resize: str | None = None, warnings: list[str] | None = None, normalized: bool = True):
    """A user's ImageFolder support set (and optional query set), read as the gene's inputs.

    Files are read by the gene's input contract (:mod:`learngene.data.contract`: size, channels, the recorded
    inversion and resize mode; ``invert``/``resize`` override them) and normalized with its statistics
    (``normalized=False``: uint8, for per-batch augmentation). When the support images still look unlike the
    gene's data (e.g. an inverted polarity), a warning names the cause and the fix; it is logged and appended to
    ``warnings`` when given.
    Returns ``(classes, support_x, support_y, query_x, query_y)`` (query tensors None without a query folder);
    labels follow the support folder's sorted class names.
    """
    from learngene.data.contract import file_settings, read_folder, warn_if_unlike
    from learngene.data.transforms import normalize
    from learngene.errors import DataError

    how = file_settings(input_spec, invert, resize)
    support = read_folder(support_dir, input_spec, invert=how["invert"], resize=how["resize"])
    classes = list(support.classes)
    if len(classes) < 2:
        raise DataError(
            f"support folder {support_dir} has {len(classes)} class folder ({', '.join(classes)}); a classifier "
            "needs at least 2 classes, one subfolder of images per class"
        )
    message = warn_if_unlike(support.images, input_spec, invert_used=how["invert"])
    if message and warnings is not None:
        warnings.append(message)
    x = normalize(support.images, input_spec["mean"], input_spec["std"]) if normalized else support.images
    y = support.labels.long()
    qx = qy = None
    if query_dir is not None:
        query = read_folder(query_dir, input_spec, invert=how["invert"], resize=how["resize"])
        extra = [c for c in query.classes if c not in classes]
        if extra:
            raise DataError(f"query folder {query_dir} has classes {extra} that the support folder {support_dir} lacks")
        qx = normalize(query.images, input_spec["mean"], input_spec["std"]) if normalized else query.images
        qy = torch.tensor([classes.index(query.classes[int(i)]) for i in query.labels])
    return classes, x, y, qx, qy


def inherit(gene, support_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
            query_dir: str | os.PathLike[str] | None = None, settings: IndividualConfig | None = None,
            seed: int = 0, compare_scratch: bool = False, curve_every: int = 1, invert: bool | str | None = None,
            resize: str | None = None) -> dict[str, Any]:
    """`learngene inherit` as a function: an individual model around ``gene`` trained on a user's support folder.

    Saves it to ``out`` (readable by ``learngene predict``) when given. ``compare_scratch`` also trains the same
    architecture from random initialization with the same settings and seed on the same support set (the
    reference a user wants before trusting a gene). Returns ``{"classes", "images", "accuracy"?, "scratch"?,
    "params", "inherited_params"}``.
    """
    from learngene.data.contract import file_settings

    settings = settings or IndividualConfig()
    notes: list[str] = []
    classes, x, y, qx, qy = read_support_query(support_dir, query_dir, gene.input_spec, invert=invert,
                                               resize=resize, warnings=notes)
    reading = {**gene.input_spec, **file_settings(gene.input_spec, invert, resize)}
    model = build_individual(gene, settings, len(classes), seed=seed)
    result = train_few_shot(model, x, y, settings, query_x=qx, query_y=qy, seed=seed, curve_every=curve_every)
    out_info: dict[str, Any] = {"classes": classes, "images": len(y), "params": sum(p.numel() for p in model.parameters()),
                                "inherited_params": model.inherited_params(), "warnings": notes,
                                "reading": {k: reading[k] for k in ("invert", "resize")}}
    if "accuracy" in result:
        out_info["accuracy"], out_info["query_images"] = result["accuracy"], len(qy)
        out_info["calibration"] = calibration(model, qx, qy)  # scores vs accuracy: they are not probabilities
    if compare_scratch:
        scratch = build_individual(gene, settings, len(classes), seed=seed, inherit=False)
        ref = train_few_shot(scratch, x, y, replace(settings, inherit_mode="free"), query_x=qx, query_y=qy,
                             seed=seed, use_gene_ewc=False, curve_every=curve_every, inherited=())
        out_info["scratch"] = {"accuracy": ref.get("accuracy"), "params": sum(p.numel() for p in scratch.parameters())}
    if out is not None:
        save_individual(
            model, out, classes=classes, preprocessing=reading,
            gene={"layers": gene.layer_names, "provenance": gene.manifest().get("provenance")},
            support={"dir": str(Path(support_dir).resolve()), "images": len(y)},
            params=out_info["params"], inherited_params=out_info["inherited_params"],
            query_accuracy=result.get("accuracy"), query_calibration=out_info.get("calibration"),
            scratch=out_info.get("scratch"),
        )
    return out_info

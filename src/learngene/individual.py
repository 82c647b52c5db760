"""Individual models: fresh layers + an inherited learngene + a new head, trained on a few-shot target task.

Layout (stable state-dict prefixes): ``before.{i}`` fresh conv blocks, ``gene.{k}`` the inherited blocks,
``after.{i}`` fresh conv blocks, ``head.*`` hidden MLP, ``classifier.*`` the new C-way output layer.
Every target task starts from a *fresh* copy of the gene (the paper's code reused the fine-tuned model).
"""

from __future__ import annotations

import hashlib
import os
import time
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
from learngene.engine import accuracy
from learngene.errors import LearngeneError, ModelError, NonFiniteError
from learngene.models.individual import IndividualModel, plan_individual  # noqa: F401 - re-exported
from learngene.models.io import load_network, save_network
from learngene.runtime import seeded

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
    return gene.build(num_classes, settings=spec, seed=seed, inherit=inherit)


@torch.no_grad()
def imprint_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Weight imprinting: each class's row is its mean support feature, so training starts from a sensible head."""
    was = model.training
    model.eval()
    feats = model.forward_penultimate(x)
    model.train(was)
    n = model.classifier.out_features
    means = torch.stack([feats[y == c].mean(0) for c in range(n)])
    norm = means.norm(dim=1, keepdim=True).clamp_min(1e-6)
    scale = 1.0 / norm.mean()
    model.classifier.weight.copy_(means * scale)
    model.classifier.bias.copy_(-0.5 * (means * scale * means).sum(1))


def _param_groups(model: nn.Module, s: IndividualConfig, train_prefixes: tuple[str, ...] | None) -> list[dict[str, Any]]:
    inherited, rest = [], []
    for name, p in model.named_parameters():
        if train_prefixes is not None and not name.startswith(train_prefixes):
            p.requires_grad_(False)
            continue
        if name.startswith(GENE_PREFIX):
            if s.inherit_mode == "freeze":
                p.requires_grad_(False)
                continue
            inherited.append(p)
        else:
            rest.append(p)
    groups = [{"params": rest, "lr": s.lr}]
    if inherited:
        groups.append({"params": inherited, "lr": s.lr * (s.lr_scale if s.inherit_mode == "lr_scale" else 1.0)})
    return [g for g in groups if g["params"]]


def train_few_shot(model: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor, s: IndividualConfig, *,
                   query_x: torch.Tensor | None = None, query_y: torch.Tensor | None = None, seed: int = 0,
                   use_gene_ewc: bool = True, train_prefixes: tuple[str, ...] | None = None,
                   curve_every: int = 1) -> dict[str, Any]:
    """Train on the support set (settings: ``epochs``, ``lr``, ``inherit_mode``, ... of ``cfg.individual``);
    query accuracy every ``curve_every`` epochs and after the last (the convergence curve).

    ``train_prefixes``: only parameters whose names start with one of them train (a linear probe:
    ``("classifier.",)``). Dropout draws come from ``seed`` without touching the caller's global RNG.
    """
    with seeded(seed):
        return _train_few_shot(model, support_x, support_y, s, query_x, query_y, seed, use_gene_ewc,
                               train_prefixes, curve_every)


def _train_few_shot(model, support_x, support_y, s: IndividualConfig, query_x, query_y, seed: int,
                    use_gene_ewc: bool, train_prefixes, curve_every: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    if s.imprint:
        imprint_classifier(model, support_x, support_y)
    ewc = None
    if use_gene_ewc and s.inherit_mode == "ewc" and s.ewc_lambda > 0 and any(
        n.startswith(GENE_PREFIX) for n, _ in model.named_parameters()
    ):
        def select(name: str, p: nn.Parameter) -> bool:
            return name.startswith(GENE_PREFIX)

        ewc = EWC(s.ewc_lambda, params=select)
        fisher = diagonal_fisher(model, support_x, support_y, params=select)
        top = max(float(f.max()) for f in fisher.values())
        if top > 0:  # the most important inherited weight gets weight 1: lambda * lr stays a stable step size
            fisher = {k: f / top for k, f in fisher.items()}
        ewc.set_reference(model, fisher)
    opt = torch.optim.SGD(_param_groups(model, s, train_prefixes), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    curve: list[float] = []
    curve_epochs: list[int] = []
    eval_seconds = 0.0
    tick = time.perf_counter()
    n = len(support_x)
    for _epoch in range(s.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, s.batch_size):
            idx = order[start : start + s.batch_size]
            loss = F.cross_entropy(model(support_x[idx]), support_y[idx])
            if ewc is not None:
                loss = loss + ewc.penalty(model)
            if not torch.isfinite(loss.detach()):
                raise NonFiniteError(
                    f"non-finite loss while training an individual model (epoch {_epoch}, batch {start // s.batch_size}); "
                    f"lower individual.lr (now {s.lr}) or individual.ewc_lambda (now {s.ewc_lambda})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        last = _epoch + 1 == s.epochs
        if query_x is not None and (last or (_epoch + 1) % curve_every == 0):
            t_eval = time.perf_counter()
            curve.append(accuracy_of(model, query_x, query_y))
            curve_epochs.append(_epoch + 1)
            eval_seconds += time.perf_counter() - t_eval
    seconds = time.perf_counter() - tick - eval_seconds  # training only: the curve's query passes are not counted
    out: dict[str, Any] = {"curve": curve, "curve_epochs": curve_epochs, "train_seconds": seconds}
    if ewc is not None:
        out["ewc_penalty_final"] = float(ewc.penalty(model).detach())
    if query_x is not None:
        out["accuracy"] = curve[-1] if curve else accuracy_of(model, query_x, query_y)
    return out


def accuracy_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    return accuracy(model, x, y, batch_size=batch_size)


PREPROCESSING_KEYS = ("image_size", "channels", "mean", "std")


def save_individual(model: IndividualModel, directory: str | os.PathLike[str], *, classes: Sequence[str],
                    preprocessing: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """Save a trained individual model so that ``learngene predict --model DIRECTORY`` can use it.

    ``classes`` name the outputs in order; ``preprocessing`` gives ``image_size``, ``channels``, ``mean`` and
    ``std`` (a gene's ``input_spec``); extra ``fields`` (provenance, accuracy, ...) go into ``model.json``.
    """
    classes = [str(c) for c in classes]
    if len(classes) != model.num_classes:
        raise ModelError(f"save_individual: {len(classes)} class names for a {model.num_classes}-way model")
    missing = [k for k in PREPROCESSING_KEYS if k not in preprocessing]
    if missing:
        raise ModelError(f"save_individual: preprocessing lacks {missing}; pass the gene's input_spec")
    pre = {k: preprocessing[k] for k in PREPROCESSING_KEYS}
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
            out = train_few_shot(model, sx, sy, self.settings, query_x=qx, query_y=qy, seed=i, use_gene_ewc=inherit)
            accs.append(out["accuracy"])
        return sum(accs) / len(accs)


def read_support_query(support_dir: str | os.PathLike[str], query_dir: str | os.PathLike[str] | None,
                       input_spec: Mapping[str, Any], *, normalized: bool = True):
    """A user's ImageFolder support set (and optional query set), read as the gene's inputs.

    Returns ``(classes, support_x, support_y, query_x, query_y)`` (query tensors None without a query folder),
    normalized with the gene's statistics (``normalized=False``: uint8, for per-batch augmentation); labels
    follow the support folder's sorted class names.
    """
    from learngene.data.images import read_image_folder
    from learngene.data.transforms import normalize
    from learngene.errors import DataError

    size, channels = input_spec["image_size"], input_spec["channels"]
    support = read_image_folder(support_dir, image_size=size, channels=channels)
    classes = list(support.classes)
    if len(classes) < 2:
        raise DataError(
            f"support folder {support_dir} has {len(classes)} class folder ({', '.join(classes)}); a classifier "
            "needs at least 2 classes, one subfolder of images per class"
        )
    x = normalize(support.images, input_spec["mean"], input_spec["std"]) if normalized else support.images
    y = support.labels.long()
    qx = qy = None
    if query_dir is not None:
        query = read_image_folder(query_dir, image_size=size, channels=channels)
        extra = [c for c in query.classes if c not in classes]
        if extra:
            raise DataError(f"query folder {query_dir} has classes {extra} that the support folder {support_dir} lacks")
        qx = normalize(query.images, input_spec["mean"], input_spec["std"]) if normalized else query.images
        qy = torch.tensor([classes.index(query.classes[int(i)]) for i in query.labels])
    return classes, x, y, qx, qy


def inherit(gene, support_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
            query_dir: str | os.PathLike[str] | None = None, settings: IndividualConfig | None = None,
            seed: int = 0, compare_scratch: bool = False, curve_every: int = 1) -> dict[str, Any]:
    """`learngene inherit` as a function: an individual model around ``gene`` trained on a user's support folder.

    Saves it to ``out`` (readable by ``learngene predict``) when given. ``compare_scratch`` also trains the same
    architecture from random initialization with the same settings and seed on the same support set (the
    reference a user wants before trusting a gene). Returns ``{"classes", "images", "accuracy"?, "scratch"?,
    "params", "inherited_params"}``.
    """
    settings = settings or IndividualConfig()
    classes, x, y, qx, qy = read_support_query(support_dir, query_dir, gene.input_spec)
    model = build_individual(gene, settings, len(classes), seed=seed)
    result = train_few_shot(model, x, y, settings, query_x=qx, query_y=qy, seed=seed, curve_every=curve_every)
    out_info: dict[str, Any] = {"classes": classes, "images": len(y), "params": sum(p.numel() for p in model.parameters()),
                                "inherited_params": model.inherited_params()}
    if "accuracy" in result:
        out_info["accuracy"], out_info["query_images"] = result["accuracy"], len(qy)
    if compare_scratch:
        scratch = build_individual(gene, settings, len(classes), seed=seed, inherit=False)
        ref = train_few_shot(scratch, x, y, replace(settings, inherit_mode="free"), query_x=qx, query_y=qy,
                             seed=seed, use_gene_ewc=False, curve_every=curve_every)
        out_info["scratch"] = {"accuracy": ref.get("accuracy"), "params": sum(p.numel() for p in scratch.parameters())}
    if out is not None:
        save_individual(
            model, out, classes=classes, preprocessing=gene.input_spec,
            gene={"layers": gene.layer_names, "provenance": gene.manifest().get("provenance")},
            support={"dir": str(Path(support_dir).resolve()), "images": len(y)},
            params=out_info["params"], inherited_params=out_info["inherited_params"],
            query_accuracy=result.get("accuracy"), scratch=out_info.get("scratch"),
        )
    return out_info

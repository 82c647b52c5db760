"""Reference points for the individual models: nearest-class-mean on frozen features, and two backbones
trained on the stream's classes with the stream's own image budget (``joint`` and ``protonet``).

Why these: a learngene claims that part of the collective network carries knowledge worth inheriting.
Nearest class mean (NCM) on frozen features measures how much a representation gives a new task with no
training at all; the ``joint`` backbone (the same architecture trained on every stream class at once, no
forgetting) is what the stream's data and compute could buy without the continual setting, so
``ncm-collective - joint`` is the price of learning the classes one task at a time; ``protonet`` is the
standard few-shot learner on the same data and budget.

NCM here is cosine NCM: features are L2-normalized, a class's mean is the mean of its normalized support
features (normalized again), and a query goes to the class of highest cosine similarity.

The trained backbones are cached in the run directory (safetensors + a JSON manifest, written atomically;
loading never unpickles) under a key of everything that determines them, so reruns of ``evaluate`` reuse them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learngene.artifacts import BASELINE
from learngene.config import Config, parse_setting
from learngene.data import Episode, ImageSet, TaskStream
from learngene.data.transforms import BatchAugment, normalize
from learngene.engine import Batches, batch_of, fit
from learngene.errors import ConfigError
from learngene.models import model_from_config
from learngene.models.cache import cached_network, load_cached
from learngene.models.io import save_network
from learngene.runtime import derive_seed, generator, seeded
from learngene.safeio import sha256_bytes

__all__ = [
    "FeatureFn",
    "block_features",
    "cached_baseline",
    "feature_params",
    "joint_indices",
    "joint_plan",
    "load_baseline",
    "ncm_accuracy",
    "ncm_episodes",
    "ncm_predict",
    "penultimate_features",
    "protonet_plan",
    "protonet_shots",
    "save_baseline",
    "stream_image_budget",
    "train_joint",
    "train_protonet",
]


FeatureFn = Callable[[Tensor], Tensor]


# ------------------------------------------------------------------------------------------------ NCM


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x.flatten(1).float(), dim=1)


@torch.no_grad()
def ncm_predict(support_feats: Tensor, support_y: Tensor, query_feats: Tensor) -> Tensor:
    """Labels (taken from ``support_y``) of the class means of highest cosine similarity to each query."""
    classes = torch.unique(support_y.cpu())
    z = _unit(support_feats.cpu())
    means = torch.stack([z[support_y.cpu() == c].mean(0) for c in classes])
    sims = _unit(query_feats.cpu()) @ F.normalize(means, dim=1).T
    return classes[sims.argmax(1)]


@torch.no_grad()
def _embed(features: FeatureFn, x: Tensor, batch_size: int) -> Tensor:
    return torch.cat([features(x[i : i + batch_size]).cpu() for i in range(0, len(x), batch_size)])


def ncm_accuracy(
    features: FeatureFn, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, batch_size: int = 256
) -> float:
    """Cosine nearest-class-mean accuracy on the queries, with ``features`` frozen (no training).

    ``features`` maps a batch of (normalized) images to feature vectors; see :func:`penultimate_features` and
    :func:`block_features`. Labels may be any integers; each support label is one class.
    """
    pred = ncm_predict(_embed(features, sx, batch_size), sy, _embed(features, qx, batch_size))
    return int((pred == qy.cpu()).sum()) / len(qy) if len(qy) else float("nan")


def ncm_episodes(
    features: FeatureFn,
    data: ImageSet,
    episodes: Sequence[Episode],
    spec: dict[str, Any],
    batch_size: int = 256,
) -> list[float]:
    """NCM accuracy of ``features`` on each episode (images normalized with ``spec``'s mean and std).

    Why here: scoring a representation on pseudo-tasks (e.g. to tune the collective model) needs exactly the
    evaluation's NCM, on the same preprocessing.
    """
    out = []
    for ep in episodes:
        sx = normalize(data.images[ep.support_indices], spec["mean"], spec["std"])
        qx = normalize(data.images[ep.query_indices], spec["mean"], spec["std"])
        out.append(
            ncm_accuracy(features, sx, ep.support_labels.long(), qx, ep.query_labels.long(), batch_size)
        )
    return out


def _device_of(network: nn.Module) -> torch.device:
    p = next(network.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _frozen(network: nn.Module, fn: Callable[[Tensor], Tensor]) -> FeatureFn:
    """Run ``fn`` without gradients in eval mode, restoring the network's mode (it may still be training)."""

    @torch.no_grad()
    def features(x: Tensor) -> Tensor:
        was = network.training
        network.eval()
        try:
            return fn(x.to(_device_of(network))).flatten(1)
        finally:
            network.train(was)

    return features


def penultimate_features(network: nn.Module) -> FeatureFn:
    """The classifier's input of ``network`` (the whole network but its output layer), frozen."""
    return _frozen(network, network.forward_penultimate)


def _block_index(network: nn.Module, last_layer: str) -> int:
    names = [f"features.{n}" for n, _ in network.features.named_children()]
    if last_layer not in names:
        raise ConfigError(f"{last_layer} is not a conv block of the collective network ({', '.join(names)})")
    return names.index(last_layer)


def block_features(network: nn.Module, last_layer: str, pool: str = "flatten") -> FeatureFn:
    """Output of ``network``'s conv blocks from the input up to and including ``last_layer``, flattened
    (``pool="flatten"``) or globally average-pooled (``pool="avg"``).

    Why through the collective network: a gene is a window of its blocks, so the features "at the gene" are
    what the collective network computes there from the image; no fresh layers are involved.
    """
    if pool not in ("flatten", "avg"):
        raise ConfigError(f"block_features: pool must be 'flatten' or 'avg', got {pool!r}")
    stop = _block_index(network, last_layer) + 1
    if pool == "avg":
        return _frozen(network, lambda x: network.features[:stop](x).mean(dim=(2, 3)))
    return _frozen(network, lambda x: network.features[:stop](x))


def feature_params(network: nn.Module, last_layer: str | None = None) -> int:
    """Parameters that compute the features: blocks up to ``last_layer``, or everything but the classifier."""
    if last_layer is not None:
        stop = _block_index(network, last_layer) + 1
        return sum(p.numel() for p in network.features[:stop].parameters())
    head = sum(p.numel() for p in network.classifier.parameters())
    return sum(p.numel() for p in network.parameters()) - head


# ------------------------------------------------------------------------------------------ budgets


def stream_image_budget(stream: TaskStream, epochs: int) -> int:
    """Training images the collective model processed: each task's training images, ``epochs`` times."""
    return sum(len(exp.train_indices) for exp in stream) * int(epochs)


def joint_indices(stream: TaskStream) -> Tensor:
    """Every training image of the stream once (a class met in several tasks contributes its images once)."""
    return torch.unique(torch.cat([exp.train_indices for exp in stream]))


def _budget(stream: TaskStream, cfg: Config, budget_images: int | None) -> int:
    return int(budget_images) if budget_images is not None else stream_image_budget(stream, cfg.train.epochs)


def joint_plan(stream: TaskStream, cfg: Config, budget_images: int | None = None) -> dict[str, Any]:
    """Epochs of joint training: the stream's image budget spread over the joint set, unless configured.

    ``budget_images`` replaces the budget computed from the stream (e.g. the collective run's measured count
    when exemplar replay made it process more than each task's own images).
    """
    budget = _budget(stream, cfg, budget_images)
    n = len(joint_indices(stream))
    epochs = cfg.baseline.joint_epochs or max(1, round(budget / n))
    return {
        "budget_images": budget,
        "train_images": n,
        "epochs": epochs,
        "images_processed": epochs * n,
        "classes": stream.num_classes,
        "from_budget": cfg.baseline.joint_epochs is None,
    }


def _class_pools(stream: TaskStream) -> dict[int, Tensor]:
    idx = joint_indices(stream)
    y = stream.targets(idx)
    return {c: idx[y == c] for c in range(stream.num_classes)}


def protonet_shots(cfg: Config) -> list[int]:
    """The support sizes of prototypical training: ``baseline.protonet_shots``, else every shot count the
    evaluation uses (episodes take them in turn), so the model is trained at each shot it is evaluated at."""
    if cfg.baseline.protonet_shots is not None:
        return [cfg.baseline.protonet_shots]
    return sorted({parse_setting(s)[1] for s in cfg.evaluate.settings})


def protonet_plan(stream: TaskStream, cfg: Config, budget_images: int | None = None) -> dict[str, Any]:
    """Episodes of prototypical training: as many optimizer steps as the joint baseline takes (one episode is
    one step), unless ``baseline.protonet_episodes`` is set; shots from :func:`protonet_shots`."""
    b = cfg.baseline
    shots = protonet_shots(cfg)
    per_class = max(shots) + b.protonet_queries
    eligible = [c for c, pool in _class_pools(stream).items() if len(pool) >= per_class]
    if len(eligible) < 2:
        raise ConfigError(
            f"protonet needs at least 2 stream classes with {per_class} training images "
            f"(baseline.protonet_shots, or the largest evaluated shot, + baseline.protonet_queries), found "
            f"{len(eligible)}; lower them or drop 'protonet' from evaluate.methods"
        )
    ways = min(b.protonet_ways, len(eligible))
    joint = joint_plan(stream, cfg, budget_images)
    joint_steps = joint["epochs"] * math.ceil(joint["train_images"] / cfg.train.batch_size)
    episodes = b.protonet_episodes or joint_steps
    processed = sum(ways * (shots[e % len(shots)] + b.protonet_queries) for e in range(episodes))
    return {
        "budget_images": joint["budget_images"],
        "ways": ways,
        "shots": shots,
        "queries": b.protonet_queries,
        "episodes": episodes,
        "joint_steps": joint_steps,
        "images_processed": processed,
        "eligible_classes": len(eligible),
        "scale": b.protonet_scale,
        "lr": b.protonet_lr if b.protonet_lr is not None else cfg.train.lr,
        "from_budget": b.protonet_episodes is None,
    }


# ----------------------------------------------------------------------------------------- training


def _fresh_backbone(architecture: dict[str, Any], seed: int, device: torch.device | str) -> nn.Module:
    with seeded(seed):
        return model_from_config(architecture).to(device)


def _sgd(model: nn.Module, cfg: Config, lr: float | None = None) -> torch.optim.Optimizer:
    t = cfg.train
    return torch.optim.SGD(model.parameters(), lr=t.lr if lr is None else lr, momentum=t.momentum,
                           weight_decay=t.weight_decay)


def _cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))


def _fit(model: nn.Module, batches, epochs: int, cfg: Config, what: str, where: Callable[[int, int], str], *,
         seed: int, device: torch.device | str, progress: bool, lr: float | None = None,
         loss=None) -> dict[str, Any]:
    """SGD + cosine per step with :func:`learngene.engine.fit`; every epoch's dropout draws from its own seed
    (the caller's global RNG is left alone)."""
    return fit(model, batches, epochs, loss=loss, optimizer=_sgd(model, cfg, lr), scheduler=_cosine,
               device=device, seed=lambda e: derive_seed(seed, "dropout", e) % (2**31), what=f"{what} baseline",
               nonfinite=lambda e, b: f"non-finite loss while training the {what} baseline ({where(e, b)}); "
                                      "lower train.lr",
               progress=progress, desc=f"{what} baseline")


def _summary(plan: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    last = res["step_loss"][-10:]
    return {**plan, "steps": len(res["step_loss"]), "final_loss": sum(last) / max(len(last), 1),
            "train_seconds": res["train_seconds"]}


def train_joint(
    architecture: dict[str, Any],
    stream: TaskStream,
    spec: dict[str, Any],
    cfg: Config,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    budget_images: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone trained on all stream classes at once (cross-entropy over global labels), SGD + cosine.

    Same optimizer settings, batch size and augmentation as the collective model; ``joint_plan`` sets the
    epochs. Epoch ``e``'s order and augmentation come from its own seed.
    """
    plan = joint_plan(stream, cfg, budget_images)
    seed = derive_seed(cfg.seed, "baseline", "joint") % (2**31)
    model = _fresh_backbone(architecture, seed, device)
    idx = joint_indices(stream)
    batches = Batches(stream.data.images[idx], stream.targets(idx), cfg.train.batch_size, spec=spec,
                      augment=BatchAugment(cfg.data.augment), device=device,
                      epoch_seed=lambda e: derive_seed(seed, "epoch", e))
    res = _fit(model, batches, plan["epochs"], cfg, "joint", lambda e, b: f"epoch {e}, batch {b}", seed=seed,
               device=device, progress=progress)
    return model.cpu().eval(), _summary(plan, res)


class _ProtoEpisodes:
    """One training episode per epoch of :func:`~learngene.engine.fit`: ``ways`` classes drawn from ``pools``,
    ``shots + queries`` images of each (episode ``e`` takes ``shots[e % len(shots)]``), support images first
    (class by class), then the queries; every draw from one generator seeded once."""

    def __init__(self, images: Tensor, pools: dict[int, Tensor], ways: int, shots: list[int], queries: int,
                 spec: dict[str, Any], augment: BatchAugment, seed: int, device: torch.device | str) -> None:
        self.images, self.pools, self.classes = images, pools, sorted(pools)
        self.ways, self.shots, self.queries, self.spec, self.augment = ways, shots, queries, spec, augment
        self.device = device
        self.generator = generator(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen, shots = self.generator, self.shots[self.epoch % len(self.shots)]
        chosen = [self.classes[i] for i in torch.randperm(len(self.classes), generator=gen)[: self.ways].tolist()]
        picks = [self.pools[c][torch.randperm(len(self.pools[c]), generator=gen)[: shots + self.queries]]
                 for c in chosen]
        order = torch.cat([p[:shots] for p in picks] + [p[shots:] for p in picks])
        labels = torch.arange(self.ways)
        y = torch.cat([labels.repeat_interleave(shots), labels.repeat_interleave(self.queries)])
        yield batch_of(self.images, order, augment=self.augment, generator=gen, spec=self.spec,
                       device=self.device), y


def _prototype_loss(ways: int, queries: int, scale: float):
    """Cross-entropy of ``scale`` x the cosine of each query to its episode's prototypes (the means of the
    normalized support features): the rule the evaluation's NCM applies."""

    def loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        support = len(y) - ways * queries
        feats = F.normalize(model.forward_penultimate(x), dim=1)
        protos = F.normalize(feats[:support].view(ways, support // ways, -1).mean(1), dim=1)
        return F.cross_entropy(scale * feats[support:] @ protos.T, y[support:])

    return loss


def train_protonet(
    architecture: dict[str, Any],
    stream: TaskStream,
    spec: dict[str, Any],
    cfg: Config,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    budget_images: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Prototypical training of the backbone on episodes from the stream's classes.

    Prototypes are the means of the support features (the classifier's input); logits are
    ``baseline.protonet_scale`` times the cosine similarity of a query to each prototype, which is the rule
    the evaluation's NCM applies, so training and evaluation use one metric. Episode ``e`` has
    ``shots[e % len(shots)]`` support images per class (``protonet_plan``); SGD at ``baseline.protonet_lr``.
    """
    plan = protonet_plan(stream, cfg, budget_images)
    seed = derive_seed(cfg.seed, "baseline", "protonet") % (2**31)
    model = _fresh_backbone(architecture, seed, device)
    ways, queries = plan["ways"], plan["queries"]
    pools = {c: p for c, p in _class_pools(stream).items() if len(p) >= max(plan["shots"]) + queries}
    episodes = _ProtoEpisodes(stream.data.images, pools, ways, plan["shots"], queries, spec,
                              BatchAugment(cfg.data.augment), derive_seed(seed, "episodes"), device)
    res = _fit(model, episodes, plan["episodes"], cfg, "protonet", lambda e, b: f"episode {e}", seed=seed,
               device=device, progress=progress, lr=plan["lr"], loss=_prototype_loss(ways, queries, plan["scale"]))
    return model.cpu().eval(), _summary(plan, res)


# -------------------------------------------------------------------------------------------- cache


def cache_key(
    name: str,
    architecture: dict[str, Any],
    stream: TaskStream,
    spec: dict[str, Any],
    cfg: Config,
    budget_images: int | None = None,
) -> dict[str, Any]:
    """Everything a trained baseline depends on; a cached model is reused only under an equal key."""
    tasks = [
        {"classes": list(e.classes), "train": sha256_bytes(e.train_indices.numpy().tobytes())} for e in stream
    ]
    t = cfg.train
    key = {
        "name": name,
        "seed": cfg.seed,
        "architecture": architecture,
        "input_spec": spec,
        "data": {"name": stream.data.name, "images": len(stream.data), "augment": cfg.data.augment},
        "class_order": list(stream.class_order),
        "tasks": tasks,
        "train": {
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "lr": t.lr,
            "momentum": t.momentum,
            "weight_decay": t.weight_decay,
        },
        "baseline": {k: v for k, v in asdict(cfg.baseline).items() if k.startswith(f"{name}_")},
        "shots": protonet_shots(cfg) if name == "protonet" else None,
        "budget_images": _budget(stream, cfg, budget_images),
    }
    return json.loads(json.dumps(key))  # the form it takes after a round trip through the manifest


def save_baseline(directory: str | Path, model: nn.Module, key: dict[str, Any], info: dict[str, Any]) -> Path:
    """Cache a trained baseline as a network artifact, with the key it was trained under."""
    save_network(model, directory, BASELINE, {"key": key, "info": info})
    return Path(directory)


def load_baseline(
    directory: str | Path, key: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a cached baseline (checked like every artifact and, if given, against ``key``)."""
    return load_cached(directory, BASELINE, key)


def cached_baseline(
    directory: str | Path | None, key: dict[str, Any], train: Callable[[], tuple[nn.Module, dict[str, Any]]]
) -> tuple[nn.Module, dict[str, Any]]:
    """The cached model under ``key`` if ``directory`` holds one, else ``train()`` it and cache it there
    (:func:`learngene.models.cache.cached_network`: a missing, stale or damaged cache is retrained)."""
    return cached_network(directory, BASELINE, key, train, what="baseline")

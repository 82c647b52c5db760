"""The transformer-learngene path end to end (``paradigm = "vit"``), and ``inherit`` for transformer genes.

:func:`run_vit`: source classes -> ancestry ViT (recording each block's gradient share) -> two learngenes:

* **Heur-LG**: a window of contiguous ancestry blocks chosen by ``vit.heur_criterion`` -- ``gradient_stability``
  (the blocks whose share of the gradient stays lowest and steadiest through the ancestry's training) or
  ``validation`` (the window whose stacked descendants learn pseudo-tasks of open-world classes best);
* **TLEG**: an auxiliary net built by ``vit.rule`` (``linear``: block l of L = theta_A + (l/L) theta_B), trained
  with cross-entropy plus distillation from the ancestry;

then descendants of every depth in ``vit.depths`` by every method in ``vit.methods`` (``scratch``, ``heur-lg``,
``truncated`` -- the ancestry's first D blocks, D <= its depth -- and ``tleg``), fine-tuned on classes neither the
ancestry nor the auxiliary net ever saw (the novel classes; each class's images split into train and test),
over ``vit.seeds``; plus the few-shot episodes of ``[evaluate]`` and TLEG's linearity check of the ancestry.

Layout of ``out/``::

    config.json                      the run's configuration
    cache/ancestry/                  trained ancestry (network.json + model.safetensors; gradient record inside)
    cache/aux/                       trained auxiliary net (ExpandedViT)
    cache/descendants/*.json         one finished (method, depth, seed) training each
    genes/tleg/, genes/heur-lg/      the two transformer learngenes (learngene.json + model.safetensors)
    report.json, report.md           results; plots/vit_accuracy_vs_depth.png

A rerun with the same configuration reuses every cache entry whose fingerprint (the settings it depends on)
still matches, so an interrupted run continues where it stopped.

:func:`inherit_vit` is ``learngene inherit`` for a transformer gene: a descendant trained on a user's
ImageFolder support set (optionally against the same architecture from scratch), saved for ``learngene predict``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from learngene.artifacts import INDIVIDUAL, NETWORK
from learngene.config import Config, parse_setting
from learngene.errors import ConfigError, DataError, LearngeneError, ModelError
from learngene.runtime import derive_seed, resolve_device, seeded

__all__ = ["fewshot_depths", "inherit_vit", "run_vit", "vit_shape"]

ACCURACY_PLOT = "vit_accuracy_vs_depth.png"


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[vit] {msg}", file=sys.stderr, flush=True)


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


class _Record:
    """What ``save_network`` needs of a model (``config()`` and ``state_dict()``) for a plain timm ViT."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def config(self) -> dict[str, Any]:
        from learngene.models.vit import vit_config

        return vit_config(self.model)

    def state_dict(self) -> dict[str, Tensor]:
        return self.model.state_dict()


# ---------------------------------------------------------------------- data
class _ImageBatches:
    """Shuffled mini-batches of uint8 images, augmented per sample (own generator) and normalized."""

    def __init__(self, images: Tensor, labels: Tensor, spec: Mapping[str, Any], batch_size: int, *,
                 augment: str = "none", seed: int = 0) -> None:
        from learngene.data.transforms import BatchAugment

        self.images, self.labels, self.spec = images, labels, spec
        self.batch_size = max(1, min(int(batch_size), len(images)))
        self.augment = BatchAugment(augment) if augment != "none" else None
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        from learngene.data.transforms import normalize

        order = torch.randperm(len(self.images), generator=self.generator).to(self.images.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[idx]
            if self.augment is not None:
                x = self.augment(x, generator=self.generator)
            yield normalize(x, self.spec["mean"], self.spec["std"]), self.labels[idx]


def _split_per_class(labels: Tensor, n_classes: int, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Train/test indices: of each class's images, round(test_fraction * n) (at least 1) go to the test set."""
    gen = torch.Generator().manual_seed(int(seed))
    train, test = [], []
    for c in range(n_classes):
        members = (labels == c).nonzero().flatten()
        if len(members) < 2:
            raise DataError(f"class {c} has {len(members)} image(s); a train/test split needs at least 2 per class")
        members = members[torch.randperm(len(members), generator=gen)]
        k = min(len(members) - 1, max(1, round(test_fraction * len(members))))
        test.append(members[:k])
        train.append(members[k:])
    return torch.cat(train), torch.cat(test)


class _Task:
    """A classification task over some classes of an ImageSet: uint8 train/test images on the device."""

    def __init__(self, data: Any, classes: Sequence[str], spec: Mapping[str, Any], test_fraction: float,
                 seed: int, device: torch.device) -> None:
        idx = torch.cat([data.indices_of(c) for c in classes])
        local = torch.cat([torch.full((len(data.indices_of(c)),), i, dtype=torch.int64)
                           for i, c in enumerate(classes)])
        tr, te = _split_per_class(local, len(classes), test_fraction, seed)
        self.classes = list(classes)
        self.spec = spec
        self.train_x, self.train_y = data.images[idx[tr]].to(device), local[tr].to(device)
        self.test_x, self.test_y = data.images[idx[te]].to(device), local[te].to(device)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def loader(self, batch_size: int, augment: str, seed: int) -> _ImageBatches:
        return _ImageBatches(self.train_x, self.train_y, self.spec, batch_size, augment=augment, seed=seed)

    def accuracy(self, model: nn.Module) -> float:
        return _accuracy(model, self.test_x, self.test_y, self.spec)

    def sizes(self) -> dict[str, int]:
        return {"classes": self.num_classes, "train": len(self.train_y), "test": len(self.test_y)}


@torch.no_grad()
def _accuracy(model: nn.Module, images: Tensor, labels: Tensor, spec: Mapping[str, Any], batch: int = 512) -> float:
    from learngene.data.transforms import normalize

    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    for s in range(0, len(images), batch):
        x = normalize(images[s : s + batch].to(dev), spec["mean"], spec["std"])
        correct += int((model(x).argmax(1) == labels[s : s + batch].to(dev)).sum())
    return correct / max(1, len(labels))


# ---------------------------------------------------------------------- training helpers
def _scheduler(kind: str) -> Callable[[torch.optim.Optimizer, int], Any] | None:
    if kind == "constant":
        return None

    def factory(opt: torch.optim.Optimizer, steps: int) -> Any:
        total = max(1, steps)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total)))

    return factory


def _eval_points(eval_epochs: Sequence[int], epochs: int) -> list[int]:
    return sorted({int(e) for e in eval_epochs if 0 <= int(e) <= epochs} | {epochs})


class _GradientShare:
    """Each block's share of the gradient at every optimizer step (an optimizer step pre-hook).

    For block i: ``g_i = ||grad of its weights|| / ||its weights||``, and its share ``g_i / mean_j g_j`` (so the
    record ignores the overall scale, e.g. AMP loss scaling or the learning-rate phase).
    """

    def __init__(self, model: nn.Module) -> None:
        self.blocks = [list(b.parameters()) for b in model.blocks]
        self.steps: list[Tensor] = []

    def __call__(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            g = []
            for params in self.blocks:
                grads = [p.grad for p in params if p.grad is not None]
                if not grads:
                    return
                gn = torch.sqrt(sum((x.float() ** 2).sum() for x in grads))
                pn = torch.sqrt(sum((p.float() ** 2).sum() for p in params)).clamp_min(1e-12)
                g.append(gn / pn)
            v = torch.stack(g)
            self.steps.append(v / v.mean().clamp_min(1e-12))  # stays on the device: no sync per step

    def segments(self, n: int = 10) -> list[list[float]]:
        """The record as ``[segment][block]`` means over up to ``n`` contiguous stretches of training."""
        steps = torch.stack(self.steps).cpu() if self.steps else torch.zeros(0)
        steps = steps[torch.isfinite(steps).all(dim=1)] if len(steps) else steps  # steps AMP skipped as inf/nan
        if not len(steps):
            return []
        k = max(1, min(n, len(steps)))
        return [chunk.mean(0).tolist() for chunk in torch.tensor_split(steps, k)]


def _optimizer_factory(lr: float, weight_decay: float, hook: Callable | None = None):
    def factory(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        if hook is not None:
            opt.register_step_pre_hook(hook)
        return opt

    return factory


# ---------------------------------------------------------------------- shapes and settings
def vit_shape(cfg: Config, image_size: int, channels: int, num_classes: int) -> dict[str, Any]:
    """The ancestry's ViT shape record: the ``vit.ancestry`` preset with the ``[vit]`` overrides and the data's
    image size and channels."""
    from learngene.models.vit import VIT_PRESETS, vit_preset_config

    v = cfg.vit
    if v.ancestry not in VIT_PRESETS:
        raise ConfigError(f"config key vit.ancestry = {v.ancestry!r} is not a registered ViT preset; choose one of "
                          f"{', '.join(sorted(VIT_PRESETS))}")
    try:
        shape = vit_preset_config(v.ancestry, img_size=image_size, in_chans=channels, num_classes=num_classes,
                                  depth=v.ancestry_depth, patch_size=v.patch_size, embed_dim=v.embed_dim,
                                  num_heads=v.num_heads)
    except ModelError as err:
        raise ConfigError(f"the [vit] ancestry settings do not make a ViT: {err}") from None
    patch = shape["patch_size"]
    if image_size % (patch if isinstance(patch, int) else patch[0]):
        raise ConfigError(f"data.image_size = {image_size} is not a multiple of the ViT patch size {patch}; set "
                          "vit.patch_size to a divisor (16 tokens: image_size / 4) or change data.image_size")
    if v.embed_dim is not None and v.num_heads is None and shape["embed_dim"] % shape["num_heads"]:
        raise ConfigError(f"vit.embed_dim = {v.embed_dim} is not divisible by the preset's {shape['num_heads']} heads; "
                          "set vit.num_heads too")
    return shape


def fewshot_depths(cfg: Config, ancestry_depth: int) -> list[int]:
    return list(cfg.vit.fewshot_depths) if cfg.vit.fewshot_depths is not None else [ancestry_depth]


# ---------------------------------------------------------------------- the stages
def _train_ancestry(cfg: Config, shape: dict[str, Any], task: _Task, cache: Path, device: torch.device,
                    fp: str, progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    from learngene.distill import train_classifier
    from learngene.models.io import load_network, save_network
    from learngene.models.vit import build_vit

    v = cfg.vit
    if (cache / NETWORK.manifest).is_file():
        try:
            model, manifest = load_network(cache, NETWORK)
            rec = manifest.get("record")
            if manifest.get("fingerprint") == fp and isinstance(rec, dict) and {"params", "val_acc"} <= set(rec):
                _say(progress, f"ancestry: reusing {cache}")
                return model.to(device), {**rec, "cached": True}
        except LearngeneError:
            pass  # a damaged or foreign cache entry is retrained
    _say(progress, f"ancestry: training {shape['depth']} blocks, width {shape['embed_dim']} on "
                   f"{task.num_classes} source classes for {v.ancestry_epochs} epochs")
    with seeded(derive_seed(cfg.seed, "ancestry-init")):
        model = build_vit(shape)
    record = _GradientShare(model)
    res = train_classifier(
        model, task.loader(v.batch_size, cfg.data.augment, derive_seed(cfg.seed, "ancestry-data")), v.ancestry_epochs,
        optimizer_factory=_optimizer_factory(v.lr, v.weight_decay, record), scheduler_factory=_scheduler(v.schedule),
        device=device, amp=v.amp, seed=derive_seed(cfg.seed, "ancestry-train"), eval_fn=task.accuracy,
        eval_epochs=[v.ancestry_epochs],
    )
    info = {
        "params": sum(int(p.numel()) for p in model.parameters()),
        "depth": shape["depth"],
        "val_acc": res["curve"][-1],
        "loss": res["loss"],
        "train_seconds": res["train_seconds"],
        "gradient_share": record.segments(),
    }
    save_network(_Record(model), cache, NETWORK, {"fingerprint": fp, "record": _jsonable(info)})
    return model.eval(), {**info, "cached": False}


def _jsonable(obj: Any) -> Any:
    from learngene.safeio import jsonable

    return jsonable(obj)


def _window_stats(share: list[list[float]], a: int, b: int) -> dict[str, float]:
    if not share:
        return {}
    t = torch.tensor(share)[:, a:b]
    std = t.std(0, unbiased=True) if len(t) > 1 else torch.zeros(t.shape[1])
    return {"grad_share_mean": float(t.mean()), "grad_share_std": float(std.mean())}


def _choose_blocks(cfg: Config, ancestry: nn.Module, info: dict[str, Any], data: Any, split: Any,
                   spec: dict[str, Any], device: torch.device, progress: bool) -> dict[str, Any]:
    """Heur-LG's criterion: the window of ``vit.heur_blocks`` contiguous ancestry blocks to inherit."""
    from learngene.criterion import windows
    from learngene.descendants import stack_descendant
    from learngene.distill import train_classifier
    from learngene.models.vit import num_blocks

    v = cfg.vit
    n = num_blocks(ancestry)
    if n < 2:
        raise ConfigError(f"Heur-LG needs an ancestry of at least 2 blocks (one inherited, one fresh), got {n}; "
                          "raise vit.ancestry_depth or drop heur-lg from vit.methods")
    size = min(v.heur_blocks, n - 1)
    share = info.get("gradient_share") or []
    cands = []
    if v.heur_criterion == "gradient_stability":
        if not share:
            raise LearngeneError("the gradient_stability criterion found no gradient record in the ancestry")
        for a, b in windows(n, size):
            st = _window_stats(share, a, b)
            cands.append({"blocks": list(range(a, b)), "score": -(st["grad_share_mean"] + st["grad_share_std"]), **st})
        reason = (f"the {size} contiguous blocks whose share of the gradient (block grad norm / weight norm, relative to "
                  "the mean block) was lowest and steadiest over the ancestry's training; score = -(mean + std)")
    else:
        pool = list(split.open_world)
        if len(pool) < 2:
            raise ConfigError(f"vit.heur_criterion = 'validation' needs at least 2 open-world classes for its "
                              f"pseudo-tasks, the split has {len(pool)}; use 'gradient_stability' or raise "
                              "data.split_fractions[1]")
        task = _Task(data, pool, spec, v.test_fraction, derive_seed(cfg.seed, "pseudo-split"), device)
        for a, b in windows(n, size):
            seed = derive_seed(cfg.seed, "pseudo", a, b)
            d = stack_descendant(ancestry, list(range(a, b)), n, task.num_classes, seed=seed, copy_final_norm=True)
            res = train_classifier(
                d.model, task.loader(v.batch_size, cfg.data.augment, seed), v.heur_val_epochs,
                optimizer_factory=_optimizer_factory(v.descendant_lr or v.lr, v.weight_decay),
                scheduler_factory=_scheduler(v.schedule), device=device, amp=v.amp, seed=seed,
                eval_fn=task.accuracy, eval_epochs=[v.heur_val_epochs],
            )
            cands.append({"blocks": list(range(a, b)), "score": res["curve"][-1], **_window_stats(share, a, b)})
        reason = (f"the {size} contiguous blocks whose stacked depth-{n} descendants reached the best test accuracy "
                  f"after {v.heur_val_epochs} epoch(s) on pseudo-tasks of {len(pool)} open-world classes (never the "
                  "novel ones)")
    best = max(cands, key=lambda c: (round(c["score"], 6), -c["blocks"][0]))
    _say(progress, f"heur-lg: blocks {best['blocks']} by {v.heur_criterion}")
    return {"name": v.heur_criterion, "selected": best["blocks"], "candidates": cands, "reason": reason}


def _train_aux(cfg: Config, shape: dict[str, Any], ancestry: nn.Module, task: _Task, cache: Path,
               device: torch.device, fp: str, progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    from learngene.distill import train_distilled
    from learngene.models.expansion import ExpandedViT
    from learngene.models.io import load_network, save_network

    v = cfg.vit
    if (cache / NETWORK.manifest).is_file():
        try:
            aux, manifest = load_network(cache, NETWORK)
            rec = manifest.get("record")
            if (manifest.get("fingerprint") == fp and isinstance(aux, ExpandedViT) and isinstance(rec, dict)
                    and {"params", "val_acc", "train_seconds"} <= set(rec)):
                _say(progress, f"tleg: reusing the auxiliary net in {cache}")
                return aux.to(device), {**rec, "cached": True}
        except LearngeneError:
            pass
    try:
        aux = ExpandedViT({**shape, "depth": v.aux_depth}, v.rule, v.aux_depth, seed=derive_seed(cfg.seed, "aux-init"))
    except ModelError as err:
        raise ConfigError(f"config keys vit.rule = {v.rule!r} / vit.aux_depth = {v.aux_depth}: {err}") from None
    _say(progress, f"tleg: distilling the ancestry into a {v.aux_depth}-block {aux.rule.name} auxiliary net "
                   f"({v.distill}, alpha {v.distill_alpha}) for {v.aux_epochs} epochs")
    res = train_distilled(
        aux, ancestry, task.loader(v.batch_size, cfg.data.augment, derive_seed(cfg.seed, "aux-data")), v.aux_epochs,
        optimizer_factory=_optimizer_factory(v.lr, v.weight_decay), scheduler_factory=_scheduler(v.schedule),
        mode=v.distill, alpha=v.distill_alpha, temperature=v.distill_temperature, device=device, amp=v.amp,
        seed=derive_seed(cfg.seed, "aux-train"), eval_fn=task.accuracy, eval_epochs=[v.aux_epochs],
    )
    info = {"params": sum(int(p.numel()) for p in aux.parameters()), "depth": v.aux_depth, "rule": aux.rule.to_config(),
            "val_acc": res["curve"][-1], "loss": res["loss"], "train_seconds": res["train_seconds"]}
    save_network(aux, cache, NETWORK, {"fingerprint": fp, "record": _jsonable(info)})
    return aux.eval(), {**info, "cached": False}


def _descendant(method: str, depth: int, num_classes: int, seed: int, genes: dict[str, Any],
                ancestry: nn.Module) -> Any:
    from learngene.descendants import build_descendant, scratch_descendant, truncated_ancestry

    if method == "scratch":
        return scratch_descendant(ancestry, depth, num_classes, seed=seed)
    if method == "truncated":
        return truncated_ancestry(ancestry, depth, num_classes, seed=seed)
    return build_descendant(genes[method], depth, num_classes, seed=seed)


def _summary_curve(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    from learngene.stats import mean_ci95

    epochs = per_seed[0]["curve_epochs"]
    accs, cis = [], []
    for i in range(len(epochs)):
        m, h = mean_ci95([r["curve"][i] for r in per_seed])
        accs.append(m)
        cis.append(h)
    return {"epochs": epochs, "acc": accs, "acc_ci95": cis}


def _fewshot(cfg: Config, data: Any, split: Any, spec: dict[str, Any], genes: dict[str, Any], ancestry: nn.Module,
             methods: list[str], device: torch.device, progress: bool) -> dict[str, Any]:
    """Every method on the same seeded N-way K-shot episodes of novel classes: full-batch fine-tuning."""
    from learngene.data import sample_episodes
    from learngene.distill import TensorBatches, train_classifier
    from learngene.models.vit import num_blocks
    from learngene.stats import mean_ci95

    v, ev = cfg.vit, cfg.evaluate
    n_anc = num_blocks(ancestry)
    out: dict[str, Any] = {}
    for setting in ev.settings:
        ways, shots = parse_setting(setting)
        episodes = sample_episodes(data, list(split.novel), ways, shots, ev.queries, ev.episodes,
                                   seed=derive_seed(cfg.seed, "episodes", setting))
        res: dict[str, Any] = {}
        for depth in fewshot_depths(cfg, n_anc):
            for method in methods:
                if method == "truncated" and depth > n_anc:
                    continue
                accs = []
                for e, ep in enumerate(episodes):
                    sx, sy, qx, qy = ep.tensors(data, spec)
                    seed = derive_seed(cfg.seed, "fewshot", setting, method, depth, e)
                    d = _descendant(method, depth, ways, seed, genes, ancestry)
                    train_classifier(
                        d.model, TensorBatches(sx, sy, len(sx), seed=seed), v.fewshot_epochs,
                        optimizer_factory=_optimizer_factory(v.descendant_lr or v.lr, v.weight_decay), device=device,
                        amp=v.amp, seed=seed,
                    )
                    d.model.eval()
                    with torch.no_grad():
                        accs.append(float((d.model(qx.to(device)).argmax(1).cpu() == qy).float().mean()))
                m, h = mean_ci95(accs)
                res[f"{method}@{depth}"] = {"method": method, "depth": depth, "acc": m, "acc_ci95": h,
                                            "episodes": len(accs)}
        out[setting] = {"ways": ways, "shots": shots, "queries": ev.queries, "steps": v.fewshot_epochs, "rows": res}
        _say(progress, f"few-shot {setting}: " + ", ".join(f"{k} {r['acc']:.3f}" for k, r in res.items()))
    return out


def _linearity(ancestry: nn.Module) -> dict[str, Any]:
    from learngene.linearity import layer_linearity

    try:
        return layer_linearity(ancestry, n_shuffles=5, seed=0)
    except ModelError as err:
        return {"skipped": str(err), "rows": [], "summary": {}}


# ---------------------------------------------------------------------- report
def _cell(x: Any, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def render_vit_report(report: dict[str, Any]) -> str:
    """report.md of a transformer run: the depth x method table, storage, few-shot, R^2 check."""
    rows = report["descendants"]["rows"]
    methods = [m for m in report["descendants"]["methods"] if any(r["method"] == m for r in rows)]
    depths = sorted({r["depth"] for r in rows})
    by = {(r["method"], r["depth"]): r for r in rows}
    anc, tleg, heur = report["ancestry"], report.get("tleg") or {}, report.get("heur_lg") or {}
    prot = report["descendants"]["protocol"]
    lines = [
        "# Transformer learngenes", "",
        f"Data {report['data']['name']}: ancestry on {report['data']['source_classes']} source classes; descendants "
        f"on {prot['classes']} novel classes ({prot['train']} train / {prot['test']} test images), "
        f"{prot['descendant_epochs']} epochs ({prot['scratch_epochs']} for scratch), seeds {prot['seeds']}.",
        f"Ancestry: {anc['depth']} blocks, {anc['params']:,} parameters, source val accuracy {_cell(anc.get('val_acc'))}.",
    ]
    if tleg:
        lines.append(f"TLEG: {tleg['rule']['name']} rule, auxiliary depth {tleg['aux_depth']}, val accuracy "
                     f"{_cell(tleg.get('val_acc'))}; learngene stores {tleg['stored_params']:,} parameters "
                     f"({tleg['stored_fraction_of_ancestry']:.1%} of the ancestry).")
    if heur:
        lines.append(f"Heur-LG: ancestry blocks {heur['selected']} by {heur['name']}; learngene stores "
                     f"{heur['stored_params']:,} parameters.")
    lines += ["", "## Test accuracy on the novel classes (mean ± 95% CI over seeds)", "",
              "| depth | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for d in depths:
        cells = []
        for m in methods:
            r = by.get((m, d))
            cells.append("n/a" if r is None else f"{_cell(r['acc'])} ± {_cell(r['acc_ci95'])}")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines += ["", "## Every row", "", "| method | depth | params | stored params | acc | 95% CI | curve (epoch: acc) |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        curve = ", ".join(f"{e}: {_cell(a)}" for e, a in zip(r["curve"]["epochs"], r["curve"]["acc"]))
        lines.append(f"| {r['method']} | {r['depth']} | {r['params']:,} | {r['stored_params']:,} | {_cell(r['acc'])} | "
                     f"{_cell(r['acc_ci95'])} | {curve} |")
    few = report.get("fewshot") or {}
    if few:
        lines += ["", "## Few-shot episodes on the novel classes", "", "| setting | method | depth | acc | 95% CI |",
                  "|---|---|---|---|---|"]
        for setting, res in few.items():
            for r in res["rows"].values():
                lines.append(f"| {setting} | {r['method']} | {r['depth']} | {_cell(r['acc'])} | {_cell(r['acc_ci95'])} |")
    lin = report.get("linearity") or {}
    lines += ["", "## Linearity of the trained ancestry's weights in depth (TLEG's observation)", ""]
    if lin.get("skipped"):
        lines.append(f"skipped: {lin['skipped']}")
    else:
        s = lin["summary"]
        lines += [f"R² of a per-element linear fit against the block index, over {s['n_tensors']} block tensors of "
                  f"{s['depth']} blocks; control: the same fit with the layer order shuffled.", "",
                  "| statistic | layer order | shuffled |", "|---|---|---|",
                  f"| mean R² | {_cell(s['mean_r2'])} | {_cell(s['mean_r2_shuffled'])} |",
                  f"| median R² | {_cell(s['median_r2'])} | {_cell(s['median_r2_shuffled'])} |",
                  f"| pooled R² | {_cell(s['pooled_r2'])} | {_cell(s['pooled_r2_shuffled'])} |"]
    lines += ["", f"![accuracy against depth](plots/{ACCURACY_PLOT})", ""]
    return "\n".join(lines)


def plot_accuracy_vs_depth(rows: Sequence[Mapping[str, Any]], path: str | Path | None = None, ax=None):
    """Final test accuracy against descendant depth, one line per method, 95% CIs as error bars."""
    from learngene.plots import new_figure, save_figure

    fig = ax.figure if ax is not None else new_figure((6, 3.5))
    ax = ax or fig.add_subplot(111)
    from matplotlib.ticker import MaxNLocator

    methods = list(dict.fromkeys(r["method"] for r in rows))
    for i, m in enumerate(methods):
        pts = sorted((r["depth"], r["acc"], r["acc_ci95"]) for r in rows if r["method"] == m)
        err = [0.0 if c is None or not math.isfinite(c) else c for _, _, c in pts]
        shift = 0.06 * (i - (len(methods) - 1) / 2)  # side by side, so the error bars stay readable
        ax.errorbar([p[0] + shift for p in pts], [p[1] for p in pts], yerr=err, marker="o", capsize=3, label=m)
    ax.set_ylim(0.0, 1.0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("descendant depth (blocks)")
    ax.set_ylabel("test accuracy, novel classes")
    ax.set_title("descendants: accuracy against depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if path is not None:
        save_figure(fig, path)
    return fig


# ---------------------------------------------------------------------- run_vit
def _preflight(cfg: Config, ancestry_depth: int) -> None:
    """Refuse settings that would fail only after the ancestry trained (rule depths, Heur-LG's ancestry)."""
    from learngene.models.expansion import rule_from_spec

    v = cfg.vit
    if "heur-lg" in v.methods and ancestry_depth < 2:
        raise ConfigError(f"Heur-LG needs an ancestry of at least 2 blocks (one inherited, one fresh), got "
                          f"{ancestry_depth}; raise vit.ancestry_depth or drop heur-lg from vit.methods")
    if "tleg" in v.methods:
        try:
            rule = rule_from_spec(v.rule, v.aux_depth)
            for depth in dict.fromkeys([v.aux_depth, *v.depths, *fewshot_depths(cfg, ancestry_depth)]):
                rule.check_depth(depth)
        except ModelError as err:
            raise ConfigError(f"config key vit.rule = {v.rule!r} cannot build every depth asked for "
                              f"(vit.aux_depth, vit.depths, vit.fewshot_depths): {err}") from None


def run_vit(cfg: Config, out: str | Path, *, progress: bool = True,
            device: torch.device | str = "cpu") -> dict[str, Any]:
    """The whole transformer path (see the module docstring); returns the report written to ``out/report.json``."""
    from learngene import __version__
    from learngene.distill import train_classifier
    from learngene.models.vit import num_blocks
    from learngene.prepare import input_spec, load_data, make_split
    from learngene.safeio import artifact_kind, atomic_write_bytes, atomic_write_json, output_lock
    from learngene.stats import mean_ci95
    from learngene.vit_gene import TransformerGene, extract_heur_lg, extract_tleg

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
    v = cfg.vit
    start = time.perf_counter()
    with output_lock(out):
        atomic_write_json(out / "config.json", cfg.to_dict())
        data = load_data(cfg)
        split = make_split(cfg, data)
        source, novel = list(split.source), list(split.novel)
        if len(source) < 2 or len(novel) < 2:
            raise DataError(f"the split has {len(source)} source and {len(novel)} novel classes; the transformer path "
                            "needs at least 2 of each (raise data.max_classes or change data.split_fractions)")
        spec = input_spec(data, source)
        shape = vit_shape(cfg, data.image_size, data.channels, len(source))
        _preflight(cfg, shape["depth"])
        data_fp = {"data": cfg.to_dict()["data"], "seed": cfg.seed, "source": source}
        anc_fp = _fingerprint({**data_fp, "shape": shape, "epochs": v.ancestry_epochs, "lr": v.lr,
                               "wd": v.weight_decay, "bs": v.batch_size, "schedule": v.schedule, "amp": v.amp,
                               "test_fraction": v.test_fraction})
        src_task = _Task(data, source, spec, v.test_fraction, derive_seed(cfg.seed, "source-split"), dev)
        ancestry, anc_info = _train_ancestry(cfg, shape, src_task, out / "cache" / "ancestry", dev, anc_fp, progress)
        n_anc = num_blocks(ancestry)
        anc_info.update(preset=v.ancestry, shape=shape, fingerprint=anc_fp, depth=n_anc)
        _say(progress, f"ancestry: val accuracy {anc_info['val_acc']:.3f}")

        genes: dict[str, Any] = {}
        gene_shas: dict[str, str] = {}  # the saved tensors' sha256: descendants are reused only for the same genes
        report: dict[str, Any] = {}
        if "heur-lg" in v.methods:
            crit = _choose_blocks(cfg, ancestry, anc_info, data, split, spec, dev, progress)
            gene = extract_heur_lg(ancestry, crit["selected"], spec, criterion=crit,
                                   provenance={"run": str(out.resolve()), "ancestry": v.ancestry, "seed": cfg.seed})
            gene_shas["heur-lg"] = gene.save(out / "genes" / "heur-lg")["sha256"]
            genes["heur-lg"] = TransformerGene.load(out / "genes" / "heur-lg")
            report["heur_lg"] = {**crit, "dir": str(out / "genes" / "heur-lg"), "stored_params": gene.stored_params}
        if "tleg" in v.methods:
            aux_fp = _fingerprint({"ancestry": anc_fp, "rule": v.rule, "depth": v.aux_depth, "epochs": v.aux_epochs,
                                   "distill": [v.distill, v.distill_alpha, v.distill_temperature]})
            aux, aux_info = _train_aux(cfg, shape, ancestry, src_task, out / "cache" / "aux", dev, aux_fp, progress)
            _say(progress, f"tleg: auxiliary val accuracy {aux_info['val_acc']:.3f}")
            gene = extract_tleg(aux, spec, ancestry=ancestry,
                                provenance={"run": str(out.resolve()), "ancestry": v.ancestry, "seed": cfg.seed,
                                            "distill": v.distill})
            gene_shas["tleg"] = gene.save(out / "genes" / "tleg")["sha256"]
            genes["tleg"] = TransformerGene.load(out / "genes" / "tleg")
            report["tleg"] = {
                "rule": aux.rule.to_config(), "aux_depth": v.aux_depth, "aux_params": aux_info["params"],
                "val_acc": aux_info["val_acc"], "train_seconds": aux_info["train_seconds"], "cached": aux_info["cached"],
                "distill": {"mode": v.distill, "alpha": v.distill_alpha, "temperature": v.distill_temperature},
                "dir": str(out / "genes" / "tleg"), "stored_params": gene.stored_params,
                "stored_fraction_of_ancestry": gene.stored_params / anc_info["params"],
            }
            del aux

        # ------------------------------------------------------------ descendants on the novel classes
        task = _Task(data, novel, spec, v.test_fraction, derive_seed(cfg.seed, "novel-split"), dev)
        lr = v.descendant_lr or v.lr
        desc_fp = {"ancestry": anc_fp, "genes": gene_shas,
            "lr": lr, "wd": v.weight_decay, "bs": v.batch_size, "schedule": v.schedule, "amp": v.amp,
            "augment": cfg.data.augment, "eval": v.eval_epochs, "novel": novel, "test_fraction": v.test_fraction}
        rows, skipped = [], []
        cache = out / "cache" / "descendants"
        for depth in v.depths:
            for method in v.methods:
                if method == "truncated" and depth > n_anc:
                    skipped.append({"method": method, "depth": depth,
                                    "reason": f"deeper than the {n_anc}-block ancestry: truncation only shortens"})
                    continue
                epochs = v.scratch_epochs if method == "scratch" else v.descendant_epochs
                points = _eval_points(v.eval_epochs, epochs)
                per_seed = []
                for s in v.seeds:
                    key = f"{method}-d{depth}-s{s}"
                    fp = _fingerprint({**desc_fp, "method": method, "depth": depth, "seed": s, "epochs": epochs})
                    path = cache / f"{key}.json"
                    hit = None
                    if path.is_file():
                        try:
                            hit = json.loads(path.read_text())
                        except (OSError, ValueError):
                            hit = None
                    if isinstance(hit, dict) and hit.get("fingerprint") == fp:
                        per_seed.append(hit)
                        continue
                    seed = derive_seed(cfg.seed, "descendant", method, depth, s)
                    d = _descendant(method, depth, task.num_classes, seed, genes, ancestry)
                    res = train_classifier(
                        d.model, task.loader(v.batch_size, cfg.data.augment, seed), epochs,
                        optimizer_factory=_optimizer_factory(lr, v.weight_decay),
                        scheduler_factory=_scheduler(v.schedule), device=dev, amp=v.amp, seed=seed,
                        eval_fn=task.accuracy, eval_epochs=points,
                    )
                    one = {"fingerprint": fp, "seed": s, "acc": res["curve"][-1], "curve": res["curve"],
                           "curve_epochs": res["curve_epochs"], "train_seconds": res["train_seconds"],
                           "params": sum(int(p.numel()) for p in d.model.parameters()),
                           "stored_params": d.stored_params, "inherited": len(d.inherited)}
                    atomic_write_json(path, _jsonable(one))
                    per_seed.append(one)
                acc, ci = mean_ci95([r["acc"] for r in per_seed])
                row = {"method": method, "depth": depth, "params": per_seed[0]["params"],
                       "stored_params": per_seed[0]["stored_params"], "acc": acc, "acc_ci95": ci,
                       "curve": _summary_curve(per_seed), "epochs": epochs,
                       "train_seconds": sum(r["train_seconds"] for r in per_seed),
                       "inherited_tensors": per_seed[0]["inherited"],
                       "per_seed": [{k: r[k] for k in ("seed", "acc", "curve", "curve_epochs")} for r in per_seed]}
                rows.append(row)
                _say(progress, f"depth {depth:>2} {method:<9} acc {acc:.3f} ± {_cell(ci)} "
                               f"({row['params']:,} params, {row['stored_params']:,} stored)")

        fewshot = _fewshot(cfg, data, split, spec, genes, ancestry, list(v.methods), dev, progress)
        linearity = _linearity(ancestry)
        anc_public = {k: val for k, val in anc_info.items() if k not in ("loss", "gradient_share")}
        anc_public["gradient_share"] = anc_info.get("gradient_share")
        report = {
            "version": __version__,
            "paradigm": "vit",
            "seed": cfg.seed,
            "config": cfg.to_dict(),
            "device": str(dev),
            "data": {"name": data.name, "image_size": data.image_size, "channels": data.channels,
                     "source_classes": len(source), "open_world_classes": len(split.open_world),
                     "novel_classes": len(novel), "source_images": src_task.sizes()},
            "split": {"source": source, "open_world": list(split.open_world), "novel": novel},
            "input_spec": spec,
            "ancestry": anc_public,
            **report,
            "descendants": {
                "methods": list(v.methods),
                "protocol": {**task.sizes(), "descendant_epochs": v.descendant_epochs,
                             "scratch_epochs": v.scratch_epochs, "eval_epochs": list(v.eval_epochs),
                             "seeds": list(v.seeds), "lr": lr, "batch_size": v.batch_size, "schedule": v.schedule,
                             "augment": cfg.data.augment},
                "rows": rows,
                "skipped": skipped,
            },
            "fewshot": fewshot,
            "linearity": linearity,
            "seconds": time.perf_counter() - start,
        }
        report = _jsonable(report)
        atomic_write_json(out / "report.json", report)
        atomic_write_bytes(out / "report.md", render_vit_report(report).encode())
        plot_accuracy_vs_depth(rows, out / "plots" / ACCURACY_PLOT)
    _say(progress, f"done in {report['seconds']:.1f} s: {out / 'report.md'}")
    return report


# ---------------------------------------------------------------------- inherit
def inherit_vit(
    gene_dir: str | Path,
    support_dir: str | Path,
    query_dir: str | Path | None,
    depth: int,
    out: str | Path,
    *,
    compare_scratch: bool = False,
    epochs: int = 30,
    seed: int = 0,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    batch_size: int = 64,
    augment: str = "none",
    device: torch.device | str = "cpu",
    overwrite: bool = False,
) -> dict[str, Any]:
    """``learngene inherit`` for a transformer gene: a depth-``depth`` descendant trained on ``support_dir``.

    Both folders are ImageFolder trees (one subfolder of images per class; the query's classes must be among
    the support's).  With ``compare_scratch`` the same architecture is trained from random initialization with
    the same budget (epochs, optimizer, batches) and both query accuracies are returned.  The trained
    descendant is saved in ``out`` (kind INDIVIDUAL, with ``classes`` and ``preprocessing``) for
    ``learngene predict``.  Returns ``{"out", "classes", "depth", "support_images", "params",
    "stored_params", "query_accuracy", "curve", "scratch"}`` (accuracies None without a query folder).
    """
    from learngene.data.images import read_image_folder
    from learngene.descendants import build_descendant, scratch_descendant
    from learngene.distill import train_classifier
    from learngene.models.io import save_network
    from learngene.safeio import check_writable_dir
    from learngene.vit_gene import TransformerGene

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be an integer >= 1, got {epochs!r}")
    gene = TransformerGene.load(gene_dir)
    gene.check_depth(depth)
    spec = gene.input_spec
    out = check_writable_dir(out, overwrite=overwrite, resumable=False, kind="individual model")
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    support = read_image_folder(support_dir, image_size=spec["image_size"], channels=spec["channels"])
    classes = list(support.classes)
    if len(classes) < 2:
        raise DataError(f"support folder {support_dir} has {len(classes)} class folder ({', '.join(classes)}); a "
                        "classifier needs at least 2 classes, one subfolder of images per class")
    qx = qy = None
    if query_dir is not None:
        query = read_image_folder(query_dir, image_size=spec["image_size"], channels=spec["channels"])
        extra = [c for c in query.classes if c not in classes]
        if extra:
            raise DataError(f"query folder {query_dir} has classes {extra} that the support folder {support_dir} lacks")
        qx = query.images
        qy = torch.tensor([classes.index(query.classes[int(i)]) for i in query.labels], dtype=torch.int64)
    sched = _scheduler("cosine")
    eval_fn = (lambda m: _accuracy(m, qx, qy, spec)) if qx is not None else None
    points = _eval_points([0, 1, 3, 10, 30, 100], epochs)

    def train(model: nn.Module) -> dict[str, Any]:
        loader = _ImageBatches(support.images, support.labels, spec, batch_size, augment=augment, seed=seed)
        return train_classifier(model, loader, epochs, optimizer_factory=_optimizer_factory(lr, weight_decay),
                                scheduler_factory=sched, device=dev, seed=seed, eval_fn=eval_fn, eval_epochs=points)

    d = build_descendant(gene, depth, len(classes), seed=seed)
    res = train(d.model)
    acc = res["curve"][-1] if eval_fn is not None else None
    scratch = None
    if compare_scratch:
        s = scratch_descendant(gene.vit_cfg, depth, len(classes), seed=seed)
        sres = train(s.model)
        scratch = {"query_accuracy": sres["curve"][-1] if eval_fn is not None else None,
                   "curve": {"epochs": sres["curve_epochs"], "acc": sres["curve"]},
                   "train_seconds": sres["train_seconds"]}
    model = d.model.cpu().eval()
    params = sum(int(p.numel()) for p in model.parameters())
    fields = {
        "classes": classes,
        "preprocessing": {k: spec[k] for k in ("image_size", "channels", "mean", "std")},
        "gene": {"dir": str(Path(gene_dir).resolve()), "kind": gene.kind, "rule": gene.rule,
                 "block_indices": gene.block_indices, "stored_params": gene.stored_params},
        "depth": depth,
        "support": {"dir": str(Path(support_dir).resolve()), "images": len(support)},
        "params": params,
        "inherited_params": sum(int(t.numel()) for k, t in model.state_dict().items() if k in set(d.inherited)),
        "training": {"epochs": epochs, "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size,
                     "augment": augment, "seed": seed},
        "query_accuracy": acc,
        "scratch_query_accuracy": None if scratch is None else scratch["query_accuracy"],
    }
    save_network(_Record(model), out, INDIVIDUAL, _jsonable(fields))
    return {"out": str(out), "classes": classes, "depth": depth, "kind": gene.kind, "support_images": len(support),
            "query_images": None if qy is None else len(qy), "params": params, "stored_params": gene.stored_params,
            "query_accuracy": acc, "curve": {"epochs": res["curve_epochs"], "acc": res["curve"]}, "scratch": scratch}

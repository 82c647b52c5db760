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

**A user's own ancestry** (``vit.ancestry_weights``, e.g. a locally stored pretrained DeiT, with
``vit.ancestry_timm`` naming its timm architecture, or a :func:`save_ancestry` / ``save_network`` directory)
replaces the trained preset: it is read before the data loads (local files only; ``.pth`` through
``torch.load(weights_only=True)``), built for ``data.image_size`` / ``data.channels`` (the positional embedding
resampled to the new patch grid, the patch kernel's input channels summed or repeated, both recorded in the
report), and refused with a :class:`ConfigError` / :class:`ModelError` naming the key when it cannot be.  Its
own head is always replaced by a fresh one for the source classes (the TLEG teacher must output source-class
logits): ``vit.ancestry_probe_epochs`` of a linear probe (only the head trains; the rest frozen and in eval
mode), then ``vit.ancestry_epochs`` of fine-tuning everything (0: the blocks stay exactly the file's).  With
``ancestry_epochs = 0`` the Heur-LG ``gradient_stability`` record comes from the probe's steps (each block's
gradient is measured, never applied).  The aux net and the descendants copy its shape (``vit_config``).

A rerun with the same configuration reuses every cache entry whose fingerprint (the settings it depends on)
still matches, so an interrupted run continues where it stopped.

:func:`inherit_vit` is ``learngene inherit`` for a transformer gene: a descendant trained on a user's
ImageFolder support set (optionally against the same architecture from scratch), saved for ``learngene predict``.
"""

from __future__ import annotations

import difflib
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

__all__ = ["fewshot_depths", "inherit_vit", "run_vit", "save_ancestry", "vit_shape"]

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

    def __init__(self, model: nn.Module, *, clear: bool = False) -> None:
        self.blocks = [list(b.parameters()) for b in model.blocks]
        self.steps: list[Tensor] = []
        # clear: drop the blocks' gradients once measured -- for a linear probe whose optimizer holds only the
        # head (its zero_grad leaves the frozen blocks' gradients to accumulate otherwise)
        self.clear = clear

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
            if self.clear:
                for params in self.blocks:
                    for p in params:
                        p.grad = None

    def segments(self, n: int = 10) -> list[list[float]]:
        """The record as ``[segment][block]`` means over up to ``n`` contiguous stretches of training."""
        steps = torch.stack(self.steps).cpu() if self.steps else torch.zeros(0)
        steps = steps[torch.isfinite(steps).all(dim=1)] if len(steps) else steps  # steps AMP skipped as inf/nan
        if not len(steps):
            return []
        k = max(1, min(n, len(steps)))
        return [chunk.mean(0).tolist() for chunk in torch.tensor_split(steps, k)]


def _optimizer_factory(lr: float, weight_decay: float, hook: Callable | None = None,
                       only: Sequence[nn.Parameter] | None = None):
    """AdamW over the trainable parameters (``only``: just these, e.g. a probe's head), with ``hook`` before each step."""
    keep = None if only is None else {id(p) for p in only}

    def factory(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        if keep is not None:
            params = [p for p in params if id(p) in keep]
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


# ---------------------------------------------------------------------- a user's own ancestry
STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_WEIGHTS_KEY = "vit.ancestry_weights"
_TIMM_KEY = "vit.ancestry_timm"


def save_ancestry(model: nn.Module, directory: str | Path) -> dict[str, Any]:
    """Save a plain timm ``VisionTransformer`` as a network directory (``network.json`` + ``model.safetensors``)
    that ``vit.ancestry_weights`` accepts with ``vit.ancestry_timm = ""`` (rebuilt from its shape record).

    ``save_network`` itself needs a model with ``config()``; this adds :func:`~learngene.models.vit.vit_config`
    (a :class:`ModelError` for a model it cannot describe).  Returns the manifest.
    """
    from learngene.models.io import save_network

    return save_network(_Record(model), directory, NETWORK)


class _UserAncestry:
    """``vit.ancestry_weights`` (+ ``vit.ancestry_timm``): read and checked before the data loads, built after."""

    def __init__(self, cfg: Config, out: Path) -> None:
        from learngene.safeio import sha256_file

        v = cfg.vit
        self.given = v.ancestry_weights
        self.timm = v.ancestry_timm.strip()
        path = Path(v.ancestry_weights).expanduser()
        fix = (f"give the local path of a {'/'.join(STATE_DICT_SUFFIXES)} state dict (with {_TIMM_KEY} naming its "
               "timm model) or of a directory written by save_ancestry / save_network")
        if not path.exists():
            raise ConfigError(f"config key {_WEIGHTS_KEY} = {self.given!r}: {path} does not exist; {fix}")
        self.path = path.resolve()
        cache = (out / "cache").resolve()
        if self.path == cache or cache in self.path.parents:
            raise ConfigError(f"config key {_WEIGHTS_KEY} = {self.given!r} lies inside this run's cache ({cache}), "
                              "which the run rewrites; copy it elsewhere (or use another --out) and point the key there")
        self.arch: dict[str, Any] | None = None
        if self.path.is_dir():
            self.kind = "network"
            if not (self.path / NETWORK.manifest).is_file():
                raise ConfigError(f"config key {_WEIGHTS_KEY} = {self.given!r} is a directory without {NETWORK.manifest}: "
                                  f"not one written by save_ancestry / save_network; {fix}")
            self.tensors, self.arch = self._read_network()
            digest = hashlib.sha256()
            for name in (NETWORK.manifest, NETWORK.weights):
                digest.update(sha256_file(self.path / name).encode())
            self.sha256 = digest.hexdigest()
        else:
            self.kind = "file"
            if self.path.suffix.lower() not in STATE_DICT_SUFFIXES:
                raise ConfigError(f"config key {_WEIGHTS_KEY} = {self.given!r} has suffix {self.path.suffix!r}, not one "
                                  f"of {', '.join(STATE_DICT_SUFFIXES)}; {fix}")
            if not self.timm:
                raise ConfigError(f"config key {_WEIGHTS_KEY} = {self.given!r} is a bare state dict: set {_TIMM_KEY} to "
                                  "the timm model it was trained as (e.g. 'deit_tiny_patch16_224'), or save the model "
                                  "with learngene.vit_paradigm.save_ancestry and give that directory")
            self.sha256 = sha256_file(self.path)
            self.tensors = self._read_file()
        if self.timm:
            _check_timm_name(self.timm)
        self.adapted: list[str] = []

    # -------------------------------------------------------------- reading
    def _read_network(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        from learngene.artifacts import load_artifact

        try:
            manifest, tensors, _ = load_artifact(self.path, NETWORK)
        except LearngeneError as err:
            raise ConfigError(f"config key {_WEIGHTS_KEY} = {self.given!r}: {err}") from None
        arch = manifest.get("architecture")
        if not self.timm and (not isinstance(arch, dict) or arch.get("name") != "vit"):
            name = arch.get("name") if isinstance(arch, dict) else None
            raise ConfigError(f"config key {_WEIGHTS_KEY} = {self.given!r} holds a {name!r} network, not a plain ViT "
                              "(an auxiliary net or a CNN?); give a ViT saved with save_ancestry, or set "
                              f"{_TIMM_KEY} to the timm model its tensors belong to")
        return tensors, arch if isinstance(arch, dict) else {}

    def _read_file(self) -> dict[str, Tensor]:
        safetensors = self.path.suffix.lower() == ".safetensors"
        try:
            if safetensors:
                from safetensors.torch import load_file

                obj: Any = load_file(str(self.path), device="cpu")
            else:  # never plain pickle: only tensors and containers
                obj = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - corrupt, truncated, or objects weights_only refuses
            how = ("a safetensors file" if safetensors else
                   "a torch state dict with torch.load(weights_only=True) (no other objects are unpickled)")
            raise ConfigError(f"config key {_WEIGHTS_KEY} = {self.given!r} cannot be read as {how}: "
                              f"{type(err).__name__}: {str(err)[:300]}; save only the weights (model.state_dict()) as "
                              ".safetensors, or the model with learngene.vit_paradigm.save_ancestry") from None
        for _ in range(3):  # checkpoints wrap the weights: DeiT's {"model": ...}, timm's {"state_dict": ...}
            if isinstance(obj, dict) and obj and not all(isinstance(t, Tensor) for t in obj.values()):
                inner = next((obj[k] for k in ("model", "state_dict", "model_state_dict", "module")
                              if isinstance(obj.get(k), dict)), None)
                if inner is None:
                    break
                obj = inner
        if (not isinstance(obj, dict) or not obj
                or not all(isinstance(k, str) and isinstance(t, Tensor) for k, t in obj.items())):
            what = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
            raise ConfigError(f"config key {_WEIGHTS_KEY} = {self.given!r} does not hold a state dict (tensor names -> "
                              f"tensors), found {what}; save model.state_dict()")
        if all(k.startswith("module.") for k in obj):  # saved from DistributedDataParallel
            obj = {k[len("module."):]: t for k, t in obj.items()}
        return dict(obj)

    # -------------------------------------------------------------- building
    def stem_channels(self) -> int:
        """The input channels of the stored patch embedding (3 when unknown)."""
        w = self.tensors.get("patch_embed.proj.weight")
        return int(w.shape[1]) if isinstance(w, Tensor) and w.ndim == 4 else 3

    def describe(self) -> str:
        return f"{self.timm or 'ViT'} from {self.path}"

    def build(self, image_size: int, channels: int, num_classes: int, *, seed: int | None = None,
              meta: bool = False) -> nn.Module:
        """The ancestry for the data, its weights loaded (``meta``: a shape-only dry run, nothing loaded)."""
        from learngene.models.vit import build_vit, vit_config

        with seeded(seed), torch.device("meta" if meta else "cpu"):
            if self.timm:
                import timm

                try:
                    model = timm.create_model(self.timm, pretrained=False, num_classes=num_classes,
                                              img_size=image_size, in_chans=channels)
                except Exception as err:  # noqa: BLE001 - a non-ViT (no img_size), or timm refusing the size
                    raise ConfigError(f"config key {_TIMM_KEY} = {self.timm!r} cannot be built for data.image_size = "
                                      f"{image_size} and {channels} channel(s) ({type(err).__name__}: "
                                      f"{str(err)[:200]}); name a plain timm ViT such as deit_tiny_patch16_224, or "
                                      "change data.image_size") from None
            else:
                try:
                    model = build_vit({**self.arch, "img_size": image_size, "in_chans": channels,
                                       "num_classes": num_classes})
                except ModelError as err:
                    raise ConfigError(f"config key {_WEIGHTS_KEY} = {self.given!r}: its architecture record does not "
                                      f"build a ViT for data.image_size = {image_size}: {err}") from None
        try:
            vit_config(model)
        except ModelError as err:
            raise ConfigError(f"config key {_TIMM_KEY} = {self.timm!r} builds a {type(model).__name__} that the "
                              f"transformer path cannot use: {err}. Name a plain timm ViT (e.g. deit_tiny_patch16_224, "
                              "vit_small_patch16_224; not a distilled DeiT)") from None
        ph, pw = model.patch_embed.patch_size
        if image_size % ph or image_size % pw or image_size < max(ph, pw):
            raise ConfigError(f"data.image_size = {image_size} cannot be cut into the {ph}x{pw} patches of the "
                              f"ancestry ({_WEIGHTS_KEY}/{_TIMM_KEY}: {self.describe()}); set data.image_size to a "
                              f"multiple of {ph} (e.g. {max(ph, (image_size // ph) * ph)}) or use a ViT with smaller "
                              "patches")
        state, notes = self._fit(model)
        if not meta:
            missing, unexpected = model.load_state_dict(state, strict=False)
            assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)
            self.adapted = notes
            model.eval()
        return model

    def _fit(self, model: nn.Module) -> tuple[dict[str, Tensor], list[str]]:
        """The file's tensors matched to ``model`` by name (its head dropped: a fresh one is trained)."""
        own = model.state_dict()
        given = {k: t for k, t in self.tensors.items() if not k.startswith("head.")}
        missing = [k for k in own if k not in given and not k.startswith("head.")]
        unexpected = [k for k in given if k not in own]
        what = f"config key {_WEIGHTS_KEY} = {self.given!r} does not fit the ancestry architecture ({self.describe()})"
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"{len(missing)} tensor(s) the model needs are missing from it: {missing[:6]}")
            if unexpected:
                parts.append(f"{len(unexpected)} tensor(s) in it have no place in the model: {unexpected[:6]}")
            raise ModelError(f"{what}: {'; '.join(parts)}. Set {_TIMM_KEY} to the timm model the weights were "
                             "trained as (a distilled DeiT's dist_token/head_dist are not supported: use a plain "
                             "deit_* checkpoint)")
        out, notes = {}, []
        for k, t in given.items():
            want = tuple(own[k].shape)
            if tuple(t.shape) != want:
                if k == "pos_embed":
                    t, note = _resample_pos_embed(model, t, what)
                    notes.append(note)
                elif k == "patch_embed.proj.weight" and t.ndim == 4 and (t.shape[0], *t.shape[2:]) == (want[0], *want[2:]):
                    t = _adapt_channels(t, want[1])
                    notes.append(f"patch_embed.proj.weight: {want[1]} input channel(s) made from the file's "
                                 f"{self.tensors[k].shape[1]} (data.channels)")
                else:
                    raise ModelError(f"{what}: {k} has shape {tuple(t.shape)} in the file but {want} in the model; "
                                     f"set {_TIMM_KEY} to the timm model the weights were trained as")
            out[k] = t
        return out, notes


def _check_timm_name(name: str) -> None:
    import timm

    if not timm.is_model(name):  # timm's local registry: nothing is downloaded
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"config key {_TIMM_KEY} = {name!r} is not a timm model name (timm {timm.__version__}); "
                          f"{hint}timm.list_models('deit*') lists the DeiTs, e.g. deit_tiny_patch16_224")


def _resample_pos_embed(model: nn.Module, t: Tensor, what: str) -> tuple[Tensor, str]:
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 0))
    want = tuple(model.pos_embed.shape)
    old = t.shape[1] - prefix if t.ndim == 3 else -1
    side = math.isqrt(old) if old > 0 else 0
    if t.ndim != 3 or t.shape[2] != want[2] or side * side != old:
        raise ModelError(f"{what}: pos_embed has shape {tuple(t.shape)} in the file but {want} in the model, and is "
                         f"not a square grid of {want[2]}-wide positions after {prefix} prefix token(s) to resample; "
                         f"set {_TIMM_KEY} to the timm model the weights were trained as")
    grid = list(model.patch_embed.grid_size)
    out = resample_abs_pos_embed(t.float(), new_size=grid, old_size=[side, side],
                                 num_prefix_tokens=prefix).to(t.dtype)
    return out, f"pos_embed resampled from a {side}x{side} to a {grid[0]}x{grid[1]} patch grid (data.image_size)"


def _adapt_channels(w: Tensor, channels: int) -> Tensor:
    """timm's rule for pretrained stems on other inputs: one channel sums the file's, more repeat them rescaled."""
    base = w.shape[1]
    if channels == 1:
        return w.float().sum(1, keepdim=True).to(w.dtype)
    reps = math.ceil(channels / base)
    return (w.float().repeat(1, reps, 1, 1)[:, :channels] * (base / channels)).to(w.dtype)


class _Probe(nn.Module):
    """A linear probe's view of a model: training mode reaches only its head (no dropout/drop path in the body)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> _Probe:
        super().train(mode)
        self.model.eval()
        self.model.head.train(mode)
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


# ---------------------------------------------------------------------- the stages
def _train_ancestry(cfg: Config, shape: dict[str, Any], task: _Task, cache: Path, device: torch.device,
                    fp: str, progress: bool, user: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
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
    if user is not None:
        model, info = _tune_user_ancestry(cfg, user, task, device, progress)
        save_network(_Record(model), cache, NETWORK, {"fingerprint": fp, "record": _jsonable(info)})
        return model.eval(), {**info, "cached": False}
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


def _records_probe(cfg: Config) -> bool:
    """Whether a user's ancestry used as is (no fine-tuning) must record its blocks' gradients during the probe."""
    v = cfg.vit
    return v.ancestry_epochs == 0 and "heur-lg" in v.methods and v.heur_criterion == "gradient_stability"


def _tune_user_ancestry(cfg: Config, model: nn.Module, task: _Task, device: torch.device,
                        progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    """A user's ancestry on the source classes: a linear probe of its fresh head, then fine-tuning (see the module
    docstring).  The gradient record comes from the fine-tuning, or from the probe when there is none."""
    from learngene.distill import train_classifier
    from learngene.models.vit import num_blocks

    v = cfg.vit
    _say(progress, f"ancestry: the user's {num_blocks(model)}-block ViT; a fresh head for {task.num_classes} source "
                   f"classes, {v.ancestry_probe_epochs} probe epoch(s), then {v.ancestry_epochs} fine-tuning epoch(s)")
    record: _GradientShare | None = None
    seconds, losses, val_acc, probe = 0.0, [], None, None
    if v.ancestry_probe_epochs:
        head = list(model.head.parameters())
        measure = _records_probe(cfg)
        ids = {id(p) for p in head}
        if measure:
            record = _GradientShare(model, clear=True)
        try:
            for p in model.parameters():  # measured blocks need gradients; the optimizer still holds only the head
                p.requires_grad_(measure or id(p) in ids)
            res = train_classifier(
                _Probe(model), task.loader(v.batch_size, cfg.data.augment, derive_seed(cfg.seed, "ancestry-probe-data")),
                v.ancestry_probe_epochs, optimizer_factory=_optimizer_factory(v.lr, v.weight_decay, record, only=head),
                scheduler_factory=_scheduler(v.schedule), device=device, amp=v.amp,
                seed=derive_seed(cfg.seed, "ancestry-probe"), eval_fn=task.accuracy,
                eval_epochs=[v.ancestry_probe_epochs],
            )
        finally:
            for p in model.parameters():
                p.requires_grad_(True)
        val_acc, seconds, losses = res["curve"][-1], res["train_seconds"], list(res["loss"])
        probe = {"epochs": v.ancestry_probe_epochs, "val_acc": val_acc, "train_seconds": res["train_seconds"],
                 "gradient_record": measure}
        _say(progress, f"ancestry: probe val accuracy {val_acc:.3f}")
    if v.ancestry_epochs:
        record = _GradientShare(model)
        res = train_classifier(
            model, task.loader(v.batch_size, cfg.data.augment, derive_seed(cfg.seed, "ancestry-data")),
            v.ancestry_epochs, optimizer_factory=_optimizer_factory(v.lr, v.weight_decay, record),
            scheduler_factory=_scheduler(v.schedule), device=device, amp=v.amp,
            seed=derive_seed(cfg.seed, "ancestry-train"), eval_fn=task.accuracy, eval_epochs=[v.ancestry_epochs],
        )
        val_acc, seconds, losses = res["curve"][-1], seconds + res["train_seconds"], losses + list(res["loss"])
    info = {
        "params": sum(int(p.numel()) for p in model.parameters()),
        "depth": num_blocks(model),
        "val_acc": val_acc,
        "loss": losses,
        "train_seconds": seconds,
        "gradient_share": record.segments() if record is not None else [],
        "probe": probe,
        "fine_tune_epochs": v.ancestry_epochs,
    }
    return model, info


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
            raise LearngeneError("the gradient_stability criterion found no gradient record in the ancestry (a user's "
                                 "ancestry records it while it trains: set vit.ancestry_epochs or "
                                 "vit.ancestry_probe_epochs >= 1, or use vit.heur_criterion = 'validation')")
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
    user = anc.get("user")
    if user:
        adapted = f"; adapted: {'; '.join(user['adapted'])}" if user.get("adapted") else ""
        lines.append(f"The ancestry is the user's {user.get('timm') or 'ViT'} from `{user['weights']}` (sha256 "
                     f"{user['sha256'][:12]}...): a fresh source-class head probed for {user['probe_epochs']} epoch(s), "
                     f"then fine-tuned for {user['fine_tune_epochs']} epoch(s){adapted}.")
    if tleg:
        lines.append(f"TLEG: {tleg['rule']['name']} rule, auxiliary depth {tleg['aux_depth']}, val accuracy "
                     f"{_cell(tleg.get('val_acc'))}; learngene stores {tleg['stored_params']:,} parameters "
                     f"({tleg['stored_fraction_of_ancestry']:.1%} of the ancestry).")
    if heur:
        lines.append(f"Heur-LG: ancestry blocks {heur['selected']} by {heur['name']}; learngene stores "
                     f"{heur['stored_params']:,} parameters.")
    n_seeds = len(prot["seeds"])
    lines += ["", "## Test accuracy on the novel classes (mean ± 95% CI over seeds)", "",
              f"Student-t intervals over {n_seeds} seed(s)" + (": with fewer than 5 they are wide, read them as "
                                                              "indicative" if n_seeds < 5 else "") + ".", "",
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
    from learngene.models.vit import num_blocks, vit_config
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
        # a user's ancestry: file, timm name, tensors and patch size checked before the (maybe long) data loading
        user = _UserAncestry(cfg, out) if v.ancestry_weights else None
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
            _say(progress, f"ancestry: {user.describe()}" + (f"; its shape replaces vit.ancestry and vit.{', vit.'.join(ignored)}"
                                                             if ignored else ""))
            shape = vit_config(user_model)
        _preflight(cfg, shape["depth"])
        data_fp = {"data": cfg.to_dict()["data"], "seed": cfg.seed, "source": source}
        anc_fields = {**data_fp, "shape": shape, "epochs": v.ancestry_epochs, "lr": v.lr,
                      "wd": v.weight_decay, "bs": v.batch_size, "schedule": v.schedule, "amp": v.amp,
                      "test_fraction": v.test_fraction}
        if user is not None:  # a changed weights file (its sha256) retrains; preset runs keep their old fingerprints
            anc_fields["user"] = {"sha256": user.sha256, "timm": user.timm, "kind": user.kind,
                                  "probe_epochs": v.ancestry_probe_epochs, "probe_record": _records_probe(cfg)}
        anc_fp = _fingerprint(anc_fields)
        src_task = _Task(data, source, spec, v.test_fraction, derive_seed(cfg.seed, "source-split"), dev)
        ancestry, anc_info = _train_ancestry(cfg, shape, src_task, out / "cache" / "ancestry", dev, anc_fp, progress,
                                             user=user_model)
        del user_model
        n_anc = num_blocks(ancestry)
        anc_label = v.ancestry if user is None else user.describe()
        anc_info.update(preset=v.ancestry if user is None else None, shape=shape, fingerprint=anc_fp, depth=n_anc)
        if user is not None:
            anc_info["user"] = {"weights": str(user.path), "kind": user.kind, "sha256": user.sha256,
                                "timm": user.timm or None, "adapted": user.adapted,
                                "probe_epochs": v.ancestry_probe_epochs, "fine_tune_epochs": v.ancestry_epochs}
        _say(progress, f"ancestry: val accuracy {anc_info['val_acc']:.3f}")

        genes: dict[str, Any] = {}
        gene_shas: dict[str, str] = {}  # the saved tensors' sha256: descendants are reused only for the same genes
        report: dict[str, Any] = {}
        if "heur-lg" in v.methods:
            crit = _choose_blocks(cfg, ancestry, anc_info, data, split, spec, dev, progress)
            gene = extract_heur_lg(ancestry, crit["selected"], spec, criterion=crit,
                                   provenance={"run": str(out.resolve()), "ancestry": anc_label, "seed": cfg.seed})
            gene_shas["heur-lg"] = gene.save(out / "genes" / "heur-lg")["sha256"]
            genes["heur-lg"] = TransformerGene.load(out / "genes" / "heur-lg")
            report["heur_lg"] = {**crit, "dir": str(out / "genes" / "heur-lg"), "stored_params": gene.stored_params}
        if "tleg" in v.methods:
            aux_fp = _fingerprint({"ancestry": anc_fp, "rule": v.rule, "depth": v.aux_depth, "epochs": v.aux_epochs,
                                   "distill": [v.distill, v.distill_alpha, v.distill_temperature]})
            aux, aux_info = _train_aux(cfg, shape, ancestry, src_task, out / "cache" / "aux", dev, aux_fp, progress)
            _say(progress, f"tleg: auxiliary val accuracy {aux_info['val_acc']:.3f}")
            gene = extract_tleg(aux, spec, ancestry=ancestry,
                                provenance={"run": str(out.resolve()), "ancestry": anc_label, "seed": cfg.seed,
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

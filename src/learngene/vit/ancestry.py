"""The ancestry of a transformer run: a ViT trained on the source classes, or a user's own model adapted to them.

:func:`train_ancestry` trains the preset ``model.name`` (shape overrides from ``[vit]``, image size and
channels from ``[data]``) while :class:`GradientShare` records each block's share of the gradient (the evidence of
the ``gradient_stability`` criterion), or reuses the cached one whose fingerprint matches.

**A user's own ancestry** (``vit.ancestry_weights``, e.g. a locally stored pretrained DeiT, with
``vit.ancestry_timm`` naming its timm architecture, or a :func:`save_ancestry` / ``save_network`` directory)
replaces the trained preset: :class:`UserAncestry` reads it before the data loads (local files only; ``.pth``
through ``torch.load(weights_only=True)``), builds it for ``data.image_size`` / ``data.channels`` (the positional
embedding resampled to the new patch grid, the patch kernel's input channels adapted by timm's
``adapt_input_conv``, both recorded in the report), and refuses with a :class:`ConfigError` / :class:`ModelError`
naming the key when it cannot.  Its own head is always replaced by a fresh one for the source classes (the TLEG
teacher must output source-class logits): ``vit.ancestry_probe_epochs`` of a linear probe (only the head trains;
the rest frozen and in eval mode), then ``vit.ancestry_epochs`` of fine-tuning everything (0: the blocks stay
exactly the file's).  With ``ancestry_epochs = 0`` the Heur-LG ``gradient_stability`` record comes from the
probe's steps (each block's gradient is measured, never applied).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed
from timm.models import adapt_input_conv
from torch import Tensor, nn

from learngene.artifacts import NETWORK, load_artifact
from learngene.config import Config
from learngene.engine import fit
from learngene.errors import ConfigError, LearngeneError, ModelError
from learngene.models.cache import cached_network
from learngene.models.io import save_network
from learngene.models.vit import (
    VIT_PRESETS,
    build_vit,
    num_blocks,
    require_timm,
    vit_config,
    vit_preset_config,
)
from learngene.runtime import derive_seed, seeded
from learngene.safeio import sha256_file
from learngene.vit.train import NetworkRecord, Recipe, Task

__all__ = ["GradientShare", "UserAncestry", "save_ancestry", "train_ancestry", "vit_shape"]

log = logging.getLogger(__name__)


def vit_shape(cfg: Config, image_size: int, channels: int, num_classes: int) -> dict[str, Any]:
    """The ancestry's ViT shape record: the ``model.name`` preset with the ``[vit]`` overrides and the data's
    image size and channels."""
    require_timm()  # a missing timm is not a wrong setting
    v = cfg.vit
    name = cfg.model.name
    if name not in VIT_PRESETS:
        raise ConfigError(f"config key model.name = {name!r} is not a registered ViT preset; choose one of "
                          f"{', '.join(sorted(VIT_PRESETS))}")
    try:
        shape = vit_preset_config(name, img_size=image_size, in_chans=channels, num_classes=num_classes,
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


STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_WEIGHTS_KEY = "vit.ancestry_weights"
_TIMM_KEY = "vit.ancestry_timm"


def save_ancestry(model: nn.Module, directory: str | Path) -> dict[str, Any]:
    """Save a plain timm ``VisionTransformer`` as a network directory (``network.json`` + ``model.safetensors``)
    that ``vit.ancestry_weights`` accepts with ``vit.ancestry_timm = ""`` (rebuilt from its shape record).

    ``save_network`` itself needs a model with ``config()``; this adds :func:`~learngene.models.vit.vit_config`
    (a :class:`ModelError` for a model it cannot describe).  Returns the manifest.
    """
    return save_network(NetworkRecord(model), directory, NETWORK)


class UserAncestry:
    """``vit.ancestry_weights`` (+ ``vit.ancestry_timm``): read and checked before the data loads, built after."""

    def __init__(self, cfg: Config, out: Path) -> None:
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
                                  "with learngene.vit.ancestry.save_ancestry and give that directory")
            self.sha256 = sha256_file(self.path)
            self.tensors = self._read_file()
        if self.timm:
            _check_timm_name(self.timm)
        self.adapted: list[str] = []

    # -------------------------------------------------------------- reading
    def _read_network(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
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
                obj: Any = load_file(str(self.path), device="cpu")
            else:  # never plain pickle: only tensors and containers
                obj = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - corrupt, truncated, or objects weights_only refuses
            how = ("a safetensors file" if safetensors else
                   "a torch state dict with torch.load(weights_only=True) (no other objects are unpickled)")
            raise ConfigError(f"config key {_WEIGHTS_KEY} = {self.given!r} cannot be read as {how}: "
                              f"{type(err).__name__}: {str(err)[:300]}; save only the weights (model.state_dict()) as "
                              ".safetensors, or the model with learngene.vit.ancestry.save_ancestry") from None
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
        with seeded(seed), torch.device("meta" if meta else "cpu"):
            if self.timm:
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
                    t = adapt_input_conv(want[1], t, base_chans=t.shape[1])
                    notes.append(f"patch_embed.proj.weight: {want[1]} input channel(s) made from the file's "
                                 f"{self.tensors[k].shape[1]} (data.channels)")
                else:
                    raise ModelError(f"{what}: {k} has shape {tuple(t.shape)} in the file but {want} in the model; "
                                     f"set {_TIMM_KEY} to the timm model the weights were trained as")
            out[k] = t
        return out, notes


def _check_timm_name(name: str) -> None:
    if not timm.is_model(name):  # timm's local registry: nothing is downloaded
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"config key {_TIMM_KEY} = {name!r} is not a timm model name (timm {timm.__version__}); "
                          f"{hint}timm.list_models('deit*') lists the DeiTs, e.g. deit_tiny_patch16_224")


def _resample_pos_embed(model: nn.Module, t: Tensor, what: str) -> tuple[Tensor, str]:
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


class Probe(nn.Module):
    """A linear probe's view of a model: training mode reaches only its head (no dropout/drop path in the body)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> Probe:
        super().train(mode)
        self.model.eval()
        self.model.head.train(mode)
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class GradientShare:
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



def train_ancestry(cfg: Config, shape: dict[str, Any], task: Task, recipe: Recipe, cache: Path, fp: str,
                   user: nn.Module | None = None, probe_record: bool = False,
                   seed: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The ancestry trained on ``task`` (the source classes), or the cached one under fingerprint ``fp``.

    ``user``: a user's ancestry, tuned instead (``probe_record``: its gradient record comes from the probe, see
    :func:`records_probe`).  ``seed``: the learngene seed its draws follow (default ``cfg.seed``)."""
    v = cfg.vit
    seed = cfg.seed if seed is None else seed

    def train() -> tuple[nn.Module, dict[str, Any]]:
        if user is not None:
            return _tune_user_ancestry(cfg, user, task, recipe, probe_record, seed)
        log.info("ancestry: training %d blocks, width %d on %d source classes for %d epochs", shape["depth"],
                 shape["embed_dim"], task.num_classes, v.ancestry_epochs)
        with seeded(derive_seed(seed, "ancestry-init")):
            model = build_vit(shape)
        record = GradientShare(model)
        res = fit(model, recipe.task_batches(task, derive_seed(seed, "ancestry-data")), v.ancestry_epochs,
                  **recipe.options(seed=derive_seed(seed, "ancestry-train"), hook=record, evaluate=task.accuracy,
                                   eval_epochs=[v.ancestry_epochs], desc="ancestry"))
        return model, {
            "params": sum(int(p.numel()) for p in model.parameters()),
            "depth": shape["depth"],
            "val_acc": res["curve"][-1],
            "loss": res["loss"],
            "train_seconds": res["train_seconds"],
            "gradient_share": record.segments(),
        }

    model, info = cached_network(cache, NETWORK, fp, train, accept=lambda _, rec: {"params", "val_acc"} <= set(rec),
                                 saved=NetworkRecord, what="ancestry")
    return model.to(recipe.device).eval(), info


def records_probe(cfg: Config, methods: list[str]) -> bool:
    """Whether a user's ancestry used as is (no fine-tuning) must record its blocks' gradients during the probe."""
    return cfg.vit.ancestry_epochs == 0 and "heur-lg" in methods and cfg.criterion.name == "gradient_stability"


def _tune_user_ancestry(cfg: Config, model: nn.Module, task: Task, recipe: Recipe,
                        measure: bool, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """A user's ancestry on the source classes: a linear probe of its fresh head, then fine-tuning (see the module
    docstring).  The gradient record comes from the fine-tuning, or from the probe when there is none."""
    v = cfg.vit
    log.info("ancestry: the user's %d-block ViT; a fresh head for %d source classes, %d probe epoch(s), then %d "
             "fine-tuning epoch(s)", num_blocks(model), task.num_classes, v.ancestry_probe_epochs, v.ancestry_epochs)
    record: GradientShare | None = None
    seconds, losses, val_acc, probe = 0.0, [], None, None
    if v.ancestry_probe_epochs:
        head = list(model.head.parameters())
        ids = {id(p) for p in head}
        if measure:
            record = GradientShare(model, clear=True)
        try:
            for p in model.parameters():  # measured blocks need gradients; the optimizer still holds only the head
                p.requires_grad_(measure or id(p) in ids)
            res = fit(Probe(model), recipe.task_batches(task, derive_seed(seed, "ancestry-probe-data")),
                      v.ancestry_probe_epochs,
                      **recipe.options(seed=derive_seed(seed, "ancestry-probe"), hook=record, only=head,
                                       evaluate=task.accuracy, eval_epochs=[v.ancestry_probe_epochs],
                                       desc="ancestry probe"))
        finally:
            for p in model.parameters():
                p.requires_grad_(True)
        val_acc, seconds, losses = res["curve"][-1], res["train_seconds"], list(res["loss"])
        probe = {"epochs": v.ancestry_probe_epochs, "val_acc": val_acc, "train_seconds": res["train_seconds"],
                 "gradient_record": measure}
        log.info("ancestry: probe val accuracy %.3f", val_acc)
    if v.ancestry_epochs:
        record = GradientShare(model)
        res = fit(model, recipe.task_batches(task, derive_seed(seed, "ancestry-data")), v.ancestry_epochs,
                  **recipe.options(seed=derive_seed(seed, "ancestry-train"), hook=record, evaluate=task.accuracy,
                                   eval_epochs=[v.ancestry_epochs], desc="ancestry fine-tuning"))
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

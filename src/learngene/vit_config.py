"""Settings of the transformer-learngene path (``paradigm = "vit"``): the ``[vit]`` section of a config.

Kept apart from :mod:`learngene.config` (which only embeds it) so the transformer path owns its settings and
their validation; like the rest of the config this module imports nothing heavy (no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from learngene.errors import ConfigError

__all__ = ["HEUR_CRITERIA", "VIT_METHODS", "ViTConfig", "validate_vit"]

VIT_METHODS = ("scratch", "heur-lg", "truncated", "tleg")
HEUR_CRITERIA = ("gradient_stability", "validation")
_SCHEDULES = ("cosine", "constant")


@dataclass
class ViTConfig:
    """Ancestry -> learngene (TLEG templates or Heur-LG blocks) -> descendants of many depths."""

    ancestry: str = "vit_p8_d96_l8"  # a registered ViT preset (learngene list models)
    # shape overrides of the preset (None: the preset's own); img_size and in_chans always follow [data]
    ancestry_depth: int | None = None
    patch_size: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    ancestry_epochs: int = 30  # source-class training of the ancestry (with ancestry_weights: fine-tuning; 0 = as is)
    # A user's own ancestry (e.g. a locally stored pretrained DeiT) instead of training vit.ancestry from scratch.
    # ancestry_weights: a LOCAL path (nothing is ever downloaded): a .safetensors or .pth/.pt/.bin state dict (.pth
    # read with torch.load(weights_only=True) only), or a directory written by save_network / save_ancestry
    # (network.json + model.safetensors; a previous run's cache/ancestry works too). When set, vit.ancestry and the
    # shape overrides (ancestry_depth, patch_size, embed_dim, num_heads) are ignored: the ancestry's shape, and so
    # the auxiliary net's and the descendants', is the loaded model's (vit_config(model)).
    ancestry_weights: str = ""
    # ancestry_timm: the timm model name that builds ancestry_weights' architecture (timm.create_model(name,
    # pretrained=False, img_size=data.image_size, in_chans=data.channels, num_classes=<source classes>)), e.g.
    # "deit_tiny_patch16_224"; "" with a save_network directory: rebuilt from the directory's architecture record.
    ancestry_timm: str = ""
    # epochs of a linear probe (only the fresh source-class head trains; the rest frozen, in eval mode) before
    # the ancestry_epochs of fine-tuning; used only with ancestry_weights, >= 1 when ancestry_epochs = 0 (the
    # TLEG teacher and Heur-LG need source-class logits, and the user's own head is for other classes)
    ancestry_probe_epochs: int = 5
    rule: str = "linear"  # expansion rule of the auxiliary net: linear (TLEG) | stagewise[:N] (SWS) | stack
    aux_depth: int = 8
    aux_epochs: int = 30
    distill: str = "soft"  # soft | hard (DeiT-style) distillation from the ancestry
    distill_alpha: float = 0.5
    distill_temperature: float = 1.0
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 128
    schedule: str = "cosine"  # learning-rate schedule of every training: cosine (per step, no warm-up) | constant
    amp: bool = False  # mixed precision (bfloat16 on CPU, float16 + loss scaling on CUDA)
    # Heur-LG: which ancestry blocks become the learngene
    heur_criterion: str = "gradient_stability"  # gradient_stability | validation (pseudo-tasks of open-world classes)
    heur_blocks: int = 3  # size of the chosen window of contiguous blocks (capped at ancestry depth - 1)
    heur_val_epochs: int = 2  # validation criterion: fine-tuning epochs per candidate window
    # descendants on the novel classes (full-data classification)
    depths: list[int] = field(default_factory=lambda: [2, 4, 6, 8, 10, 12])
    methods: list[str] = field(default_factory=lambda: ["scratch", "heur-lg", "truncated", "tleg"])
    test_fraction: float = 0.25  # of each novel class's images, held out for the test accuracy
    descendant_epochs: int = 10
    descendant_lr: float | None = None  # None: vit.lr
    scratch_epochs: int = 30
    eval_epochs: list[int] = field(default_factory=lambda: [0, 1, 3, 10])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # few-shot episodes ([evaluate] settings) on the novel classes
    fewshot_epochs: int = 20  # full-batch steps on each episode's support set
    fewshot_depths: list[int] | None = None  # None: the ancestry's depth only


def _int_at_least(value: object, key: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"config key vit.{key} = {value!r} must be an integer >= {low}; fix the value")


def validate_vit(v: ViTConfig) -> None:
    """Refuse impossible transformer settings before anything trains (key named, fix given)."""
    for key in ("ancestry_weights", "ancestry_timm"):
        if not isinstance(getattr(v, key), str):
            raise ConfigError(f"config key vit.{key} = {getattr(v, key)!r} must be a string; fix the value")
    if "://" in v.ancestry_weights:
        raise ConfigError(f"config key vit.ancestry_weights = {v.ancestry_weights!r} is a URL; it must be a local path "
                          "(nothing is downloaded): download the weights yourself and give the file's path")
    if v.ancestry_timm and not v.ancestry_weights:
        raise ConfigError(f"config key vit.ancestry_timm = {v.ancestry_timm!r} needs vit.ancestry_weights, the local "
                          "file of its weights (nothing is downloaded); set vit.ancestry_weights, or leave "
                          "vit.ancestry_timm empty to train the preset vit.ancestry")
    _int_at_least(v.ancestry_probe_epochs, "ancestry_probe_epochs", 0)
    if v.ancestry_weights:
        _int_at_least(v.ancestry_epochs, "ancestry_epochs", 0)
        if v.ancestry_epochs == 0 and v.ancestry_probe_epochs == 0:
            raise ConfigError("config keys vit.ancestry_epochs = 0 and vit.ancestry_probe_epochs = 0 leave the user's "
                              "ancestry without a head for the source classes (the TLEG teacher and Heur-LG need one); "
                              "set vit.ancestry_probe_epochs >= 1 (a linear probe) or vit.ancestry_epochs >= 1")
    else:
        if isinstance(v.ancestry_epochs, int) and not isinstance(v.ancestry_epochs, bool) and v.ancestry_epochs == 0:
            raise ConfigError("config key vit.ancestry_epochs = 0 would leave the preset ancestry untrained; 0 (use as "
                              "is) is only for a user's ancestry (vit.ancestry_weights); set it >= 1")
        _int_at_least(v.ancestry_epochs, "ancestry_epochs", 1)
    for key in ("aux_depth", "aux_epochs", "batch_size", "descendant_epochs", "scratch_epochs",
                "heur_blocks", "heur_val_epochs", "fewshot_epochs"):
        _int_at_least(getattr(v, key), key, 1)
    for key in ("ancestry_depth", "patch_size", "embed_dim", "num_heads"):
        if getattr(v, key) is not None:
            _int_at_least(getattr(v, key), key, 1)
    if v.embed_dim is not None and v.num_heads is not None and v.embed_dim % v.num_heads:
        raise ConfigError(f"config keys vit.embed_dim = {v.embed_dim} and vit.num_heads = {v.num_heads}: the width must "
                          "be divisible by the head count; fix the values")
    if v.distill not in ("soft", "hard"):
        raise ConfigError(f"config key vit.distill = {v.distill!r} is not one of soft, hard; fix the value")
    if v.schedule not in _SCHEDULES:
        raise ConfigError(f"config key vit.schedule = {v.schedule!r} is not one of {', '.join(_SCHEDULES)}; fix the value")
    if v.heur_criterion not in HEUR_CRITERIA:
        raise ConfigError(f"config key vit.heur_criterion = {v.heur_criterion!r} is not one of "
                          f"{', '.join(HEUR_CRITERIA)}; fix the value")
    if not v.depths or any(d < 1 for d in v.depths):
        raise ConfigError(f"config key vit.depths = {v.depths} must list depths >= 1")
    if len(set(v.depths)) != len(v.depths):
        raise ConfigError(f"config key vit.depths = {v.depths} lists a depth twice; list each depth once")
    if v.fewshot_depths is not None and any(d < 1 for d in v.fewshot_depths):
        raise ConfigError(f"config key vit.fewshot_depths = {v.fewshot_depths} must list depths >= 1 (or be unset)")
    if not v.methods:
        raise ConfigError(f"config key vit.methods must list at least one of {', '.join(VIT_METHODS)}")
    unknown = [m for m in v.methods if m not in VIT_METHODS]
    if unknown:
        raise ConfigError(f"config key vit.methods names unknown methods {unknown}; choose from {', '.join(VIT_METHODS)}")
    if len(set(v.methods)) != len(v.methods):
        raise ConfigError(f"config key vit.methods = {v.methods} lists a method twice; list each method once")
    if any(e < 0 for e in v.eval_epochs):
        raise ConfigError(f"config key vit.eval_epochs = {v.eval_epochs} must list epochs >= 0 (0: before training)")
    if not v.seeds:
        raise ConfigError("config key vit.seeds must list at least one seed")
    if not (0.0 < v.test_fraction < 1.0):
        raise ConfigError(f"config key vit.test_fraction = {v.test_fraction} must be between 0 and 1 (exclusive)")
    if v.descendant_lr is not None and not (math.isfinite(v.descendant_lr) and v.descendant_lr > 0):
        raise ConfigError(f"config key vit.descendant_lr = {v.descendant_lr} must be > 0 (or unset for vit.lr)")
    if not (0.0 <= v.distill_alpha <= 1.0) or v.distill_temperature <= 0 or v.lr <= 0 or v.weight_decay < 0:
        raise ConfigError("config keys vit.distill_alpha (in [0, 1]), vit.distill_temperature (> 0), vit.lr (> 0) and "
                          "vit.weight_decay (>= 0) are out of range; fix the values")

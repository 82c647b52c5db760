"""Settings of the transformer-learngene path (``paradigm = "vit"``): the ``[vit]`` section of a config.

Kept apart from :mod:`learngene.config` (which only embeds it) so the transformer path owns its settings and
their validation; like the rest of the config this module imports nothing heavy (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from learngene.errors import ConfigError

__all__ = ["ViTConfig", "validate_vit"]


@dataclass
class ViTConfig:
    """Ancestry -> learngene (TLEG templates or Heur-LG blocks) -> descendants of many depths."""

    ancestry: str = "vit_p8_d96_l8"  # a registered ViT preset (learngene list models)
    ancestry_epochs: int = 30
    rule: str = "linear"  # expansion rule of the auxiliary net: linear (TLEG) | stagewise[:N] (SWS) | stack
    aux_depth: int = 8
    aux_epochs: int = 30
    distill: str = "soft"  # soft | hard (DeiT-style) distillation from the ancestry
    distill_alpha: float = 0.5
    distill_temperature: float = 1.0
    lr: float = 1e-3
    weight_decay: float = 0.05
    batch_size: int = 128
    depths: list[int] = field(default_factory=lambda: [2, 4, 6, 8, 10, 12])
    methods: list[str] = field(default_factory=lambda: ["scratch", "heur-lg", "truncated", "tleg"])
    descendant_epochs: int = 10
    scratch_epochs: int = 30
    eval_epochs: list[int] = field(default_factory=lambda: [0, 1, 3, 10])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


def validate_vit(v: ViTConfig) -> None:
    """Refuse impossible transformer settings before anything trains (key named, fix given)."""
    for key in ("ancestry_epochs", "aux_depth", "aux_epochs", "batch_size", "descendant_epochs", "scratch_epochs"):
        if getattr(v, key) < 1:
            raise ConfigError(f"config key vit.{key} = {getattr(v, key)} must be >= 1; fix the value")
    if v.distill not in ("soft", "hard"):
        raise ConfigError(f"config key vit.distill = {v.distill!r} is not one of soft, hard; fix the value")
    if not v.depths or any(d < 1 for d in v.depths):
        raise ConfigError(f"config key vit.depths = {v.depths} must list depths >= 1")
    if not v.seeds:
        raise ConfigError("config key vit.seeds must list at least one seed")
    if not (0.0 <= v.distill_alpha <= 1.0) or v.distill_temperature <= 0 or v.lr <= 0 or v.weight_decay < 0:
        raise ConfigError("config keys vit.distill_alpha (in [0, 1]), vit.distill_temperature (> 0), vit.lr (> 0) and "
                          "vit.weight_decay (>= 0) are out of range; fix the values")

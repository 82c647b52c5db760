"""The ``[vit]`` section: what only the transformer path (``paradigm = "vit"``) has.

What both paradigms share lives in the shared sections of :mod:`learngene.config` (the optimization in
``[train]``, the criterion, the evaluation, the seeds); this section holds the ancestry's shape and source, TLEG's
auxiliary net and the descendants' depths and budgets.  Like the rest of the config it imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from learngene.config_rules import (
    Rule,
    Section,
    all_of,
    at_least,
    between,
    each,
    nonempty,
    one_of,
    optional,
    unique,
)
from learngene.errors import ConfigError

__all__ = ["ViTConfig", "check_vit"]


def _local_path(value: Any) -> str | None:
    if "://" in value:
        return ("is a URL; it must be a local path (nothing is downloaded): download the weights yourself and give "
                "the file's path")
    return None


_DEPTHS = all_of(nonempty("depth"), each(at_least(1), "depth"), unique("depth"))


@dataclass
class ViTConfig(Section):
    """Ancestry -> learngene (TLEG templates or Heur-LG blocks) -> descendants of many depths."""

    SECTION: ClassVar[str] = "vit"
    # the ancestry: the preset model.name, with these shape overrides (None: the preset's own); img_size and
    # in_chans always follow [data]
    ancestry_depth: int | None = None
    patch_size: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    ancestry_epochs: int = 30  # source-class training of the ancestry (with ancestry_weights: fine-tuning; 0 = as is)
    # A user's own ancestry (e.g. a locally stored pretrained DeiT) instead of training model.name from scratch.
    # ancestry_weights: a LOCAL path (nothing is ever downloaded): a .safetensors or .pth/.pt/.bin state dict (.pth
    # read with torch.load(weights_only=True) only), or a directory written by save_network / save_ancestry
    # (network.json + model.safetensors; a previous run's cache/ancestry works too). When set, model.name and the
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
    distill: str = "soft"  # soft | hard (DeiT-style) distillation from the ancestry (temperature: train.distill_temperature)
    distill_alpha: float = 0.5
    # where the auxiliary net starts: "random" (TLEG's template init) or "ancestry" (the templates a least-squares fit
    # of the rule to the ancestry's blocks, its embeddings, final norm and head copied: learngene.vit.auxiliary)
    aux_init: str = "random"
    schedule: str = "cosine"  # learning-rate schedule of every training: cosine (per step, no warm-up) | constant
    # descendants on the novel classes (full-data classification; learning rate individual.lr, else train.lr)
    depths: list[int] = field(default_factory=lambda: [2, 4, 6, 8, 10, 12])
    # widths (embedding channels) of the grid: every depth at every width; None or []: the ancestry's width only. Heads:
    # the ancestry's count when it divides the width, else width / the ancestry's head width
    widths: list[int] | None = None
    # the frequency learngene: the fraction of DCT coefficients kept along depth and every width axis (a 3-axis
    # tensor keeps about frequency_keep**3 of its numbers)
    frequency_keep: float = 0.6
    descendant_epochs: int = 10
    scratch_epochs: int = 30
    eval_epochs: list[int] = field(default_factory=lambda: [0, 1, 3, 10])
    # few-shot episodes ([evaluate] settings) at these descendant depths, trained by the individual recipe
    # ([individual]: imprinted cosine head, head stage, gentle fine-tuning, augmentation; learngene.vit.fewshot)
    fewshot_depths: list[int] | None = None  # None: the ancestry's depth only
    fewshot_lr: float = 0.01  # that recipe's SGD rate (individual.lr is the full-data descendants' AdamW rate here)
    # the outermost random stage: each learngene seed trains its own ancestry, auxiliary net, genes and descendants
    # (evaluate.seeds are the descendant seeds nested in each), so intervals are over learngenes; the class split
    # stays on the top-level seed.  None: one learngene, of seed = the top-level seed (intervals conditional on it)
    learngene_seeds: list[int] | None = None
    # equal-budget comparisons: every method also trains a run *scheduled* for exactly each of these epoch counts
    # (its own cosine schedule), beside its descendant_epochs / scratch_epochs run -- e.g. [10]: scratch at 10
    budget_epochs: list[int] = field(default_factory=list)

    RULES: ClassVar[dict[str, Rule]] = {
        "ancestry_depth": optional(at_least(1)),
        "patch_size": optional(at_least(1)),
        "embed_dim": optional(at_least(1)),
        "num_heads": optional(at_least(1)),
        "ancestry_epochs": at_least(0),
        "ancestry_weights": _local_path,
        "ancestry_probe_epochs": at_least(0),
        "aux_depth": at_least(1),
        "aux_epochs": at_least(1),
        "distill": one_of("soft", "hard"),
        "distill_alpha": between(0.0, 1.0, closed=True),
        "aux_init": one_of("random", "ancestry"),
        "schedule": one_of("cosine", "constant"),
        "depths": _DEPTHS,
        "widths": optional(all_of(each(at_least(1), "width"), unique("width"))),
        "frequency_keep": lambda v: None if 0.0 < v <= 1.0 else "must be in (0, 1] (1: every coefficient); fix the value",
        "descendant_epochs": at_least(1),
        "scratch_epochs": at_least(1),
        "eval_epochs": each(at_least(0, "must be >= 0 (0: before training)"), "epoch"),
        "fewshot_depths": optional(each(at_least(1), "depth")),
        "fewshot_lr": lambda v: None if v > 0 else "must be > 0",
        "learngene_seeds": optional(all_of(nonempty("seed"), unique("seed"))),
        "budget_epochs": all_of(each(at_least(1), "epoch count"), unique("epoch count")),
    }


def check_vit(v: ViTConfig) -> None:
    """The rules of ``[vit]`` that involve several of its keys."""
    if v.ancestry_timm and not v.ancestry_weights:
        raise ConfigError(f"config key vit.ancestry_timm = {v.ancestry_timm!r} needs vit.ancestry_weights, the local "
                          "file of its weights (nothing is downloaded); set vit.ancestry_weights, or leave "
                          "vit.ancestry_timm empty to train the preset model.name")
    if v.ancestry_weights and v.ancestry_epochs == 0 and v.ancestry_probe_epochs == 0:
        raise ConfigError("config keys vit.ancestry_epochs = 0 and vit.ancestry_probe_epochs = 0 leave the user's "
                          "ancestry without a head for the source classes (the TLEG teacher and Heur-LG need one); "
                          "set vit.ancestry_probe_epochs >= 1 (a linear probe) or vit.ancestry_epochs >= 1")
    if not v.ancestry_weights and v.ancestry_epochs == 0:
        raise ConfigError("config key vit.ancestry_epochs = 0 would leave the preset ancestry untrained; 0 (use as "
                          "is) is only for a user's ancestry (vit.ancestry_weights); set it >= 1")
    if v.embed_dim is not None and v.num_heads is not None and v.embed_dim % v.num_heads:
        raise ConfigError(f"config keys vit.embed_dim = {v.embed_dim} and vit.num_heads = {v.num_heads}: the width must "
                          "be divisible by the head count; fix the values")

"""The sections of the run configuration (but ``[vit]``, :mod:`learngene.vit_config`): fields, defaults and the
rule each value must obey (:mod:`learngene.config_rules`).  :mod:`learngene.config` composes them into a
:class:`~learngene.config.Config`, with the rules that involve several keys and the paradigms' defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from learngene.config_rules import (
    Rule,
    Section,
    all_of,
    at_least,
    between,
    each,
    non_negative,
    nonempty,
    one_of,
    optional,
    positive,
    unique,
)
from learngene.errors import ConfigError

__all__ = ["BaselineConfig", "CriterionConfig", "DataConfig", "EvaluateConfig", "GrowthConfig", "IndividualConfig",
           "ModelConfig", "OpenSetConfig", "RecordConfig", "StreamConfig", "TrainConfig", "parse_setting"]


def parse_setting(setting: str) -> tuple[int, int]:
    """'5way1shot' -> (5, 1)."""
    s = setting.lower().replace("-", "").replace("_", "")
    try:
        ways, shots = s.split("way")
        if not shots.endswith("shot"):
            raise ValueError
        w, k = int(ways), int(shots[: -len("shot")])
    except ValueError:
        raise ConfigError(f"evaluation setting {setting!r} is not of the form '<ways>way<shots>shot', e.g. '5way1shot'") from None
    if w < 2 or k < 1:
        raise ConfigError(f"evaluation setting {setting!r}: need at least 2 ways and 1 shot")
    return w, k


def _settings(value: list[str]) -> None:
    for s in value:
        parse_setting(s)  # its own message names the setting


def _split_fractions(value: list[float]) -> str | None:
    if len(value) != 3 or any(f < 0 for f in value):
        return "must be three non-negative numbers (source, open-world, novel)"
    return None


@dataclass
class DataConfig(Section):
    SECTION: ClassVar[str] = "data"
    source: str = "glyphs"  # a registered data source (learngene list sources): glyphs | omniglot | cifar100 | imagefolder
    root: str | None = None  # None: $LEARNGENE_DATA/<source> or ../shared/data/<source>
    image_size: int = 32
    channels: int | None = None
    max_classes: int | None = None  # glyphs only: how many code points to render
    per_class: int = 20  # glyphs only: images per class
    split: str = "groups"  # groups (random split of alphabets/scripts) | classes | paper | explicit
    split_fractions: list[float] = field(default_factory=lambda: [0.6, 0.15, 0.25])
    source_groups: list[str] | None = None  # with split = "explicit"
    open_world_groups: list[str] | None = None
    novel_groups: list[str] | None = None
    augment: str = "affine"  # none | affine | flip_crop

    RULES: ClassVar[dict[str, Rule]] = {
        "image_size": positive,
        "channels": one_of(None, 1, 3, why="must be 1 or 3 (or unset)"),
        "per_class": positive,
        "split": one_of("groups", "classes", "paper", "explicit"),
        "split_fractions": _split_fractions,
        "augment": one_of("none", "affine", "flip_crop"),
    }


@dataclass
class StreamConfig(Section):
    SECTION: ClassVar[str] = "stream"
    tasks: int = 10
    ways: int = 5
    train_per_class: int | None = None
    # of each class's images, held out for the test accuracy (CNN: every task's classes; ViT: the source, novel
    # and pseudo-task classes)
    test_fraction: float = 0.2
    class_sampling: str = "new_first"  # new_first | random

    RULES: ClassVar[dict[str, Rule]] = {
        "tasks": positive,
        "ways": at_least(2, why=": a task needs at least 2 classes to learn to tell apart; set stream.ways >= 2"),
        "train_per_class": optional(at_least(1, why="must be >= 1 (or unset for all images)")),
        "test_fraction": between(0.0, 1.0),
        "class_sampling": one_of("new_first", "random"),
    }


@dataclass
class ModelConfig(Section):
    SECTION: ClassVar[str] = "model"
    name: str = "vgg4"  # a registered model (learngene list models); ViT: the ancestry's preset, e.g. vit_p8_d96_l8
    hidden: list[int] | None = None
    dropout: float | None = None


@dataclass
class GrowthConfig(Section):
    SECTION: ClassVar[str] = "growth"
    mode: str = "round_robin"  # round_robin | paper | none
    step: int = 16
    max_width: int = 512
    deepen_every: int | None = None
    trigger: str = "unknown"  # unknown: grow only when the new task brings classes recognized as unknown | always | never
    # symmetry-breaking noise on the split outgoing weights of replicated units, relative to the consumer's
    # weight std; the split stays exact (the replicas' shares still sum to the original), so widening keeps
    # the function and the copies get different gradients from the first step on
    noise: float = 0.05

    RULES: ClassVar[dict[str, Rule]] = {
        "mode": one_of("round_robin", "paper", "none"),
        "step": positive,
        "max_width": positive,
        "trigger": one_of("unknown", "always", "never"),
        "noise": non_negative,
    }


@dataclass
class TrainConfig(Section):
    """How the model on the source classes trains (the collective CNN; ViT: the ancestry, the auxiliary net and,
    unless ``individual.lr`` is set, the descendants)."""

    SECTION: ClassVar[str] = "train"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    loss_scope: str = "task"  # task: cross-entropy over the current task's classes | all: over every class seen
    memory_per_class: int = 0  # exemplars kept per class seen and replayed with later tasks (0: no memory)
    distill: float = 0.0  # weight of LwF distillation from the model before the task, on old classes' logits
    distill_temperature: float = 2.0  # of LwF (CNN) or of the auxiliary net's distillation (ViT)
    ewc_lambda: float = 40.0  # the Fisher is scaled to max 1: keep lr * ewc_lambda <= ~2 (SGD momentum 0.9 diverges near 3.8)
    ewc_decay: float = 1.0
    fisher_samples: int = 256
    amp: bool = False
    channels_last: bool = False
    on_nonfinite: str = "stop"  # stop | skip
    checkpoint_every: int = 1  # epochs between checkpoints inside a task

    RULES: ClassVar[dict[str, Rule]] = {
        "epochs": positive,
        "batch_size": positive,
        "lr": positive,
        "momentum": non_negative,
        "weight_decay": non_negative,
        "loss_scope": one_of("task", "all"),
        "memory_per_class": non_negative,
        "distill": non_negative,
        "distill_temperature": positive,
        "ewc_lambda": non_negative,
        "ewc_decay": non_negative,
        "fisher_samples": positive,
        "on_nonfinite": one_of("stop", "skip"),
        "checkpoint_every": positive,
    }


@dataclass
class RecordConfig(Section):
    SECTION: ClassVar[str] = "record"
    threshold: float = 1e-4
    signed: bool = False

    RULES: ClassVar[dict[str, Rule]] = {"threshold": non_negative}


@dataclass
class OpenSetConfig(Section):
    SECTION: ClassVar[str] = "openset"
    method: str = "msp"  # msp | energy | maxlogit
    tpr: float = 0.95
    # a class of a new task is taken for unknown when at least this fraction of its images score below the
    # known-class threshold (known classes put 1 - tpr = 5% of their images there)
    class_fraction: float = 0.2

    RULES: ClassVar[dict[str, Rule]] = {
        "method": one_of("msp", "energy", "maxlogit"),
        "tpr": between(0.0, 1.0),
        "class_fraction": lambda v: None if 0.0 < v <= 1.0 else "must be in (0, 1]; fix the value",
    }


@dataclass
class CriterionConfig(Section):
    """Which contiguous blocks of the trained model become the learngene (the collective CNN's conv blocks, or a
    transformer ancestry's blocks ``blocks.i`` for Heur-LG)."""

    SECTION: ClassVar[str] = "criterion"
    name: str = "validation"  # a registered criterion (learngene list criteria): validation | gradient_stability | fixed
    n_layers: int | None = None  # size of the learngene; None: let the criterion choose
    layers: list[str] | None = None  # with name = "fixed"
    pseudo_tasks: int = 4
    pseudo_shots: int = 5
    pseudo_epochs: int = 15  # training epochs of each candidate on the validation criterion's pseudo-tasks

    RULES: ClassVar[dict[str, Rule]] = {
        "n_layers": optional(at_least(1)),
        "pseudo_tasks": positive,
        "pseudo_shots": positive,
        "pseudo_epochs": positive,
    }


_WIDTHS = each(at_least(1), "width")


@dataclass
class IndividualConfig(Section):
    """The individual model's size and few-shot training: the one definition of these settings (the library
    functions of :mod:`learngene.individual` take this object).  ViT: ``epochs`` are the few-shot episodes'
    full-batch steps and ``lr`` the descendants' learning rate (None: ``train.lr``)."""

    SECTION: ClassVar[str] = "individual"
    before: list[int] = field(default_factory=lambda: [32])  # fresh conv widths before the gene
    after: list[int] = field(default_factory=list)  # fresh conv widths after the gene
    pool_before: bool = True  # pools in the fresh layers so the gene sees the spatial size it saw in the source
    adapt: bool = True  # the last fresh layer before the gene outputs the gene's input channels
    hidden: list[int] = field(default_factory=list)
    # how features reach the classifier: "avg" global average pooling (translation-robust), "flatten" the map
    pool: str = "avg"
    # "cosine": logits = scale * cos(feature, class row), imprinted with the class prototypes, so training starts
    # as cosine nearest-class-mean on the inherited features; "linear": a plain Linear layer
    classifier: str = "cosine"
    # 60 epochs at lr 0.03: chosen on Omniglot source pseudo-tasks (BENCHMARKS.md); presets may override both
    epochs: int = 60
    # epochs of a first stage in which the inherited layers are frozen and only the fresh layers and the head
    # learn (linear probe, then fine-tune); 0: no such stage
    head_epochs: int = 0
    batch_size: int = 32
    lr: float | None = 0.03
    schedule: str = "constant"  # constant | cosine (decay over the main stage's steps)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    ewc_lambda: float = 50.0  # with the support-set Fisher scaled to max 1 (lambda * lr must stay < ~2)
    inherit_mode: str = "ewc"  # ewc | freeze | lr_scale | free
    lr_scale: float = 0.1
    imprint: bool = True
    # inherited BatchNorm layers: "frozen" keeps the gene's statistics (a handful of support images cannot
    # estimate them), "train" lets batch statistics replace them
    bn: str = "frozen"
    # augmentation of the support images while training: none | affine (drawings) | flip_crop (natural images)
    augment: str = "affine"

    RULES: ClassVar[dict[str, Rule]] = {
        "before": _WIDTHS,
        "after": _WIDTHS,
        "hidden": _WIDTHS,
        "pool": one_of("avg", "flatten"),
        "classifier": one_of("cosine", "linear"),
        # 0 is allowed: with head_epochs only the head stage runs; with neither, the model stays the imprinted
        # nearest-class-mean classifier on the gene
        "epochs": non_negative,
        "head_epochs": non_negative,
        "batch_size": positive,
        "lr": optional(positive),
        "schedule": one_of("constant", "cosine"),
        "momentum": non_negative,
        "weight_decay": non_negative,
        "ewc_lambda": non_negative,
        "inherit_mode": one_of("ewc", "freeze", "lr_scale", "free"),
        "lr_scale": non_negative,
        "bn": one_of("frozen", "train"),
        "augment": one_of("none", "affine", "flip_crop"),
    }


@dataclass
class EvaluateConfig(Section):
    SECTION: ClassVar[str] = "evaluate"
    settings: list[str] = field(default_factory=lambda: ["5way1shot", "5way5shot"])
    headline: str = "5way1shot"
    episodes: int = 20
    queries: int = 15
    curve_every: int = 1  # query accuracy every N epochs for the convergence curve (1 = every epoch)
    seeds: list[int] = field(default_factory=lambda: [0])  # CNN: evaluation repeats; ViT: descendant trainings
    # the compared methods (learngene list methods: CNN rows / transformer columns); None: every registered one,
    # in registration order
    methods: list[str] | None = None
    # a trained method's own few-shot learning rate (e.g. {scratch = 0.1}), chosen on source pseudo-tasks with
    # `learngene tune --score individual --method M --param evaluate.method_lr.M=...`; unlisted methods share
    # individual.lr (the report names which do)
    method_lr: dict[str, float] = field(default_factory=dict)

    RULES: ClassVar[dict[str, Rule]] = {
        "method_lr": lambda v: next((f"gives {m!r} the learning rate {lr!r}, which must be > 0; fix the value"
                                     for m, lr in v.items() if not lr > 0), None),
        "settings": all_of(nonempty("setting"), _settings),
        "headline": lambda v: parse_setting(v) and None,
        "episodes": positive,
        "queries": positive,
        "curve_every": positive,
        "seeds": nonempty("seed"),
        "methods": optional(all_of(nonempty("method"), unique("method"))),
    }


@dataclass
class BaselineConfig(Section):
    """Reference models trained on the stream's classes: ``joint`` (all classes at once) and ``protonet``.

    ``joint`` gets the stream's image budget (every task's training images x train.epochs) unless its epochs are
    set here; ``protonet`` gets as many optimizer steps (episodes) as ``joint``, is trained at every shot count
    the evaluation uses, and has its own learning rate and logit scale (chosen on source pseudo-tasks with
    ``learngene tune --score individual --method protonet``). Both use the collective model's optimizer
    settings otherwise, and its augmentation.
    """

    SECTION: ClassVar[str] = "baseline"
    joint_epochs: int | None = None  # None: the stream's image budget divided by the joint training set's size
    protonet_ways: int = 20  # classes per training episode (at most the stream's classes)
    # support images per class and episode (they form the prototypes); None: the shots of evaluate.settings,
    # taken in turn episode by episode, so the model is trained at each shot it is evaluated at
    protonet_shots: int | None = None
    protonet_queries: int = 5  # query images per class and episode (they carry the loss)
    protonet_episodes: int | None = None  # None: as many as joint's optimizer steps
    protonet_scale: float = 10.0  # logits = scale x cosine(query feature, prototype)
    protonet_lr: float | None = None  # None: train.lr (the collective model's)

    RULES: ClassVar[dict[str, Rule]] = {
        "joint_epochs": optional(at_least(1, why="must be >= 1 (or unset for the stream's image budget)")),
        "protonet_ways": at_least(2),
        "protonet_shots": optional(at_least(1)),
        "protonet_queries": at_least(1),
        "protonet_episodes": optional(at_least(1, why="must be >= 1 (or unset for joint's optimizer steps)")),
        "protonet_scale": positive,
        "protonet_lr": optional(positive),
    }

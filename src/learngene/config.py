"""Typed run configuration: TOML presets shipped with the package, user TOML files and ``key=value`` overrides.

Every key is checked against the dataclasses below, so a typo or a wrong type is reported with the allowed
names instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from learngene.errors import ConfigError
from learngene.registry import CRITERIA, METHODS, MODELS, SOURCES
from learngene.vit_config import ViTConfig, validate_vit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class DataConfig:
    source: str = "glyphs"  # glyphs | omniglot | cifar100 | imagefolder
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


@dataclass
class StreamConfig:
    tasks: int = 10
    ways: int = 5
    train_per_class: int | None = None
    test_fraction: float = 0.2
    class_sampling: str = "new_first"  # new_first | random


@dataclass
class ModelConfig:
    name: str = "vgg4"
    hidden: list[int] | None = None
    dropout: float | None = None


@dataclass
class GrowthConfig:
    mode: str = "round_robin"  # round_robin | paper | none
    step: int = 16
    max_width: int = 512
    deepen_every: int | None = None
    trigger: str = "unknown"  # unknown: grow only when the new task brings classes recognized as unknown | always | never
    # symmetry-breaking noise on the split outgoing weights of replicated units, relative to the consumer's
    # weight std; the split stays exact (the replicas' shares still sum to the original), so widening keeps
    # the function and the copies get different gradients from the first step on
    noise: float = 0.05


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    loss_scope: str = "task"  # task: cross-entropy over the current task's classes | all: over every class seen
    memory_per_class: int = 0  # exemplars kept per class seen and replayed with later tasks (0: no memory)
    distill: float = 0.0  # weight of LwF distillation from the model before the task, on old classes' logits
    distill_temperature: float = 2.0
    ewc_lambda: float = 40.0  # the Fisher is scaled to max 1: keep lr * ewc_lambda <= ~2 (SGD momentum 0.9 diverges near 3.8)
    ewc_decay: float = 1.0
    fisher_samples: int = 256
    amp: bool = False
    channels_last: bool = False
    on_nonfinite: str = "stop"  # stop | skip
    checkpoint_every: int = 1  # epochs between checkpoints inside a task


@dataclass
class RecordConfig:
    threshold: float = 1e-4
    signed: bool = False


@dataclass
class OpenSetConfig:
    method: str = "msp"  # msp | energy | maxlogit
    tpr: float = 0.95
    # a class of a new task is taken for unknown when at least this fraction of its images score below the
    # known-class threshold (known classes put 1 - tpr = 5% of their images there)
    class_fraction: float = 0.2


@dataclass
class CriterionConfig:
    name: str = "validation"  # validation | gradient_stability | fixed
    n_layers: int | None = None  # size of the learngene; None: let the criterion choose
    layers: list[str] | None = None  # with name = "fixed"
    pseudo_tasks: int = 4
    pseudo_shots: int = 5
    pseudo_epochs: int = 15


@dataclass
class IndividualConfig:
    """The individual model's size and few-shot training: the one definition of these settings (the library
    functions of :mod:`learngene.individual` take this object)."""

    before: list[int] = field(default_factory=lambda: [32])  # fresh conv widths before the gene
    after: list[int] = field(default_factory=list)  # fresh conv widths after the gene
    pool_before: bool = True  # pools in the fresh layers so the gene sees the spatial size it saw in the source
    adapt: bool = True  # the last fresh layer before the gene outputs the gene's input channels
    hidden: list[int] = field(default_factory=list)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    ewc_lambda: float = 50.0  # with the support-set Fisher scaled to max 1 (lambda * lr must stay < ~2)
    inherit_mode: str = "ewc"  # ewc | freeze | lr_scale | free
    lr_scale: float = 0.1
    imprint: bool = True


@dataclass
class EvaluateConfig:
    settings: list[str] = field(default_factory=lambda: ["5way1shot", "5way5shot"])
    headline: str = "5way1shot"
    episodes: int = 20
    queries: int = 15
    curve_every: int = 1  # query accuracy every N epochs for the convergence curve (1 = every epoch)
    seeds: list[int] = field(default_factory=lambda: [0])
    # rows of the comparison table; None: every registered method (learngene list methods), in registration order
    methods: list[str] | None = None


@dataclass
class BaselineConfig:
    """Reference models trained on the stream's classes: ``joint`` (all classes at once) and ``protonet``.

    Both get the stream's image budget (every task's training images x train.epochs) unless the epochs or
    episodes are set here, and the collective model's optimizer settings and augmentation.
    """

    joint_epochs: int | None = None  # None: the stream's image budget divided by the joint training set's size
    protonet_ways: int = 20  # classes per training episode (at most the stream's classes)
    protonet_shots: int = 1  # support images per class and episode (they form the prototypes)
    protonet_queries: int = 5  # query images per class and episode (they carry the loss)
    protonet_episodes: int | None = None  # None: the stream's image budget divided by the images per episode
    protonet_scale: float = 10.0  # logits = scale x cosine(query feature, prototype)


@dataclass
class Config:
    seed: int = 0
    preset: str | None = None
    paradigm: str = "cnn"  # cnn: the paper's collective CNN | vit: transformer learngenes (the [vit] section)
    data: DataConfig = field(default_factory=DataConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    growth: GrowthConfig = field(default_factory=GrowthConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    openset: OpenSetConfig = field(default_factory=OpenSetConfig)
    criterion: CriterionConfig = field(default_factory=CriterionConfig)
    individual: IndividualConfig = field(default_factory=IndividualConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    vit: ViTConfig = field(default_factory=ViTConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> Config:
        _validate(self)
        return self


_CHOICES = {
    "data.split": ("groups", "classes", "paper", "explicit"),
    "data.augment": ("none", "affine", "flip_crop"),
    "stream.class_sampling": ("new_first", "random"),
    "growth.mode": ("round_robin", "paper", "none"),
    "growth.trigger": ("unknown", "always", "never"),
    "train.loss_scope": ("task", "all"),
    "train.on_nonfinite": ("stop", "skip"),
    "openset.method": ("msp", "energy", "maxlogit"),
    "individual.inherit_mode": ("ewc", "freeze", "lr_scale", "free"),
}

_POSITIVE = (
    "data.image_size", "data.per_class", "stream.tasks", "stream.ways", "train.epochs", "train.batch_size",
    "train.lr", "train.fisher_samples", "train.distill_temperature", "train.checkpoint_every", "growth.step", "growth.max_width",
    "individual.epochs", "individual.batch_size", "individual.lr", "evaluate.episodes", "evaluate.queries",
    "evaluate.curve_every",
    "criterion.pseudo_tasks", "criterion.pseudo_shots", "criterion.pseudo_epochs",
)
_NON_NEGATIVE = (
    "train.momentum", "train.weight_decay", "train.ewc_lambda", "train.ewc_decay", "growth.noise",
    "train.memory_per_class", "train.distill",
    "individual.momentum", "individual.weight_decay", "individual.ewc_lambda", "individual.lr_scale",
    "record.threshold",
)


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _validate(cfg: Config) -> None:
    # names that plugins may add: the registries decide (a user's registered source or criterion is accepted)
    SOURCES.check(cfg.data.source, "data.source")
    MODELS.check(cfg.model.name, "model.name")
    CRITERIA.check(cfg.criterion.name, "criterion.name")
    for method in cfg.evaluate.methods or []:
        METHODS.check(method, "evaluate.methods")
    if cfg.paradigm not in ("cnn", "vit"):
        raise ConfigError(f"config key paradigm = {cfg.paradigm!r} is not one of cnn, vit; fix the value")
    validate_vit(cfg.vit)
    for key, choices in _CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            raise ConfigError(f"config key {key} = {value!r} is not one of {', '.join(choices)}; fix the value")
    for key in _POSITIVE:
        value = _get(cfg, key)
        if value is not None and value <= 0:
            raise ConfigError(f"config key {key} = {value!r} must be > 0; fix the value")
    for key in _NON_NEGATIVE:
        value = _get(cfg, key)
        if value is not None and value < 0:
            raise ConfigError(f"config key {key} = {value!r} must be >= 0; fix the value")
    if cfg.stream.ways < 2:
        raise ConfigError(f"config key stream.ways = {cfg.stream.ways}: a task needs at least 2 classes to learn to "
                          "tell apart; set stream.ways >= 2")
    if cfg.stream.train_per_class is not None and cfg.stream.train_per_class < 1:
        raise ConfigError("config key stream.train_per_class must be >= 1 (or unset for all images)")
    if not 0.0 < cfg.stream.test_fraction < 1.0:
        raise ConfigError(f"config key stream.test_fraction = {cfg.stream.test_fraction} must be between 0 and 1")
    if not 0.0 < cfg.openset.class_fraction <= 1.0:
        raise ConfigError(f"config key openset.class_fraction = {cfg.openset.class_fraction} must be in (0, 1]")
    if not 0.0 < cfg.openset.tpr < 1.0:
        raise ConfigError(f"config key openset.tpr = {cfg.openset.tpr} must be between 0 and 1")
    if len(cfg.data.split_fractions) != 3 or any(f < 0 for f in cfg.data.split_fractions):
        raise ConfigError("config key data.split_fractions must be three non-negative numbers (source, open-world, novel)")
    if cfg.data.channels not in (None, 1, 3):
        raise ConfigError(f"config key data.channels = {cfg.data.channels} must be 1 or 3 (or unset)")
    if cfg.data.split == "explicit" and not (cfg.data.source_groups and cfg.data.novel_groups):
        raise ConfigError("data.split = 'explicit' needs data.source_groups and data.novel_groups")
    for s in cfg.evaluate.settings + [cfg.evaluate.headline]:
        parse_setting(s)
    if cfg.evaluate.headline not in cfg.evaluate.settings:
        raise ConfigError(f"evaluate.headline = {cfg.evaluate.headline!r} must be one of evaluate.settings {cfg.evaluate.settings}")
    if not cfg.evaluate.seeds:
        raise ConfigError("evaluate.seeds must list at least one seed")
    if cfg.train.memory_per_class > 0 and cfg.train.loss_scope != "all":
        raise ConfigError(
            f"train.memory_per_class = {cfg.train.memory_per_class} replays earlier classes, which a loss over the "
            "current task's classes cannot score; set train.loss_scope = 'all' (or train.memory_per_class = 0)"
        )
    if cfg.criterion.name == "fixed" and not cfg.criterion.layers:
        raise ConfigError("criterion.name = 'fixed' needs criterion.layers, e.g. ['features.0', 'features.1']")
    gene_at_input = cfg.criterion.name == "fixed" and cfg.criterion.layers[0] == "features.0"
    if not cfg.individual.before and not gene_at_input:
        # checked now: the individual model is built only after the whole collective training
        raise ConfigError(
            "individual.before = [] leaves no fresh layer before the gene, which works only for a gene that starts "
            f"at the input layer, but criterion {cfg.criterion.name!r} may choose deeper layers; set "
            "individual.before, e.g. [32], or criterion.name = 'fixed' with layers starting at 'features.0'"
        )
    b = cfg.baseline
    for key, value, low in (("joint_epochs", b.joint_epochs, 1), ("protonet_ways", b.protonet_ways, 2),
                            ("protonet_shots", b.protonet_shots, 1), ("protonet_queries", b.protonet_queries, 1),
                            ("protonet_episodes", b.protonet_episodes, 1)):
        if value is not None and value < low:
            raise ConfigError(f"config key baseline.{key} = {value!r} must be >= {low}" +
                              (" (or unset for the stream's image budget)" if key.endswith(("epochs", "episodes")) else ""))
    if not b.protonet_scale > 0:
        raise ConfigError(f"config key baseline.protonet_scale = {b.protonet_scale!r} must be > 0; fix the value")


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


# --------------------------------------------------------------------------------------------- parsing


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check ``value`` against an annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            return False, value
        out = []
        for item in value:
            ok, v = _type_ok(item, inner)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    if tp is float:
        if isinstance(value, bool):
            return False, value
        return (isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    return False, value


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _merge_into(obj: Any, data: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        path = f"{where}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {where}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config key {path!r}{hint}; allowed keys here: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must be a table/section, got {type(value).__name__}")
            _merge_into(current, value, f"{path}.")
            continue
        ok, coerced = _type_ok(value, hints[key])
        bad = [v for v in (coerced if isinstance(coerced, list) else [coerced])
               if isinstance(v, float) and not math.isfinite(v)]
        if ok and bad:
            raise ConfigError(f"config key {path!r} = {bad[0]} is not a finite number; give a finite value")
        if not ok:
            raise ConfigError(
                f"config key {path!r} must be of type {_type_name(hints[key])}, got {value!r} ({type(value).__name__})"
            )
        setattr(obj, key, coerced)


def list_presets() -> list[str]:
    files = resources.files("learngene").joinpath("presets")
    return sorted(p.name[: -len(".toml")] for p in files.iterdir() if p.name.endswith(".toml"))


def _read_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{origin} is not valid TOML: {err}") from None


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.epochs=3")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare string
    return key, value


def load_config(
    preset: str | None = None, path: str | Path | None = None, overrides: list[str] | None = None
) -> Config:
    """Defaults <- preset <- user file <- ``key=value`` overrides, each validated."""
    cfg = Config()
    if preset is not None:
        available = list_presets()
        if preset not in available:
            close = difflib.get_close_matches(preset, available, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown preset {preset!r}; available presets: {', '.join(available)}.{hint}")
        text = resources.files("learngene").joinpath("presets", f"{preset}.toml").read_text()
        _merge_into(cfg, _read_toml(text, f"preset {preset!r}"), "")
        cfg.preset = preset
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass an existing .toml file or use --preset")
        _merge_into(cfg, _read_toml(p.read_text(), f"config file {p}"), "")
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings (values parsed as TOML, else taken as strings) and re-validate."""
    for item in overrides:
        key, value = _parse_override(item)
        parts = key.split(".")
        nested: dict[str, Any] = {parts[-1]: value}
        for part in reversed(parts[:-1]):
            nested = {part: nested}
        _merge_into(cfg, nested, "")
    return cfg.validate()


def config_diff(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs, e.g. ``["train.epochs", "preset"]``."""

    def walk(x: Any, y: Any, prefix: str) -> list[str]:
        if isinstance(x, dict) and isinstance(y, dict):
            return [k for key in sorted(set(x) | set(y)) for k in walk(x.get(key), y.get(key), f"{prefix}{key}.")]
        return [] if x == y else [prefix[:-1]]

    return walk(a.to_dict(), b.to_dict(), "")


def config_for(paradigm: str) -> Config:
    """The default configuration of a paradigm (``"cnn"`` or ``"vit"``)."""
    return Config(paradigm=paradigm).validate()


def config_from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    _merge_into(cfg, data, "")
    return cfg.validate()

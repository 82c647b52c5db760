"""Typed run configuration: TOML presets shipped with the package, user TOML files and ``key=value`` overrides.

Every key is checked against the dataclasses below, so a typo or a wrong type is reported with the allowed names
instead of being silently ignored; every value against its section's ``RULES`` table whenever it is set
(:mod:`learngene.config_rules`), and the rules that involve several keys by :meth:`Config.validate`.

Both paradigms share the sections they both use: ``[train]`` holds the optimization (``lr``, ``weight_decay``,
``batch_size``, ``amp``, the distillation temperature), ``[criterion]`` the choice of the learngene's blocks,
``[evaluate]`` the episodes, the methods compared and the seeds; ``[vit]`` holds only what the transformer path
alone has.  A paradigm's defaults replace the CNN defaults of those keys (:data:`PARADIGM_DEFAULTS`, applied
wherever a value still equals its CNN default when ``paradigm`` is set), and a key the chosen paradigm never reads
(:data:`READERS`) is refused when it is given or differs from its default, naming the key and what does apply.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from learngene.config_rules import Rule, Section, one_of
from learngene.config_sections import (
    BaselineConfig,
    CriterionConfig,
    DataConfig,
    EvaluateConfig,
    GrowthConfig,
    IndividualConfig,
    ModelConfig,
    OpenSetConfig,
    RecordConfig,
    StreamConfig,
    TrainConfig,
    parse_setting,
)
from learngene.errors import ConfigError
from learngene.vit_config import ViTConfig, check_vit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["PARADIGM_DEFAULTS", "READERS", "Config", "IndividualConfig", "TrainConfig", "apply_overrides",
           "config_diff", "config_for", "config_from_dict", "list_presets", "load_config", "parse_setting"]


# The transformer paradigm's own defaults for keys it shares with the CNN paradigm (see the module docstring).
PARADIGM_DEFAULTS: dict[str, dict[str, Any]] = {
    "vit": {
        "model.name": "vit_p8_d96_l8",
        "train.lr": 1e-3,
        "train.weight_decay": 0.05,
        "train.batch_size": 128,
        "train.distill_temperature": 1.0,
        "criterion.name": "gradient_stability",
        "criterion.n_layers": 3,
        "criterion.pseudo_epochs": 2,
        "stream.test_fraction": 0.25,
        # a few-shot descendant (learngene.vit.fewshot): its imprinted cosine head trained 30 epochs with every
        # inherited tensor frozen, no fine-tuning of the blocks (chosen on 20-way 1-shot pseudo-tasks of the
        # vit-glyphs open-world classes: BENCHMARKS.md)
        "individual.head_epochs": 30,
        "individual.epochs": 0,
        "individual.lr": None,
        "evaluate.seeds": [0, 1, 2],
    },
}


@dataclass(frozen=True)
class Reader:
    """Who reads which keys: whole sections (``"data"``) or single keys (``"train.lr"``)."""

    what: str
    keys: tuple[str, ...]

    def reads(self, key: str) -> bool:
        return key in ("preset", "paradigm") or any(key == k or key.startswith(k + ".") for k in self.keys)

    def describe(self) -> str:
        return ", ".join(f"{k}.*" if "." not in k and k not in ("seed",) else k for k in self.keys)


# a transformer descendant trains by the individual recipe (learngene.vit.fewshot) at vit.fewshot_lr
_VIT_RECIPE = ("individual.classifier", "individual.imprint", "individual.head_epochs", "individual.epochs",
               "individual.batch_size", "individual.schedule", "individual.momentum", "individual.weight_decay",
               "individual.inherit_mode", "individual.ewc_lambda", "individual.lr_scale", "individual.augment")
_VIT_INHERIT = (*_VIT_RECIPE, "vit.fewshot_lr", "evaluate.curve_every")
READERS: dict[str, Reader] = {
    "cnn": Reader("the CNN paradigm (paradigm = 'cnn')",
                  ("seed", "data", "stream", "model", "growth", "train", "record", "openset", "criterion",
                   "individual", "evaluate", "baseline")),
    "vit": Reader("the transformer paradigm (paradigm = 'vit')",
                  ("seed", "data", "model.name", "train.lr", "train.weight_decay", "train.batch_size", "train.amp",
                   "train.distill_temperature", "criterion.name", "criterion.n_layers", "criterion.pseudo_epochs",
                   "criterion.layers", "stream.test_fraction", *_VIT_RECIPE, "individual.lr",
                   "evaluate.settings", "evaluate.episodes", "evaluate.queries", "evaluate.seeds", "evaluate.methods",
                   "vit")),
    "inherit:cnn": Reader("`learngene inherit` from a CNN learngene", ("individual", "evaluate.curve_every")),
    "inherit:vit": Reader("`learngene inherit` from a transformer learngene", _VIT_INHERIT),
}


@dataclass
class Config(Section):
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

    RULES: ClassVar[dict[str, Rule]] = {"paradigm": one_of("cnn", "vit")}

    def __post_init__(self) -> None:
        if self.paradigm != "cnn":
            self._adopt_defaults("cnn", self.paradigm)

    def __setattr__(self, name: str, value: Any) -> None:
        old = self.__dict__.get("paradigm")
        super().__setattr__(name, value)
        if name == "paradigm" and old is not None and old != value and "vit" in self.__dict__:
            self._adopt_defaults(old, value)  # a paradigm set on a built config brings its defaults

    def _adopt_defaults(self, old: str, new: str) -> None:
        """Keys that still hold ``old``'s default take ``new``'s (a value set on purpose stays)."""
        before, after = _shared_defaults(old), _shared_defaults(new)
        for key, value in after.items():
            if get_key(self, key) == before[key]:
                set_key(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def require_cnn(self, stage: str) -> Config:
        """Refuse a transformer config in a stage of the CNN paradigm, instead of silently training a CNN."""
        if self.paradigm != "cnn":
            raise ConfigError(
                f"`{stage}` is a stage of the CNN paradigm but this config has paradigm = {self.paradigm!r}; run the "
                "transformer path with `learngene run --preset vit-...` (and `learngene inherit --depth` for its genes)"
            )
        return self

    def validate(self, reader: str | None = None) -> Config:
        """Refuse what no single key's rule can see: rules across keys, and a key set away from its default that
        the paradigm (or ``reader``, a :data:`READERS` entry) never reads."""
        for paradigms, check in CHECKS:
            if self.paradigm in paradigms:
                check(self)
        who = READERS[reader or self.paradigm]
        defaults = _all_defaults(self.paradigm)
        for key, value in flat(self.to_dict()).items():
            if value != defaults.get(key) and not who.reads(key):
                raise unread(key, who, value)
        return self


def get_key(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def set_key(cfg: Config, dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    obj: Any = cfg
    for part in path:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}`` (values of sections only; lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@functools.cache
def _defaults_frozen(paradigm: str) -> tuple[tuple[str, Any], ...]:
    cfg = Config()
    if paradigm != "cnn":
        cfg._adopt_defaults("cnn", paradigm)
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in flat(cfg.to_dict()).items())


def _all_defaults(paradigm: str) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in _defaults_frozen(paradigm)}


def _shared_defaults(paradigm: str) -> dict[str, Any]:
    """The defaults of every key some paradigm sets differently, as ``paradigm`` has them."""
    keys = {k for table in PARADIGM_DEFAULTS.values() for k in table}
    table = PARADIGM_DEFAULTS.get(paradigm, {})
    cnn = {f.name: f for f in dataclasses.fields(Config)}

    def cnn_default(key: str) -> Any:
        section, name = key.split(".")
        sec = cnn[section].default_factory()
        return getattr(sec, name)

    return {k: table[k] if k in table else cnn_default(k) for k in sorted(keys)}


def unread(key: str, who: Reader, value: Any = None) -> ConfigError:
    """The refusal of a key ``who`` never reads, naming what does apply."""
    shown = "" if value is None else f" = {value!r}"
    elsewhere = [r.what for r in READERS.values() if r is not who and r.reads(key) and ":" not in r.what]
    hint = f" (it applies to {elsewhere[0]})" if elsewhere else ""
    return ConfigError(f"config key {key}{shown} is not read by {who.what}, which reads {who.describe()}; remove "
                       f"{key}{hint}")


# ------------------------------------------------------------------------------------- rules across keys
def _explicit_split(cfg: Config) -> None:
    if cfg.data.split == "explicit" and not (cfg.data.source_groups and cfg.data.novel_groups):
        raise ConfigError("data.split = 'explicit' needs data.source_groups and data.novel_groups")


def _headline(cfg: Config) -> None:
    if cfg.evaluate.headline not in cfg.evaluate.settings:
        raise ConfigError(f"evaluate.headline = {cfg.evaluate.headline!r} must be one of evaluate.settings "
                          f"{cfg.evaluate.settings}")


def _memory_needs_all(cfg: Config) -> None:
    if cfg.train.memory_per_class > 0 and cfg.train.loss_scope != "all":
        raise ConfigError(
            f"train.memory_per_class = {cfg.train.memory_per_class} replays earlier classes, which a loss over the "
            "current task's classes cannot score; set train.loss_scope = 'all' (or train.memory_per_class = 0)"
        )


def _fixed_needs_layers(cfg: Config) -> None:
    if cfg.criterion.name == "fixed" and not cfg.criterion.layers:
        raise ConfigError("criterion.name = 'fixed' needs criterion.layers, e.g. ['features.0', 'features.1'] "
                          "(transformer blocks: ['blocks.5', 'blocks.6'])")


def _fresh_layer_before_gene(cfg: Config) -> None:
    gene_at_input = cfg.criterion.name == "fixed" and cfg.criterion.layers[0] == "features.0"
    if not cfg.individual.before and not gene_at_input:
        # checked now: the individual model is built only after the whole collective training
        raise ConfigError(
            "individual.before = [] leaves no fresh layer before the gene, which works only for a gene that starts "
            f"at the input layer, but criterion {cfg.criterion.name!r} may choose deeper layers; set "
            "individual.before, e.g. [32], or criterion.name = 'fixed' with layers starting at 'features.0'"
        )


def check_method_lr(cfg: Config) -> None:
    """Every ``evaluate.method_lr`` key names a trained evaluation method.  Checked when the config is built once
    the methods are registered (the CLI, or after ``import learngene.evaluate``), and again by
    :func:`learngene.evaluate.evaluate_methods`: a preset with method_lr loads in a bare ``import learngene``."""
    from learngene.registry import METHODS

    if not METHODS.names():
        return  # nothing registered yet: evaluate_methods checks it before any method runs
    for method in cfg.evaluate.method_lr:
        METHODS.check(method, f"evaluate.method_lr.{method}")
        if METHODS.get(method).build is None:
            raise ConfigError(f"config key evaluate.method_lr.{method}: {method!r} does not train on the target "
                              "task (nearest class mean on frozen features), so it has no learning rate; remove it "
                              "(protonet's own lr is baseline.protonet_lr)")


def _individual_lr(cfg: Config) -> None:
    if cfg.individual.lr is None:
        raise ConfigError("config key individual.lr = None (follow train.lr) is for transformer descendants only; "
                          "give the individual models' learning rate, e.g. 0.01")


CHECKS: tuple[tuple[tuple[str, ...], Callable[[Config], None]], ...] = (
    (("cnn", "vit"), _explicit_split),
    (("cnn",), _headline),
    (("cnn",), _memory_needs_all),
    (("cnn", "vit"), _fixed_needs_layers),
    (("cnn",), _fresh_layer_before_gene),
    (("cnn",), _individual_lr),
    (("cnn",), check_method_lr),
    (("vit",), lambda cfg: check_vit(cfg.vit)),
)


# --------------------------------------------------------------------------------------------- loading


def list_presets() -> list[str]:
    files = resources.files("learngene").joinpath("presets")
    return sorted(p.name[: -len(".toml")] for p in files.iterdir() if p.name.endswith(".toml"))


def _merge_into(obj: Any, data: dict[str, Any], where: str) -> None:
    """Set ``data``'s keys on the section ``obj`` (each value checked by the section as it is set)."""
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
        if isinstance(current, dict) and isinstance(value, dict):  # a table merges key by key: one override
            value = {**current, **value}  # (evaluate.method_lr.scratch = 0.1) keeps the other entries
        setattr(obj, key, value)


def preset_description(name: str) -> str:
    """The first sentence of a preset's leading comment: the one description, kept beside the settings."""
    text = resources.files("learngene").joinpath("presets", f"{name}.toml").read_text()
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    words = " ".join(c for c in comment if c)
    end = words.find(". ")
    return words[: end + 1] if end >= 0 else words


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
    """Defaults <- preset <- user file <- ``key=value`` overrides, each checked; a key given here that the
    configured paradigm never reads is refused."""
    cfg = Config()
    given: list[str] = []
    if preset is not None:
        available = list_presets()
        if preset not in available:
            close = difflib.get_close_matches(preset, available, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown preset {preset!r}; available presets: {', '.join(available)}.{hint}")
        text = resources.files("learngene").joinpath("presets", f"{preset}.toml").read_text()
        data = _read_toml(text, f"preset {preset!r}")
        _merge_into(cfg, data, "")
        given += flat(data)
        cfg.preset = preset
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass an existing .toml file or use --preset")
        data = _read_toml(p.read_text(), f"config file {p}")
        _merge_into(cfg, data, "")
        given += flat(data)
    return apply_overrides(cfg, overrides or [], given=given)


def apply_overrides(cfg: Config, overrides: Sequence[str], *, reader: str | None = None,
                    given: Iterable[str] = ()) -> Config:
    """Apply ``section.key=value`` strings (values parsed as TOML, else taken as strings) and re-validate.

    Every key given (the overrides, and ``given``) must be read by ``reader`` (a :data:`READERS` entry; default:
    the configured paradigm): ``learngene inherit --set`` is held to what inherit reads.
    """
    keys = list(given)
    for item in overrides:
        key, value = _parse_override(item)
        parts = key.split(".")
        nested: dict[str, Any] = {parts[-1]: value}
        for part in reversed(parts[:-1]):
            nested = {part: nested}
        _merge_into(cfg, nested, "")
        keys += flat(nested)
    who = READERS[reader or cfg.paradigm]
    for key in keys:
        if not who.reads(key):
            raise unread(key, who)
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


# [vit] keys of releases before the shared sections, and where they live now (runs record their config.json)
_MOVED_VIT_KEYS = {
    "ancestry": "model.name", "lr": "train.lr", "weight_decay": "train.weight_decay",
    "batch_size": "train.batch_size", "amp": "train.amp", "distill_temperature": "train.distill_temperature",
    "heur_criterion": "criterion.name", "heur_blocks": "criterion.n_layers",
    "heur_val_epochs": "criterion.pseudo_epochs", "methods": "evaluate.methods", "seeds": "evaluate.seeds",
    "test_fraction": "stream.test_fraction", "fewshot_epochs": "individual.epochs", "descendant_lr": "individual.lr",
}


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A recorded config of an earlier release in today's keys: a transformer run's moved keys go to the shared
    sections, a CNN run's (the defaults it never read) are dropped."""
    old = data.get("vit")
    if not isinstance(old, dict) or not set(old) & set(_MOVED_VIT_KEYS):
        return data
    data = {**data, "vit": {k: v for k, v in old.items() if k not in _MOVED_VIT_KEYS}}
    if data.get("paradigm") == "vit":
        for name, target in _MOVED_VIT_KEYS.items():
            if name in old:
                section, key = target.split(".")
                data[section] = {**data.get(section, {}), key: old[name]}
    return data


def config_from_dict(data: dict[str, Any]) -> Config:
    """A config recorded by ``to_dict`` (a run's ``config.json``), checked like a loaded one."""
    cfg = Config()
    _merge_into(cfg, _migrate(data), "")
    return cfg.validate()

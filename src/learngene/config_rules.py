"""How a config section checks its fields: one table per section (field -> rule), applied on every assignment.

A :class:`Section` is a dataclass whose fields are type-checked (ints accepted where floats are expected; no NaN
or infinity) and checked by its ``RULES`` whenever they are set: by a TOML file, a ``--set`` override or Python
(``IndividualConfig(epochs=-1)`` raises at once).  A rule returns what is wrong with a value ("must be > 0; fix
the value") or None; the message names the key.  Checks that involve several keys live in
:mod:`learngene.config` (``Config.validate``).  Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar

from learngene.errors import ConfigError

__all__ = ["Rule", "Section", "all_of", "at_least", "between", "check_type", "each", "non_negative", "nonempty",
           "one_of", "optional", "positive", "type_name", "unique"]

Rule = Callable[[Any], "str | None"]


def positive(value: Any) -> str | None:
    return "must be > 0; fix the value" if value <= 0 else None


def non_negative(value: Any) -> str | None:
    return "must be >= 0; fix the value" if value < 0 else None


def at_least(low: int, why: str | None = None) -> Rule:
    """An integer >= ``low`` (``why``: the whole complaint, when the bare bound would not say enough)."""
    def rule(value: Any) -> str | None:
        return (why or f"must be an integer >= {low}; fix the value") if value < low else None

    return rule


def between(low: float, high: float, *, closed: bool = False) -> Rule:
    def rule(value: Any) -> str | None:
        inside = low <= value <= high if closed else low < value < high
        span = f"in [{low:g}, {high:g}]" if closed else f"between {low:g} and {high:g} (exclusive)"
        return None if inside else f"must be {span}; fix the value"

    return rule


def one_of(*choices: Any, why: str | None = None) -> Rule:
    def rule(value: Any) -> str | None:
        return None if value in choices else (why or f"is not one of {', '.join(map(str, choices))}; fix the value")

    return rule


def optional(inner: Rule) -> Rule:
    """``None`` (unset) or a value ``inner`` accepts."""
    return lambda value: None if value is None else inner(value)


def each(inner: Rule, what: str = "entry") -> Rule:
    def rule(value: Any) -> str | None:
        for item in value:
            complaint = inner(item)
            if complaint is not None:
                return f"has an {what} ({item!r}) that {complaint}"
        return None

    return rule


def nonempty(what: str) -> Rule:
    return lambda value: f"must list at least one {what}" if not value else None


def unique(what: str) -> Rule:
    return lambda value: f"lists a {what} twice; list each {what} once" if len(set(value)) != len(value) else None


def all_of(*rules: Rule) -> Rule:
    def rule(value: Any) -> str | None:
        return next((c for c in (r(value) for r in rules) if c is not None), None)

    return rule


def check_type(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check ``value`` against an annotation; ints are accepted (and converted) where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = check_type(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            return False, value
        table = {}
        for k, item in value.items():
            ok_k, _ = check_type(k, key_tp)
            ok, v = check_type(item, value_tp)
            if not (ok_k and ok):
                return False, value
            table[k] = v
        return True, table
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            return False, value
        out = []
        for item in value:
            ok, v = check_type(item, inner)
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
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return isinstance(value, tp), value
    return False, value


def type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return {k: v for k, v in typing.get_type_hints(cls).items() if typing.get_origin(v) is not ClassVar}


class Section:
    """Base of the config sections (see the module docstring); ``SECTION`` names it in messages."""

    SECTION: ClassVar[str] = ""
    RULES: ClassVar[dict[str, Rule]] = {}

    def key(self, name: str) -> str:
        return f"{self.SECTION}.{name}" if self.SECTION else name

    def __setattr__(self, name: str, value: Any) -> None:
        hint = _hints(type(self)).get(name)
        if hint is not None:
            key = self.key(name)
            ok, value = check_type(value, hint)
            if not ok:
                raise ConfigError(f"config key {key!r} must be of type {type_name(hint)}, got {value!r} "
                                  f"({type(value).__name__})")
            items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
            bad = [v for v in items if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                raise ConfigError(f"config key {key!r} = {bad[0]} is not a finite number; give a finite value")
            rule = self.RULES.get(name)
            complaint = rule(value) if rule is not None else None
            if complaint is not None:
                sep = "" if complaint.startswith(":") else " "
                raise ConfigError(f"config key {key} = {value!r}{sep}{complaint}")
        object.__setattr__(self, name, value)

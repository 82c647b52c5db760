"""Every name a config or the CLI accepts lives in one of these registries (timm's habit, one small helper).

* :data:`MODELS` -- model presets (``vgg13_paper``, ``vit_p8_d96_l8``, ...), ``fn(**overrides) -> nn.Module``;
* :data:`ARCHITECTURES` -- builders ``cfg -> nn.Module`` keyed by a ``config()`` dict's ``"name"``;
* :data:`SOURCES` -- data sources ``fn(root, image_size, channels, seed, **kw) -> ImageSet``;
* :data:`CRITERIA` -- learngene criteria ``fn(ctx) -> CriterionResult``;
* :data:`METHODS` -- evaluation methods (rows of the comparison table);
* :data:`DESCENDANT_METHODS` -- the methods a transformer run compares (columns of its depth table);
* :data:`GENE_KINDS` -- kinds of learngene keyed by artifact format: how to load one and inherit from it.

The built-in entries are registered by the modules that define them (the package that offers ``register_*``
imports them, so they are there before a user's own entry), never imported from here by name: this module comes
first in the data flow.  A user's own entry (``@SOURCES.register("mine")``) is accepted by the config, listed by
``learngene list`` and used exactly like a built-in one; names are checked where they are used, and by
:func:`learngene.run.check_names` before a run starts.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from learngene.errors import ConfigError, LearngeneError, ModelError

__all__ = ["ARCHITECTURES", "CRITERIA", "DESCENDANT_METHODS", "GENE_KINDS", "METHODS", "MODELS", "SOURCES", "Registry"]

T = TypeVar("T")


def _origin(obj: Any) -> tuple[Any, Any] | None:
    """Where a function or class was defined (a reloaded module re-registers the same definition); None for
    plain objects, which only match themselves."""
    target = getattr(obj, "__func__", obj)
    qualname = getattr(target, "__qualname__", None)
    return (getattr(target, "__module__", None), qualname) if isinstance(qualname, str) else None


class Registry(Generic[T]):
    """Names -> objects of one kind, with close-match suggestions for unknown names."""

    def __init__(self, kind: str, error: type[LearngeneError] = ConfigError) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None, obj: T | None = None) -> Any:
        """``@REG.register("name")`` (or ``@REG.register()`` for ``fn.__name__``), or ``REG.register("name", obj)``.

        Registering a different object under a taken name is refused, so two entries cannot shadow each other;
        the same definition again (a reloaded module) is harmless.
        """

        def add(item: T) -> T:
            key = name if name is not None else getattr(item, "__name__", None)
            if not isinstance(key, str) or not key:
                raise self.error(f"a {self.kind} needs a non-empty string name, got {key!r}")
            old = self._entries.get(key)
            same = old is item or old == item or (_origin(old) is not None and _origin(old) == _origin(item))
            if old is not None and not same:
                where = ".".join(str(x) for x in _origin(old)) if _origin(old) else repr(old)
                raise self.error(
                    f"{self.kind} name {key!r} is already registered by {where}; rename yours so both stay reachable"
                )
            self._entries[key] = item
            return item

        return add(obj) if obj is not None else add

    def unregister(self, name: str) -> T | None:
        """Remove an entry (tests, notebooks re-defining one); returns it, or None if there was none."""
        return self._entries.pop(name, None)

    def get(self, name: Any) -> T:
        """The entry called ``name``; an error naming close matches and every available name otherwise."""
        item = self._entries.get(name) if isinstance(name, str) else None
        if item is None:
            raise self.unknown(name)
        return item

    def unknown(self, name: Any, key: str | None = None) -> LearngeneError:
        known = self.names()
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""  # noqa: E501
        what = f"config key {key} = {name!r} is not a registered {self.kind}" if key else f"unknown {self.kind} {name!r}"
        return self.error(f"{what}.{hint} Available: {', '.join(known) or '(none)'}")

    def check(self, name: Any, key: str) -> None:
        """Refuse a config value that names no entry (``key`` is the config key, for the message)."""
        if not isinstance(name, str) or name not in self._entries:
            raise self.unknown(name, key)

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style ``pattern``."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def in_order(self) -> list[str]:
        """Names in registration order (built-ins first, in their modules' order)."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


MODELS: Registry[Callable[..., Any]] = Registry("model", error=ModelError)
ARCHITECTURES: Registry[Callable[[dict[str, Any]], Any]] = Registry("architecture", error=ModelError)
SOURCES: Registry[Callable[..., Any]] = Registry("data source")
CRITERIA: Registry[Callable[..., Any]] = Registry("criterion")
METHODS: Registry[Any] = Registry("evaluation method")
DESCENDANT_METHODS: Registry[Any] = Registry("transformer method")
GENE_KINDS: Registry[Any] = Registry("kind of learngene")

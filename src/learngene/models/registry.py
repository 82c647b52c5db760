"""One place that knows every model by name (the timm habit: a registry and a single factory).

Two tables live here:

* **models** -- named *presets* (``vgg13_paper``, ``vgg4``, ...): functions that take keyword overrides and
  return a fresh ``nn.Module``.  :func:`create_model` is the only factory callers need.
* **architectures** -- classes (or callables) that rebuild a module from its ``config()`` dict, keyed by the
  dict's ``"name"`` (or ``"type"``).  :func:`model_from_config` uses it so checkpoints and learngenes can
  rebuild a grown model whose widths no longer match any preset.

The built-in models register themselves when :mod:`learngene.models.vgg` is imported; the look-ups below
import it lazily so ``from learngene.models.registry import create_model`` works on its own.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from learngene.errors import ModelError

__all__ = [
    "create_model",
    "list_architectures",
    "list_models",
    "model_from_config",
    "register_architecture",
    "register_model",
]

F = TypeVar("F", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_ARCHITECTURES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {}
_BUILTIN_MODULES = ("learngene.models.vgg", "learngene.models.vit", "learngene.models.expansion")


def _ensure_builtins() -> None:
    """Import the modules whose import registers the built-in models (idempotent, cheap after the first)."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def _same_origin(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """True when two callables are the same definition (e.g. a module reloaded), so re-registering is harmless."""
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
        getattr(b, "__module__", None),
        getattr(b, "__qualname__", None),
    )


def register_model(fn: F) -> F:
    """Register a model preset under ``fn.__name__``; ``fn(**overrides)`` must return an ``nn.Module``.

    Registering a *different* function under a taken name is refused so two presets cannot shadow each other.
    """
    name = getattr(fn, "__name__", None)
    if not callable(fn) or not name:
        raise ModelError(f"register_model needs a named function returning an nn.Module, got {fn!r}")
    existing = _MODELS.get(name)
    if existing is not None and not _same_origin(existing, fn):
        raise ModelError(
            f"model name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}; "
            "rename your function so both presets stay reachable"
        )
    _MODELS[name] = fn
    return fn


def register_architecture(name: str) -> Callable[[Any], Any]:
    """Class decorator: ``model_from_config`` rebuilds configs whose ``"name"`` is ``name`` with ``cls.from_config``.

    A plain callable ``cfg -> nn.Module`` may be registered too.
    """
    if not isinstance(name, str) or not name:
        raise ModelError(f"architecture name must be a non-empty string, got {name!r}")

    def decorator(obj: Any) -> Any:
        builder = getattr(obj, "from_config", obj)
        if not callable(builder):
            raise ModelError(f"architecture {name!r} needs a from_config classmethod or must be callable")
        existing = _ARCHITECTURES.get(name)
        if existing is not None and not _same_origin(existing, builder):
            raise ModelError(f"architecture name {name!r} is already registered; pick another name")
        _ARCHITECTURES[name] = builder
        return obj

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered model presets matching a shell-style ``pattern`` (``"vgg*"``)."""
    _ensure_builtins()
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def list_architectures() -> list[str]:
    """Sorted names accepted in a config's ``"name"`` by :func:`model_from_config`."""
    _ensure_builtins()
    return sorted(_ARCHITECTURES)


def _unknown(kind: str, name: object, known: list[str], fix: str) -> ModelError:
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ModelError(f"unknown {kind} {name!r}.{hint} Available: {', '.join(known) or '(none)'}. {fix}")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered preset ``name``; keyword overrides whose value is ``None`` are dropped.

    Dropping ``None`` lets CLI/config layers pass every optional field straight through.
    """
    _ensure_builtins()
    fn = _MODELS.get(name) if isinstance(name, str) else None
    if fn is None:
        raise _unknown("model", name, sorted(_MODELS), "Pass one of the available names (see list_models()).")
    overrides = {k: v for k, v in kwargs.items() if v is not None}
    model = fn(**overrides)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model function {name!r} returned {type(model).__name__}, expected an nn.Module")
    return model


def model_from_config(cfg: Mapping[str, Any]) -> nn.Module:
    """Rebuild a module from the dict its ``config()`` returned (the shape record kept in checkpoints/genes)."""
    _ensure_builtins()
    if not isinstance(cfg, Mapping):
        raise ModelError(
            f"model config must be a dict (as returned by model.config()), got {type(cfg).__name__}"
        )
    arch = cfg.get("name", cfg.get("type"))
    if arch is None:
        raise ModelError(
            "model config has no 'name' (or 'type') field; it must come from model.config(), "
            f"keys present: {sorted(cfg)}"
        )
    builder = _ARCHITECTURES.get(arch) if isinstance(arch, str) else None
    if builder is None:
        raise _unknown(
            "architecture",
            arch,
            sorted(_ARCHITECTURES),
            "The config was written by a model this version does not know; check the file's origin.",
        )
    return builder(dict(cfg))

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

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from learngene.errors import ModelError
from learngene.registry import ARCHITECTURES, MODELS

__all__ = [
    "create_model",
    "list_architectures",
    "list_models",
    "model_from_config",
    "register_architecture",
    "register_model",
]

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(fn: F) -> F:
    """Register a model preset under ``fn.__name__``; ``fn(**overrides)`` must return an ``nn.Module``.

    Registering a *different* function under a taken name is refused so two presets cannot shadow each other.
    """
    if not callable(fn) or not getattr(fn, "__name__", None):
        raise ModelError(f"register_model needs a named function returning an nn.Module, got {fn!r}")
    return MODELS.register(fn.__name__, fn)


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
        ARCHITECTURES.register(name, builder)
        return obj

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered model presets matching a shell-style ``pattern`` (``"vgg*"``)."""
    return MODELS.names(pattern)


def list_architectures() -> list[str]:
    """Sorted names accepted in a config's ``"name"`` by :func:`model_from_config`."""
    return ARCHITECTURES.names()


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered preset ``name``; keyword overrides whose value is ``None`` are dropped.

    Dropping ``None`` lets CLI/config layers pass every optional field straight through.
    """
    fn = MODELS.get(name)
    overrides = {k: v for k, v in kwargs.items() if v is not None}
    model = fn(**overrides)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model function {name!r} returned {type(model).__name__}, expected an nn.Module")
    return model


def model_from_config(cfg: Mapping[str, Any]) -> nn.Module:
    """Rebuild a module from the dict its ``config()`` returned (the shape record kept in checkpoints/genes)."""
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
    if arch not in ARCHITECTURES:
        raise ModelError(
            f"{ARCHITECTURES.unknown(arch)}. The config was written by a model this version does not know; check "
            "the file's origin."
        )
    return ARCHITECTURES.get(arch)(dict(cfg))

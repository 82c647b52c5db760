"""Trained networks cached in a run directory under a key: the one cache of the package's trained stages (the
CNN paradigm's joint and ProtoNet backbones, a ViT run's ancestry and auxiliary net).

A cache entry is a network artifact (:func:`~learngene.models.io.save_network`: safetensors + JSON, written
atomically, loading executes nothing) whose manifest holds ``key`` (everything the training depends on: a
dict, or a digest of one from :func:`fingerprint`) and ``info`` (what the training reported). An entry is
reused only under an equal key; a missing, stale or damaged entry is retrained and replaced, because it is
derived data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from learngene.artifacts import ArtifactKind
from learngene.errors import LearngeneError
from learngene.models.io import load_network, save_network
from learngene.safeio import jsonable

__all__ = ["cached_network", "fingerprint", "load_cached"]

log = logging.getLogger(__name__)

# entries written before the cache was shared kept the key and the info under these names (ViT runs)
_LEGACY_FIELDS = (("fingerprint", "record"),)


def fingerprint(obj: Any) -> str:
    """A short stable digest of the settings a cached result depends on."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _as_stored(key: Any) -> Any:
    return json.loads(json.dumps(key))  # the form a key takes after a round trip through the manifest


def load_cached(directory: str | Path, kind: ArtifactKind, key: Any | None = None,
                accept: Callable[[nn.Module, dict[str, Any]], bool] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The network cached in ``directory`` and its info, checked like every artifact and, when given, against
    ``key`` and ``accept(model, info)``; ``kind.error`` otherwise."""
    model, manifest = load_network(directory, kind)
    stored, info = manifest.get("key"), manifest.get("info")
    for old_key, old_info in _LEGACY_FIELDS:
        if stored is None and info is None:
            stored, info = manifest.get(old_key), manifest.get(old_info)
    if key is not None and stored != _as_stored(key):
        raise kind.error(f"{directory} holds a {kind.noun} trained under another configuration or data")
    if not isinstance(info, dict) or (accept is not None and not accept(model, info)):
        raise kind.error(f"{directory} holds an incomplete {kind.noun} record")
    return model, info


def cached_network(directory: str | Path | None, kind: ArtifactKind, key: Any,
                   train: Callable[[], tuple[nn.Module, dict[str, Any]]], *,
                   accept: Callable[[nn.Module, dict[str, Any]], bool] | None = None,
                   saved: Callable[[nn.Module], Any] | None = None,
                   what: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The network cached in ``directory`` under ``key`` (and passing ``accept``), else ``train()`` it and cache
    it there (``saved(model)``: what :func:`~learngene.models.io.save_network` writes, for a model without
    ``config()``). ``directory=None`` only trains. The info carries ``cached``: whether it came from the cache."""
    what = what or kind.noun
    if directory is not None and (Path(directory) / kind.manifest).is_file():
        try:
            model, info = load_cached(directory, kind, key, accept)
            log.info("%s: reusing %s", what, directory)
            return model, {**info, "cached": True}
        except LearngeneError as err:
            log.info("%s: cache in %s not used (%s); retraining", what, directory, err)
    model, info = train()
    if directory is not None:
        save_network(saved(model) if saved is not None else model, directory, kind,
                     {"key": key, "info": jsonable(info)})
    return model, {**info, "cached": False}

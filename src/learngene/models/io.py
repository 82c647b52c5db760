"""Networks as artifacts: weights + architecture record in the format family of :mod:`learngene.artifacts`.

timm's habit: ``model.safetensors`` and a JSON record that rebuilds the module through the architecture
registry (:func:`~learngene.models.registry.model_from_config`), so loading executes nothing from the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from learngene.artifacts import NETWORK, ArtifactKind, load_artifact, save_artifact
from learngene.errors import LearngeneError
from learngene.models.registry import model_from_config

__all__ = ["load_network", "save_network"]


def save_network(model: nn.Module, directory: str | Path, kind: ArtifactKind = NETWORK,
                 fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Save ``model`` (it must have ``config()``) with ``fields`` in its manifest; returns the manifest."""
    config = getattr(model, "config", None)
    if not callable(config):
        raise kind.error(f"cannot save {type(model).__name__} as the {kind.noun}: it has no config() to rebuild it from")
    return save_artifact(directory, kind, dict(model.state_dict()), {"architecture": config(), **(fields or {})})


def load_network(path: str | Path, kind: ArtifactKind = NETWORK) -> tuple[nn.Module, dict[str, Any]]:
    """The network saved at ``path`` (in eval mode) and its manifest; ``kind.error`` naming any problem."""
    manifest, tensors, directory = load_artifact(path, kind)
    arch = manifest.get("architecture")
    if not isinstance(arch, dict):
        raise kind.error(f"{directory / kind.manifest} has no 'architecture' record; {kind.remake}")
    try:
        model = model_from_config(arch)
        model.load_state_dict(tensors, strict=True)
    except (LearngeneError, RuntimeError, KeyError, TypeError, ValueError) as err:
        raise kind.error(f"the weights in {directory} do not fit their architecture ({str(err)[:300]}); {kind.remake}") from None
    return model.eval(), manifest

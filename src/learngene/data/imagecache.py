"""The on-disk cache of decoded or rendered image sets: one safetensors file per set (never pickle), written
through the package's atomic writer."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from learngene.data.images import ImageSet
from learngene.errors import DataError

__all__ = ["cache_dir", "cached_build", "load_imageset", "save_imageset"]

_FORMAT = "learngene.imageset/1"


def cache_dir() -> Path:
    """Where decoded/rendered datasets are cached: $LEARNGENE_CACHE, else ~/.cache/learngene."""
    env = os.environ.get("LEARNGENE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "learngene"


def save_imageset(data: ImageSet, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write an ImageSet as one safetensors file through the package's atomic writer, so a crash or a
    concurrent reader never sees a half-written cache."""
    from safetensors.torch import save

    from learngene.safeio import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"images": data.images.contiguous(), "labels": data.labels.contiguous()}
    if data.official_test is not None:
        tensors["official_test"] = data.official_test.to(torch.uint8).contiguous()
    meta = {
        "format": _FORMAT,
        "name": data.name,
        "classes": json.dumps(data.classes),
        "groups": json.dumps(data.groups),
        "preprocessing": json.dumps(data.preprocessing),
    }
    meta.update({f"extra.{k}": str(v) for k, v in (extra or {}).items()})
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def load_imageset(path: str | Path) -> ImageSet:
    """Read a file written by save_imageset; DataError if it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"image set file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise DataError(f"{path} is not a learngene image set (format {meta.get('format')!r})")
            images = f.get_tensor("images")
            labels = f.get_tensor("labels")
            ot = f.get_tensor("official_test").bool() if "official_test" in f.keys() else None
        return ImageSet(
            images=images,
            labels=labels,
            classes=json.loads(meta["classes"]),
            groups=json.loads(meta["groups"]),
            name=meta.get("name", path.stem),
            official_test=ot,
            preprocessing=json.loads(meta["preprocessing"]) if "preprocessing" in meta else None,
        )
    except DataError:
        raise
    except Exception as exc:  # truncated/corrupt file: report it as data, not as a deep traceback
        raise DataError(f"cannot read image set {path}: {exc}; delete the file to rebuild it") from exc


def cached_build(path: Path, build, extra: dict[str, str] | None = None) -> ImageSet:
    """Load `path` if it is a valid cache, else call build() and try to write it.

    Caching is an optimisation: an unreadable cache is rebuilt and an unwritable cache dir only warns."""
    if path.is_file():
        try:
            return load_imageset(path)
        except DataError as exc:
            warnings.warn(f"ignoring broken cache ({exc})", RuntimeWarning, stacklevel=3)
    data = build()
    try:
        save_imageset(data, path, extra)
    except OSError as exc:
        warnings.warn(
            f"could not write cache {path} ({exc}); set LEARNGENE_CACHE to a writable folder",
            RuntimeWarning,
            stacklevel=3,
        )
    return data

"""Run checkpoints: written atomically with a checksum, found through a small pointer file.

A checkpoint file is only ever published by an atomic rename, and `latest.json` (also renamed into place)
names it together with its sha256. A write killed halfway leaves at most a stray temporary file that is
never mistaken for a good checkpoint; a file whose checksum does not match is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from learngene.errors import CheckpointError
from learngene.safeio import atomic_torch_save, atomic_write_json, read_json, safe_torch_load

POINTER = "latest.json"


def save_checkpoint(directory: str | Path, state: dict[str, Any], *, task: int, epoch: int, keep: int = 2) -> Path:
    """Save ``state`` as ``ckpt-t{task}-e{epoch}.pt`` and point ``latest.json`` at it; keep the newest ``keep`` files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-t{task:03d}-e{epoch:03d}.pt"
    digest = atomic_torch_save(directory / name, state)
    atomic_write_json(directory / POINTER, {"file": name, "sha256": digest, "task": task, "epoch": epoch})
    existing = sorted(directory.glob("ckpt-t*-e*.pt"), key=lambda p: p.stat().st_mtime)
    for old in existing[:-keep]:
        if old.name != name:
            old.unlink(missing_ok=True)
    return directory / name


def has_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / POINTER).is_file()


def load_latest(directory: str | Path) -> dict[str, Any]:
    """Load the checkpoint that ``latest.json`` names, verifying its checksum (never unpickles objects)."""
    directory = Path(directory)
    pointer = read_json(directory / POINTER, "checkpoint pointer")
    if not isinstance(pointer.get("file"), str) or "/" in pointer["file"] or not isinstance(pointer.get("sha256"), str):
        raise CheckpointError(
            f"{directory / POINTER} is malformed; start the run again without --resume "
            "(with --overwrite to reuse its directory)"
        )
    path = directory / pointer["file"]
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} named by {directory / POINTER} is missing; start the run again without --resume "
            "(with --overwrite to reuse its directory)"
        )
    state = safe_torch_load(path, expected_sha256=pointer["sha256"])
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a learngene run state")
    return state

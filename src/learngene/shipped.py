"""Learngenes that ship with the package: ready to inherit from, offline, with no training.

Each lives in ``learngene/shipped/<name>/``: the gene's own artifact (``learngene.json`` + ``model.safetensors``),
``card.json`` (what it was made from and how well it does: data, split, training, stored parameters, accuracy on
its own held-out classes, and a reduced check that a slow test reproduces) and ``CARD.md`` (the same, to read).
They are built by ``python -m bench.ship_genes`` (the repository's ``bench/``), never by hand; weights only, no
data.  :func:`learngene.kinds.load_gene` and ``learngene inherit --gene NAME`` accept a shipped name wherever a
directory is expected; ``learngene list genes`` lists them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["SHIPPED_DIR", "list_shipped", "shipped_card", "shipped_path"]

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
CARD = "card.json"


def list_shipped() -> list[str]:
    """Names of the shipped learngenes (sorted)."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "learngene.json").is_file())


def shipped_path(name: str) -> Path | None:
    """The directory of shipped learngene ``name``, or None when there is none by that name.

    A name is one plain path component (no separators), so a user's relative path is never mistaken for one."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = SHIPPED_DIR / name
    return path if (path / "learngene.json").is_file() else None


def shipped_card(name: str) -> dict[str, Any]:
    """The card of shipped learngene ``name`` (``{}`` when it has none)."""
    path = shipped_path(name)
    if path is None or not (path / CARD).is_file():
        return {}
    return json.loads((path / CARD).read_text(encoding="utf-8"))

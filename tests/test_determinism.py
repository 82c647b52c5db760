"""Same seed, same device -> the same report, bit for bit; another seed -> another split and other numbers.

Only fields that are legitimately run-specific may differ between two runs of the same command: wall-clock
times and absolute paths / creation stamps. They are dropped recursively by key (VOLATILE) and everything
else -- every accuracy, confidence interval, curve, criterion score, split and class order -- must compare
equal as parsed JSON, floats included (no tolerance). docs/ERRORS.md ("Determinism") says what holds on CUDA.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from learngene.cli import main

# keys whose values are measured (wall time) or name the place and moment of a run
VOLATILE = frozenset({"train_seconds", "train_seconds_mean", "dir", "collective_run", "created"})


def strip(obj: Any) -> Any:
    """``obj`` without the VOLATILE keys, at every depth."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in keys(v)}
    return set()


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two JSON values first differ (for a readable failure)."""
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(set(a) ^ set(b))}"
        return next((d for k in a if (d := first_difference(a[k], b[k], f"{path}/{k}"))), None)
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} vs {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := first_difference(x, y, f"{path}[{i}]"))), None)
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("determinism")
    out = {}
    for name in ("a", "b"):
        out[name] = root / name
        assert main(["run", "--preset", "smoke", "--out", str(out[name]), "--quiet", "--device", "cpu"]) == 0
    out["seed1"] = root / "seed1"  # the collective stage is enough to see what the seed changes
    assert main(["collective", "--preset", "smoke", "--set", "seed=1", "--out", str(out["seed1"]), "--quiet",
                 "--device", "cpu"]) == 0
    return out


def test_same_seed_gives_identical_report(runs):
    a, b = load(runs["a"] / "report.json"), load(runs["b"] / "report.json")
    assert {"train_seconds_mean", "dir"} <= keys(a)  # the dropped keys exist: the comparison is not vacuous
    assert strip(a) == strip(b), first_difference(strip(a), strip(b))
    assert a["individual"]["methods"]["learngene"]["accuracies"]  # numbers, not just structure


@pytest.mark.parametrize("name", ["collective/collective.json", "collective/stream.json", "gene/learngene.json"])
def test_same_seed_gives_identical_run_files(runs, name):
    a, b = load(runs["a"] / name), load(runs["b"] / name)
    assert strip(a) == strip(b), first_difference(strip(a), strip(b))


@pytest.mark.parametrize("name", ["gene/model.safetensors", "collective/model/model.safetensors",
                                  "collective/gradient_stats.safetensors"])
def test_same_seed_gives_identical_weights(runs, name):
    assert (runs["a"] / name).read_bytes() == (runs["b"] / name).read_bytes(), name


def test_different_seed_gives_different_split_and_numbers(runs):
    s0, s1 = load(runs["a"] / "collective" / "stream.json"), load(runs["seed1"] / "stream.json")
    assert s0["split"] != s1["split"] or s0["class_order"] != s1["class_order"]
    c0, c1 = load(runs["a"] / "collective" / "collective.json"), load(runs["seed1"] / "collective.json")
    assert c0["accuracy_matrix_task_aware"] != c1["accuracy_matrix_task_aware"]
    assert (runs["a"] / "collective" / "model" / "model.safetensors").read_bytes() != (
        runs["seed1"] / "model" / "model.safetensors"
    ).read_bytes()


def test_strip_drops_only_volatile_keys():
    report = {"gene": {"dir": "/x", "layers": ["features.0"]}, "m": [{"train_seconds": 1.5, "accuracy": 0.25}]}
    assert strip(report) == {"gene": {"layers": ["features.0"]}, "m": [{"accuracy": 0.25}]}
    assert first_difference({"a": [1.0, 2.0]}, {"a": [1.0, 2.0000001]}) == "/a[1]: 2.0 vs 2.0000001"

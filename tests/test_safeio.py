"""Crash safety and code safety of learngene.safeio."""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import pytest
import torch

from learngene import safeio
from learngene.errors import CheckpointError, ConfigError, LearngeneError
from learngene.safeio import (
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    check_writable_dir,
    read_json,
    safe_torch_load,
    sha256_file,
)


def _leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# ----------------------------------------------------------------------------- atomic writes
def test_atomic_write_bytes_round_trip_and_replace(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second version")
    assert target.read_bytes() == b"second version"
    assert _leftovers(target.parent, {"file.bin"}) == []


@pytest.mark.parametrize("stage", ["fsync", "replace"])
def test_atomic_write_failure_midway_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    target = tmp_path / "ckpt.pt"
    atomic_write_bytes(target, b"old complete content")

    class Boom(RuntimeError):
        pass

    def explode(*args: object, **kwargs: object) -> None:
        raise Boom("simulated crash")

    monkeypatch.setattr(safeio.os, stage, explode)
    with pytest.raises(Boom):
        atomic_write_bytes(target, b"new content that must never appear half-written" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old complete content"
    assert _leftovers(tmp_path, {"ckpt.pt"}) == []


def test_atomic_write_failure_for_new_file_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safeio.os, "fsync", explode)
    with pytest.raises(LearngeneError, match="No space left"):
        atomic_write_bytes(tmp_path / "new.bin", b"x" * 100)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_atomic_torch_save_unpicklable_object_touches_nothing(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    digest = atomic_torch_save(target, {"w": torch.ones(3)})
    before = target.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises, the file must be untouched
        atomic_torch_save(target, {"w": torch.zeros(3), "f": lambda x: x})
    assert target.read_bytes() == before
    assert sha256_file(target) == digest
    assert _leftovers(tmp_path, {"state.pt"}) == []


def test_atomic_write_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(LearngeneError, match="not plain JSON"):
        atomic_write_json(tmp_path / "x.json", {"loss": float("nan")})
    assert not (tmp_path / "x.json").exists()
    atomic_write_json(tmp_path / "x.json", {"a": [1, 2], "b": "é"})
    assert json.loads((tmp_path / "x.json").read_text(encoding="utf-8")) == {"a": [1, 2], "b": "é"}


# ----------------------------------------------------------------------------- safe loading
def test_safe_torch_load_round_trip_with_checksum(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 3, "names": ["a", "b"]}
    digest = atomic_torch_save(tmp_path / "s.pt", state)
    assert digest == sha256_file(tmp_path / "s.pt")
    loaded = safe_torch_load(tmp_path / "s.pt", expected_sha256=digest)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["epoch"] == 3 and loaded["names"] == ["a", "b"]


class _Evil:
    """Unpickling this would run a shell command that creates a marker file."""

    marker: str = ""

    def __reduce__(self):  # type: ignore[override]
        return (os.system, (f"touch {self.marker}",))


class _EvilWrite:
    """Unpickling this would call a Python function that writes a marker file."""

    marker: str = ""

    def __reduce__(self):  # type: ignore[override]
        return (Path.write_text, (Path(self.marker), "pwned"))


@pytest.mark.parametrize("evil_cls", [_Evil, _EvilWrite])
@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_safe_torch_load_refuses_malicious_pickle(tmp_path: Path, evil_cls: type, container: str) -> None:
    marker = tmp_path / "PWNED"
    evil = evil_cls()
    evil.marker = str(marker)
    path = tmp_path / "evil.pt"
    if container == "torch_zip":
        torch.save({"weights": torch.ones(2), "payload": evil}, path)
    else:
        path.write_bytes(pickle.dumps({"payload": evil}))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused") as info:
        safe_torch_load(path)
    assert str(path) in str(info.value)
    assert not marker.exists(), "loading executed code from the file"
    if container == "torch_zip":
        # the blocked callable is named so the user knows why
        assert re.search(r"blocked global `[\w.]+`", str(info.value))


def test_safe_torch_load_checksum_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    digest = atomic_torch_save(path, {"w": torch.ones(4)})
    with pytest.raises(CheckpointError, match="checksum") as info:
        safe_torch_load(path, expected_sha256="0" * 64)
    assert str(path) in str(info.value)
    # flipping one byte breaks the stored checksum
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        safe_torch_load(path, expected_sha256=digest)


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_safe_torch_load_truncated(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "t.pt"
    atomic_torch_save(path, {"w": torch.randn(64, 64)})
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError) as info:
        safe_torch_load(path)
    assert str(path) in str(info.value)


def test_safe_torch_load_foreign_and_missing(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="notes.txt"):
        safe_torch_load(text)
    zipped = tmp_path / "other.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(CheckpointError, match="other.zip"):
        safe_torch_load(zipped)
    with pytest.raises(CheckpointError, match="does not exist"):
        safe_torch_load(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- read_json
def test_read_json_ok_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"a": 1}')
    assert read_json(good, "run config") == {"a": 1}

    with pytest.raises(LearngeneError, match=r"run config not found.*missing\.json"):
        read_json(tmp_path / "missing.json", "run config")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,')
    with pytest.raises(LearngeneError, match=r"run config.*bad\.json.*not valid JSON"):
        read_json(bad, "run config")
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    with pytest.raises(LearngeneError, match=r"stream manifest.*arr\.json.*JSON object"):
        read_json(arr, "stream manifest")
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(LearngeneError, match="bin.json"):
        read_json(binary, "run config")
    with pytest.raises(LearngeneError, match="not a file"):
        read_json(tmp_path, "run config")


# ----------------------------------------------------------------------------- check_writable_dir
def test_check_writable_dir_creates_and_accepts_empty(tmp_path: Path) -> None:
    out = check_writable_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []
    assert check_writable_dir(out) == out  # empty existing dir is fine


def test_check_writable_dir_non_empty(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="--overwrite") as info:
        check_writable_dir(out)
    assert "--resume" in str(info.value) and str(out) in str(info.value)
    assert check_writable_dir(out, overwrite=True) == out
    assert check_writable_dir(out, overwrite=True, marker="config.json") == out


def test_check_writable_dir_marker_protects_foreign_dir(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ConfigError, match="not written by learngene"):
        check_writable_dir(out, overwrite=True, marker="config.json")
    assert (out / "holiday.jpg").exists()


def test_check_writable_dir_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="a_file"):
        check_writable_dir(blocker / "sub")  # a path under a regular file cannot be created, even by root
    with pytest.raises(ConfigError, match="existing file"):
        check_writable_dir(blocker)


def test_output_lock_refuses_a_live_holder_takes_over_a_stale_one_and_releases(tmp_path):
    import json as _json
    import os
    import socket
    import subprocess
    import sys

    from learngene.errors import ConfigError
    from learngene.safeio import LOCK_NAME, check_writable_dir, output_lock

    out = tmp_path / "run"
    with output_lock(out) as lock:
        held = _json.loads(lock.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        check_writable_dir(out)  # our own lock does not make the directory "not empty"
        with pytest.raises(ConfigError, match="in use by another learngene run"):
            with output_lock(out):
                pass
    assert not (out / LOCK_NAME).exists()  # released
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_NAME).write_text(_json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with output_lock(out) as lock:  # the holder is gone: stale, taken over
        assert _json.loads(lock.read_text())["pid"] == os.getpid()
    (out / LOCK_NAME).write_text(_json.dumps({"pid": 1, "host": "another-machine"}))
    with pytest.raises(ConfigError, match="another-machine"):  # no way to tell from here: refuse
        with output_lock(out):
            pass

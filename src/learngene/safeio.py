"""Crash-safe, code-safe file I/O for checkpoints and artifacts.

Why one module: every file this package writes must survive a crash mid-write (a half-written checkpoint is
worse than none, because resuming from it silently corrupts a run), and every file it reads must be loaded
without running code from it (a checkpoint or artifact may come from someone else). Keeping all of that here
means the rest of the package never calls ``open(..., "wb")``, ``torch.save`` or ``torch.load`` directly.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

from learngene.errors import CheckpointError, ConfigError, DiskFullError, LearngeneError
from learngene.faults import maybe_kill

# output directories have their own module; importable from here as before
from learngene.output_dirs import (  # noqa: F401
    LOCK_NAME,
    article,
    artifact_kind,
    check_writable_dir,
    fresh_output,
    output_lock,
    remove_outputs,
    shown_path,
)

__all__ = [
    "artifact_kind",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_writable_dir",
    "fresh_output",
    "jsonable",
    "read_json",
    "safe_torch_load",
    "sha256_bytes",
    "sha256_file",
]

_CHUNK = 1 << 20
# A JSON config/manifest bigger than this is not one of ours; refusing it keeps a hostile file from eating memory.
MAX_JSON_BYTES = 64 * 1024 * 1024


def _fsync_dir(directory: Path) -> None:
    """Persist the directory entry of a rename (POSIX); silently skipped where directories cannot be opened."""
    flags = getattr(os, "O_DIRECTORY", 0) | os.O_RDONLY
    try:
        fd = os.open(directory, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_MODE: list[int] = []


def _file_mode() -> int:
    """0666 minus the process umask (read once; os.umask can only be read by setting it)."""
    if not _MODE:
        mask = os.umask(0o022)
        os.umask(mask)
        _MODE.append(0o666 & ~mask)
    return _MODE[0]


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _disk_full(target: Path, err: OSError) -> DiskFullError:
    return DiskFullError(
        f"the disk is full: writing {target} failed ({err.strerror or err}); nothing partial was left and the "
        "previous file, if any, is unchanged. Free disk space and retry"
    )


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one.

    The bytes go to a temporary file in the same directory (same filesystem, so the rename is atomic), are
    flushed and fsynced, then ``os.replace`` puts them in place and the directory is fsynced. On any failure
    the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot create directory {parent} to write {target.name}: {err.strerror or err}; "
            "choose an output path in a writable location"
        ) from err
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as err:
        if err.errno in _DISK_FULL:
            raise _disk_full(target, err) from err
        raise ConfigError(
            f"cannot write {target}: {err.strerror or err}; choose an output path in a writable location"
        ) from err
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, _file_mode())  # mkstemp makes 0600 files; ours are as readable as any file the user makes
        with os.fdopen(fd, "wb") as fh:
            half = len(data) // 2
            fh.write(data[:half])
            fh.flush()
            maybe_kill("checkpoint_write" if target.suffix == ".pt" else "file_write")  # tests: die mid-write
            fh.write(data[half:])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            raise _disk_full(target, err) from err
        if isinstance(err, OSError):
            raise LearngeneError(
                f"writing {target} failed ({err.strerror or err}); the previous file, if any, is unchanged. "
                "Free disk space or fix permissions and retry"
            ) from err
        raise
    _fsync_dir(parent)


def jsonable(obj: Any) -> Any:
    """Reports may hold NaN (undefined entries, CI of one sample): strict JSON has no NaN, so write null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as pretty JSON; NaN/Inf are refused because strict JSON readers reject them."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise LearngeneError(
            f"cannot write {path}: the data is not plain JSON ({err}); convert tensors/arrays to lists "
            "and non-finite floats to null before saving"
        ) from err
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of in-memory bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks so large checkpoints do not need to fit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> str:
    """Serialize ``obj`` with ``torch.save`` in memory, write it atomically, return its SHA-256.

    Serializing first means a failure while pickling (an unpicklable object) never touches the disk. Store
    only tensors and plain containers/numbers/strings: :func:`safe_torch_load` refuses anything else.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def _refusal_reason(message: str) -> str:
    """Pick the informative part out of torch's long weights-only error text."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", message)
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return f"it references the blocked global `{found.group(1)}`"
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if "Unsupported" in ln:
            return ln.split("error:")[-1].strip()
    return lines[-1] if lines else "unknown reason"


def safe_torch_load(
    path: str | os.PathLike[str], expected_sha256: str | None = None, map_location: Any = "cpu"
) -> Any:
    """Load a torch checkpoint with ``weights_only=True`` only; never executes code from the file.

    Raises :class:`CheckpointError` naming the path when the file is missing, fails its checksum, is truncated
    or not a torch file, or would need arbitrary objects unpickled (refused, and the blocked object named).
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint {p} does not exist (or is not a file); check the path or start a new run"
        )
    if expected_sha256 is not None:
        actual = sha256_file(p)
        if actual.lower() != expected_sha256.lower():
            raise CheckpointError(
                f"checkpoint {p} fails its checksum: sha256 is {actual}, expected {expected_sha256}; the file was "
                "modified or truncated after it was written. Restore it, or start the run again without --resume "
                "(with --overwrite to reuse its directory)"
            )
    if p.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {p} is empty (truncated write?); start the run again without --resume "
            "(with --overwrite to reuse its directory)"
        )
    with open(p, "rb") as fh:
        # torch's format is a zip archive; its local-header magic survives truncation (the central directory does not)
        is_zip = fh.read(4) == b"PK\x03\x04"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _refusal_reason(str(err))
        if is_zip or "GLOBAL" in str(err):
            raise CheckpointError(
                f"refused to load checkpoint {p}: it needs unpickling of objects other than tensors and plain "
                f"containers ({reason}), which could execute code, so nothing was run. Only load files written "
                "by learngene; if you trust its source, re-save it as a plain state dict"
            ) from None
        raise CheckpointError(
            f"refused to load {p}: it is not a torch zip checkpoint and the safe (weights-only) loader rejected "
            f"it ({reason}); it is a foreign pickle or not a torch file at all. Point to a checkpoint written by learngene"
        ) from None
    except Exception as err:  # any parser failure means a corrupt or foreign file
        detail = str(err).split(". ")[0].splitlines()[0] if str(err).strip() else type(err).__name__
        kind = "truncated or corrupt torch checkpoint" if is_zip else "not a torch checkpoint"
        raise CheckpointError(
            f"cannot load {p}: {kind} ({detail}); delete it and restart, or point to a complete checkpoint"
        ) from None


def read_json(path: str | os.PathLike[str], what: str) -> dict:
    """Read a JSON object, turning every failure into a :class:`LearngeneError` that names ``path`` and ``what``."""
    p = Path(path)
    if not p.exists():
        raise LearngeneError(f"{what} not found: {p} does not exist; check the path")
    if not p.is_file():
        raise LearngeneError(f"{what} at {p} is not a file; point to the JSON file itself")
    try:
        size = p.stat().st_size
        if size > MAX_JSON_BYTES:
            raise LearngeneError(
                f"{what} at {p} is {size} bytes, more than any JSON this tool writes; it is not a {what}"
            )
        raw = p.read_bytes()
    except OSError as err:
        raise LearngeneError(
            f"cannot read {what} at {p}: {err.strerror or err}; check its permissions"
        ) from err
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise LearngeneError(
            f"{what} at {p} is not UTF-8 text ({err.reason}); it is not a {what} file"
        ) from None
    except (ValueError, RecursionError) as err:
        raise LearngeneError(
            f"{what} at {p} is not valid JSON ({err}); the file is corrupt or truncated, restore or regenerate it"
        ) from None
    if not isinstance(obj, dict):
        raise LearngeneError(
            f"{what} at {p} must hold a JSON object, got {type(obj).__name__}; the file is not a {what}"
        )
    return obj

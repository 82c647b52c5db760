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
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from learngene.errors import CheckpointError, ConfigError, DiskFullError, LearngeneError
from learngene.faults import maybe_kill

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


def shown_path(path: str | os.PathLike[str], limit: int = 160) -> str:
    """A path for a one-line message: a path of thousands of characters is shown by its start and end."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:100]}...{text[-50:]} ({len(text)} characters)"


def _os_problem(err: OSError) -> str:
    """What went wrong, and the fix where it is specific (a name too long, a read-only filesystem)."""
    what = err.strerror or str(err)
    if err.errno == errno.ENAMETOOLONG:
        return f"{what} (at most 255 characters per folder or file name, 4096 for the whole path); choose a shorter path"
    if err.errno == errno.EROFS:
        return f"{what}; choose a location on a writable filesystem"
    return f"{what}; choose a writable location"


def _make_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create an output directory (and its parents), with a clear message when that is impossible."""
    p = Path(path)
    try:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"output directory {shown_path(p)} is an existing file; choose a directory path")
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create output directory {shown_path(p)}: {_os_problem(err)}") from err
    return p


# The file (or folder) that identifies each kind of directory learngene writes, most specific first.
_KIND_MARKERS: tuple[tuple[str, str], ...] = (
    ("learngene.json", "learngene"),
    ("model.json", "individual model"),
    ("network.json", "collective network"),
    ("baseline.json", "baseline"),
    ("report.json", "run"),
    ("evaluation.json", "evaluation"),
    ("tune.json", "tuning run"),
    ("trials", "tuning run"),
    ("collective.json", "collective run"),
    ("stream.json", "collective run"),
    ("checkpoints/latest.json", "collective run"),
)
_RUN_KINDS = ("run", "collective run", "tuning run")


def artifact_kind(path: str | os.PathLike[str]) -> str | None:
    """The kind of learngene artifact a directory holds (``"learngene"``, ``"run"``, ...), or None.

    Why: ``--overwrite`` may replace an earlier artifact of the same kind, never a gene with a model or a run
    with a gene, so every writer asks what a directory holds before writing into it.
    """
    p = Path(path)
    try:
        if not p.is_dir():
            return None
        for name, kind in _KIND_MARKERS:
            if (p / name).exists():
                return kind
        if artifact_kind(p / "collective") == "collective run":  # a `run` stopped during its collective stage
            return "run"
    except OSError:
        return None
    return None


def article(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _owning_run(p: Path) -> Path | None:
    """The run directory (up to three levels up) that ``p`` is part of, if any."""
    for parent in list(p.resolve().parents)[:3]:
        if artifact_kind(parent) in _RUN_KINDS:
            return parent
    return None


def _check_kind(p: Path, kind: str, part_of_run: bool) -> None:
    held = artifact_kind(p)
    if held is not None and held != kind:
        raise ConfigError(
            f"{p} holds {article(held)}, not {article(kind)}; learngene never writes one kind of artifact over another, "
            f"even with --overwrite. Choose another --out directory"
        )
    if part_of_run:
        return
    try:
        occupied = p.is_dir() and any(e.name != LOCK_NAME for e in p.iterdir())
    except OSError:
        occupied = False
    owner = _owning_run(p) if occupied else None
    if owner is not None:
        raise ConfigError(
            f"{p} is part of the {artifact_kind(owner)} in {owner}, whose reports describe its files; "
            "writing there would make them lie. Choose an --out directory outside that run"
        )


def check_writable_dir(
    path: str | os.PathLike[str],
    overwrite: bool = False,
    marker: str | None = None,
    resumable: bool = True,
    *,
    kind: str | None = None,
    part_of_run: bool = False,
) -> Path:
    """Create (if needed) and return an output directory that is safe to write into.

    A non-empty directory is refused unless ``overwrite`` is given, so a run never silently mixes its files
    with an older one. ``marker`` names the file that identifies a directory written by this tool (for example
    ``run.json``): with it, ``overwrite`` still refuses a non-empty directory lacking the marker (it is not ours,
    so we will not clobber it), and the refusal message suggests ``--resume`` when the marker is present.
    ``resumable=False`` (commands without ``--resume``, such as ``inherit``) keeps ``--resume`` out of the hint.
    ``kind`` (see :func:`artifact_kind`) is what the caller will write: a directory holding another kind is
    refused even with ``overwrite``, and so is a non-empty folder inside a run unless ``part_of_run`` (the run
    itself writing its gene). This is the one meaning of ``--overwrite`` in every command: replace an earlier
    artifact of the same kind. Writability is probed by creating a file, because permission bits lie for root.
    """
    if kind is not None:
        _check_kind(Path(path), kind, part_of_run)
    p = _make_output_dir(path)
    try:
        entries = [e.name for e in p.iterdir() if e.name != LOCK_NAME]  # our own run's lock is not content
    except OSError as err:
        raise ConfigError(
            f"cannot list output directory {p}: {err.strerror or err}; check its permissions"
        ) from err
    if entries:
        has_marker = marker is not None and (p / marker).exists()
        if not overwrite:
            hint = (
                "pass --resume to continue that run, or --overwrite to replace it"
                if has_marker
                else (
                    "pass --overwrite to write into it anyway, --resume to continue a run there, or choose an empty directory"
                    if resumable
                    else "pass --overwrite to write into it anyway, or choose an empty directory"
                )
            )
            raise ConfigError(f"output directory {p} is not empty ({len(entries)} entries); {hint}")
        if marker is not None and not has_marker:
            raise ConfigError(
                f"refusing to overwrite {p}: it is not empty and has no {marker}, so it was not written by learngene; "
                "choose an empty or new directory"
            )
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"output directory {shown_path(p)} is not writable: {_os_problem(err)}") from err
    return p


def fresh_output(path: str | os.PathLike[str], *, kind: str, outputs: Iterable[str], overwrite: bool = False,
                 part_of_run: bool = False) -> Path:
    """The start of every command that writes a run directory afresh (no ``--resume``): a non-empty directory is
    refused unless ``overwrite`` (:func:`check_writable_dir`), then the earlier output's own ``outputs`` are
    deleted, so nothing stale passes for this run's (a later ``--resume`` would find work it never did)."""
    p = check_writable_dir(path, overwrite=overwrite, kind=kind, part_of_run=part_of_run)
    remove_outputs(p, outputs)
    return p


def remove_outputs(directory: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Delete the named files and folders of an earlier output in ``directory`` (an ``--overwrite`` start).

    Only learngene's own names are touched: other files a user keeps there stay.
    """
    d = Path(directory)
    for name in names:
        p = d / name
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        except OSError as err:
            raise ConfigError(f"cannot remove the earlier {p} to start afresh: {err.strerror or err}; "
                              "remove it yourself or choose another --out") from err


LOCK_NAME = ".learngene.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike[str]):
    """Hold ``directory`` for one run: a second run into the same output is refused while the first is alive.

    Why: two runs writing one directory leave files from both, and the first run's printed table then matches
    nothing on disk. The lock file records PID, host and start time; a lock left by a process that no longer runs
    on this host (a killed run) is stale and taken over.
    """
    import datetime as _dt
    import socket

    d = _make_output_dir(directory)
    path = d / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                other = json.loads(path.read_text())
                pid, host = int(other["pid"]), str(other["host"])
            except (OSError, ValueError, KeyError, TypeError):
                other, pid, host = {}, -1, ""
            if host == me["host"] and pid > 0 and not _pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # stale: its run was killed
                continue
            raise ConfigError(
                f"output directory {d} is in use by another learngene run (pid {other.get('pid', '?')} on "
                f"{other.get('host', '?')}, since {other.get('started', '?')}); wait for it to finish or choose "
                f"another --out (if that run is gone, delete {path})"
            ) from None
        except OSError as err:  # a read-only filesystem, no permission: the run could write nothing there
            raise ConfigError(f"cannot write in output directory {shown_path(d)}: {_os_problem(err)}") from err
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
            f.flush()
            os.fsync(f.fileno())
        break
    else:  # pragma: no cover - a third process raced us twice
        raise ConfigError(f"could not take the lock {path}; another run keeps creating it")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == me["pid"]:
                path.unlink()

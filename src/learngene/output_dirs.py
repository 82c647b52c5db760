"""Output directories: what kind of learngene artifact a directory holds, whether a command may write into it
(``--overwrite`` replaces only an earlier artifact of the same kind, never a folder inside someone else's run),
clearing an earlier output's own files, and the lock that keeps two runs out of one directory (the one file
written outside :mod:`learngene.safeio`'s atomic writer: a lock must be created exclusively, ``O_EXCL``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from learngene.errors import ConfigError

__all__ = [
    "LOCK_NAME",
    "article",
    "artifact_kind",
    "check_writable_dir",
    "fresh_output",
    "output_lock",
    "remove_outputs",
    "shown_path",
]


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

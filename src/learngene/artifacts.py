"""One artifact format family: every set of weights learngene writes is a directory with two files.

* ``<weights>.safetensors`` -- the tensors, loaded without unpickling anything;
* ``<manifest>.json`` -- ``format`` (the layout, e.g. ``learngene/v1``), ``version`` (the learngene release that
  wrote it), the kind's own fields, ``fields_sha256`` (the SHA-256 of each of those fields), an index of every
  tensor (shape, dtype) and the SHA-256 of the tensor file.

The kinds are the learngene (:data:`GENE`), the collective network (:data:`NETWORK`), an individual model
(:data:`INDIVIDUAL`), a cached baseline network (:data:`BASELINE`) and the gradient statistics
(:data:`GRADIENT_STATS`); networks of any kind are saved with their architecture by :mod:`learngene.models.io`. :func:`save_artifact` writes the
tensors, then the manifest (both atomically, through the package's one writer); :func:`load_artifact` checks
everything a file could get wrong -- missing, foreign, edited, tampered, truncated, too new or too old -- before a
single weight is returned, and says what to do about it. The kind-specific fields are checked by their owners.

Versions (:func:`check_version`): ``format`` must match exactly; of ``version`` (MAJOR.MINOR.PATCH) the patch
never matters; a newer MAJOR.MINOR than this learngene's is refused (it may store something this release would
read wrongly), an older one loads if it has the same major and is not older than :data:`OLDEST_READABLE`.

Fields (:func:`check_fields`): the tensors' checksum alone let a hand-edited manifest load whenever the shapes
still fit (``channels`` 1 -> 3, ``image_size`` 32 -> 64, ``pool`` true -> false), and then the weights are used
in a way they were never trained for. So every field of the manifest that can change how the tensors are used
is checksummed too, one SHA-256 per top-level field over its canonical JSON (sorted keys, no spaces): a field
added to ``input_spec`` or to a layer spec later is covered without being listed anywhere. Only the fields a
kind declares ``descriptive`` (where the artifact came from, how a criterion scored it) are left out. Manifests
of releases before :data:`FIELDS_CHECKED_SINCE` have no ``fields_sha256`` and still load by the version rule.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from learngene.errors import DataError, GeneError, LearngeneError
from learngene.safeio import article, atomic_write_bytes, atomic_write_json, sha256_bytes

__all__ = [
    "BASELINE",
    "FIELDS_CHECKED_SINCE",
    "GENE",
    "GRADIENT_STATS",
    "INDIVIDUAL",
    "NETWORK",
    "OLDEST_READABLE",
    "TRANSFORMER_GENE",
    "ArtifactKind",
    "check_fields",
    "check_version",
    "declared_format",
    "load_artifact",
    "package_version",
    "save_artifact",
]


@dataclass(frozen=True)
class ArtifactKind:
    """What distinguishes one kind of artifact: its format tag, file names, error type and how to remake it."""

    noun: str  # "learngene": used in messages ("not a learngene")
    format: str  # "learngene/v1"
    manifest: str  # "learngene.json"
    weights: str = "model.safetensors"
    error: type[LearngeneError] = LearngeneError
    remake: str = "write it again"  # how a user gets a good copy
    plural: str = ""  # "genes"; default noun + "s"
    where_from: str = ""  # which directory to pass instead, e.g. "the --out directory of `learngene inherit`"
    # fields that only describe the artifact (provenance, scores): left out of fields_sha256, editable by hand
    descriptive: tuple[str, ...] = ()

    @property
    def nouns(self) -> str:
        return self.plural or self.noun + "s"


GENE = ArtifactKind("learngene", "learngene/v1", "learngene.json", error=GeneError,
                    remake="re-export the gene with learngene select", plural="genes",
                    where_from="a learngene directory (the --out of `learngene select`, or the gene/ folder of a run)",
                    descriptive=("criterion", "provenance"))
TRANSFORMER_GENE = ArtifactKind("transformer learngene", "learngene-vit/v1", "learngene.json", error=GeneError,
                                remake="re-export the gene with learngene select", plural="transformer genes",
                                where_from="a transformer learngene directory",
                                descriptive=("criterion", "provenance"))
FREQUENCY_GENE = ArtifactKind("frequency learngene", "learngene-vit-frequency/v1", "learngene.json", error=GeneError,
                              remake="make it again with learngene make-gene or a run's frequency method",
                              plural="frequency genes", where_from="a frequency learngene directory",
                              descriptive=("provenance",))
NETWORK = ArtifactKind("collective network", "learngene-network/v1", "network.json",
                       remake="run the collective training again")
INDIVIDUAL = ArtifactKind("individual model", "learngene-individual/v1", "model.json",
                          remake="run `learngene inherit` again",
                          where_from="the --out directory of `learngene inherit` (or of save_individual)",
                          descriptive=("gene", "support", "provenance"))
BASELINE = ArtifactKind("baseline", "learngene-baseline/v1", "baseline.json", remake="it is retrained when needed")
GRADIENT_STATS = ArtifactKind("gradient statistics", "learngene-gradient-stats/v1", "gradient_stats.json",
                              weights="gradient_stats.safetensors", remake="run the collective training again",
                              plural="gradient statistics", error=DataError)

KINDS = (GENE, TRANSFORMER_GENE, FREQUENCY_GENE, NETWORK, INDIVIDUAL, BASELINE, GRADIENT_STATS)

# The oldest release whose artifacts this one reads (MAJOR, MINOR): 0.1 is the first release of these formats.
# Raise it in the release that changes what a manifest or its tensors mean; change a kind's format for the layout.
OLDEST_READABLE = (0, 1)
# The first release whose manifests carry fields_sha256: from it on, a manifest without one was edited.
FIELDS_CHECKED_SINCE = (0, 2)
FIELDS_KEY = "fields_sha256"
_RESERVED = ("format", "version", FIELDS_KEY, "tensors", "sha256")
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # far above any real manifest: a hostile file cannot make us allocate much
_MAX_HEADER_BYTES = 16 * 1024 * 1024
_SHA_RE = re.compile(r"[0-9a-f]{64}")
# A release number as learngene writes it: MAJOR.MINOR.PATCH, optionally a PEP 440 / semver suffix (0.2.0rc1,
# 0.1.0.dev3, 0.1.0+local). Any MAJOR.MINOR start is enough to recognise an artifact from a newer release.
_VERSION_RE = re.compile(r"(\d{1,6})\.(\d{1,6})\.(\d{1,6})(?:[.+\-]?[0-9A-Za-z][0-9A-Za-z.+\-]{0,39})?")
_VERSION_START_RE = re.compile(r"(\d{1,6})\.(\d{1,6})(?![0-9])")


def package_version() -> str:
    from learngene import __version__

    return __version__


def short(value: Any, limit: int = 60) -> str:
    """A value for an error message, cut to ``limit`` characters (a hostile manifest may hold megabytes)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int too long to print
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _fmt_shape(shape: Any) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _major_minor(value: Any, kind: ArtifactKind) -> tuple[int, int]:
    m = _VERSION_START_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise kind.error(f"'version' must be a version string such as '0.1.0', got {short(value)}")
    return int(m.group(1)), int(m.group(2))


def check_version(made_by: Any, manifest_path: Path, kind: ArtifactKind = GENE) -> None:
    """Apply the compatibility rule (module docstring) to a manifest's ``version``; ``kind.error`` if refused."""
    ours = package_version()
    here = _major_minor(ours, kind)
    try:
        theirs = _major_minor(made_by, kind)
    except LearngeneError as err:
        raise kind.error(f"invalid {kind.noun} manifest {manifest_path}: {err}") from None
    if theirs > here:
        raise kind.error(
            f"made by learngene {made_by}, this is {ours}: incompatible format, written by a newer learngene; "
            f"upgrade learngene to {theirs[0]}.{theirs[1]} or later to load it"
        )
    if not _VERSION_RE.fullmatch(made_by):
        raise kind.error(
            f"invalid {kind.noun} manifest {manifest_path}: 'version' {short(made_by)} is not a release number "
            f"MAJOR.MINOR.PATCH such as {ours!r} (learngene always writes all three); the manifest was edited or "
            f"written by another tool, {kind.remake}"
        )
    if theirs[0] != here[0] or theirs < OLDEST_READABLE:
        oldest = ".".join(map(str, OLDEST_READABLE))
        raise kind.error(
            f"made by learngene {made_by}, this is {ours}: incompatible format, written by an older learngene "
            f"(this one reads {kind.nouns} of {here[0]}.x releases from {oldest} on); {kind.remake} (this "
            f"release), or load it with learngene {theirs[0]}.{theirs[1]}.x"
        )


def _canonical_sha256(value: Any) -> str:
    """SHA-256 of a JSON value's canonical text: the same value gives the same digest however it was formatted."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return sha256_bytes(text.encode("utf-8"))


def fields_sha256(kind: ArtifactKind, fields: dict[str, Any]) -> dict[str, str]:
    """The checksum of every field that is not ``kind.descriptive`` (what :func:`serialize` records)."""
    return {k: _canonical_sha256(v) for k, v in sorted(fields.items()) if k not in kind.descriptive}


def check_fields(manifest: dict[str, Any], kind: ArtifactKind, manifest_path: Path) -> None:
    """Refuse a manifest whose fields differ from those it was written with (see the module docstring)."""
    recorded = manifest.get(FIELDS_KEY)
    fix = f"restore the original {kind.manifest} or {kind.remake}"
    if recorded is None:
        if _major_minor(manifest["version"], kind) < FIELDS_CHECKED_SINCE:
            return  # written before fields were checksummed: the tensor checksum and the kind's checks apply
        since = ".".join(map(str, FIELDS_CHECKED_SINCE))
        raise kind.error(
            f"{manifest_path} has no {FIELDS_KEY!r}, which every {kind.noun} written by learngene {since} or later "
            f"records: the manifest was edited by hand or written by another tool; {fix}"
        )
    if not isinstance(recorded, dict) or not all(isinstance(v, str) and _SHA_RE.fullmatch(v) for v in recorded.values()):
        raise kind.error(f"{manifest_path}: {FIELDS_KEY!r} must map field names to SHA-256 digests; the manifest was "
                         f"edited or is corrupt; {fix}")
    fields = {k: v for k, v in manifest.items() if k not in _RESERVED}
    try:
        now = fields_sha256(kind, fields)
    except ValueError as err:  # allow_nan=False: a NaN cannot have been written by learngene
        raise kind.error(f"{manifest_path}: a field holds a value learngene never writes ({err}); {fix}") from None
    changed = sorted(k for k in set(now) | set(recorded) if now.get(k) != recorded.get(k))
    if changed:
        how = [f"{k!r} {'was removed' if k not in now else 'was added' if k not in recorded else 'differs'}"
               for k in changed]
        raise kind.error(
            f"{manifest_path} was edited after learngene wrote it: {', '.join(how[:5])} (checked by {FIELDS_KEY}); "
            f"an edited manifest would make learngene use the tensors otherwise than they were made for (another "
            f"input size, channel count, pooling, normalization or class list); {fix}"
        )


def safetensors_header(data: bytes, where: Path, kind: ArtifactKind = GENE) -> tuple[dict, dict]:
    """Parse the safetensors JSON header (u64 little-endian length, then JSON) without trusting it."""
    if len(data) < 8:
        raise kind.error(f"truncated/corrupt safetensors {where}: {len(data)} bytes, shorter than the header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER_BYTES or 8 + n > len(data):
        raise kind.error(f"truncated/corrupt safetensors {where}: header claims {n} bytes but the file has {len(data)}")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise kind.error(f"truncated/corrupt safetensors {where}: unreadable header ({err})") from None
    if not isinstance(header, dict):
        raise kind.error(f"truncated/corrupt safetensors {where}: header is not an object")
    metadata = header.pop("__metadata__", None)
    return (metadata if isinstance(metadata, dict) else {}), header


def serialize(kind: ArtifactKind, tensors: dict[str, Tensor], fields: dict[str, Any],
              version: str | None = None) -> tuple[bytes, dict[str, Any]]:
    """The tensor file's bytes and the manifest of an artifact (what :func:`save_artifact` writes)."""
    from safetensors.torch import save

    data = save(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        # one key only: safetensors writes metadata from a hash map, so several keys would come out in a random
        # order and the file (and its sha256) would differ between two saves of the same artifact
        metadata={"format": kind.format},
    )
    reserved = set(_RESERVED) & set(fields)
    if reserved:
        raise ValueError(f"artifact fields may not use the reserved names {sorted(reserved)}")
    plain = json.loads(json.dumps(fields))
    manifest = {
        "format": kind.format,
        "version": version or package_version(),
        **plain,
        FIELDS_KEY: fields_sha256(kind, plain),
        "tensors": {k: {"shape": list(v.shape), "dtype": dtype_name(v.dtype)} for k, v in sorted(tensors.items())},
        "sha256": sha256_bytes(data),
    }
    return data, manifest


def save_artifact(directory: str | Path, kind: ArtifactKind, tensors: dict[str, Tensor],
                  fields: dict[str, Any]) -> dict[str, Any]:
    """Write ``kind.weights`` then ``kind.manifest`` into ``directory`` (atomically); returns the manifest.

    The manifest is written last, so a crash in between leaves a directory that fails to load with a clear
    checksum error instead of a valid-looking artifact with stale weights.
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise kind.error(f"cannot save the {kind.noun} to {d}: it is an existing file; choose a directory path")
    for other in KINDS:
        if other.manifest != kind.manifest and (d / other.manifest).exists():
            # the weights file names coincide (model.safetensors): writing would destroy the other artifact
            raise kind.error(
                f"cannot save the {kind.noun} to {d}: it holds {article(other.noun)} ({other.manifest}); choose another "
                "directory"
            )
    data, manifest = serialize(kind, tensors, fields)
    atomic_write_bytes(d / kind.weights, data)
    atomic_write_json(d / kind.manifest, manifest)
    return manifest


def _read_manifest(path: Path, kind: ArtifactKind) -> tuple[Path, dict[str, Any]]:
    hint = f"; pass {kind.where_from or article(kind.noun) + ' directory'}"
    if not path.exists():
        raise kind.error(f"no {kind.noun} at {path}: no such file or directory{hint}")
    if path.is_dir():
        directory = path
    elif path.name in (kind.manifest, kind.weights):
        directory = path.parent
    else:
        raise kind.error(f"not {article(kind.noun)}: {path} is a file{hint} (or its {kind.manifest})")
    manifest_path = directory / kind.manifest
    if not manifest_path.is_file():
        raise kind.error(f"not {article(kind.noun)} (no {kind.manifest} in {directory}){hint}")
    try:
        raw = manifest_path.read_bytes() if manifest_path.stat().st_size <= _MAX_MANIFEST_BYTES else None
    except OSError as err:
        raise kind.error(f"cannot read {manifest_path}: {err.strerror or err}; check its permissions") from None
    if raw is None:
        raise kind.error(f"not {article(kind.noun)}: {manifest_path} is larger than any {kind.noun} manifest")

    def reject_constant(token: str) -> Any:
        raise ValueError(f"non-standard JSON constant {token}")

    try:
        manifest = json.loads(raw.decode("utf-8"), parse_constant=reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise kind.error(
            f"not {article(kind.noun)} or corrupt manifest: {manifest_path} is not valid JSON ({err}); restore the file "
            f"or {kind.remake}"
        ) from None
    if not isinstance(manifest, dict):
        raise kind.error(f"not {article(kind.noun)}: {manifest_path} holds a {type(manifest).__name__}, not an object")
    fmt = manifest.get("format")
    if fmt != kind.format:
        raise kind.error(
            f"not {article(kind.noun)}: {manifest_path} has format {short(fmt)}, expected {short(kind.format)} "
            "(a file of another tool, or a newer format this version cannot read)"
        )
    check_version(manifest.get("version"), manifest_path, kind)
    check_fields(manifest, kind, manifest_path)
    return directory, manifest


def declared_format(path: str | Path, manifest: str) -> str | None:
    """The ``format`` that ``path`` (a directory, or a file in it) declares in its ``manifest`` file, checking nothing
    else and never raising: None when there is no readable manifest (the full loader then says what is wrong).

    Why: to pick the loader of an artifact whose kind the caller does not know (a gene of any kind)."""
    p = Path(path)
    target = p / manifest if p.is_dir() else p.parent / manifest
    try:
        if target.stat().st_size > _MAX_MANIFEST_BYTES:
            return None
        fmt = json.loads(target.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError, UnicodeDecodeError, RecursionError):
        return None
    return fmt if isinstance(fmt, str) else None


def load_artifact(path: str | Path, kind: ArtifactKind) -> tuple[dict[str, Any], dict[str, Tensor], Path]:
    """Read and check an artifact: ``(manifest, tensors, directory)``; ``kind.error`` naming the problem.

    ``path`` is the directory or one of its two files. The kind's own manifest fields are left to the caller.
    """
    from safetensors.torch import load as st_load

    path = Path(path)
    try:
        directory, manifest = _read_manifest(path, kind)
        where = f"invalid {kind.noun} {directory}"
        index = manifest.get("tensors")
        if not isinstance(index, dict):
            raise kind.error(f"{where}: 'tensors' must be an object of name -> {{shape, dtype}}")
        for key, entry in index.items():
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("shape"), list)
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in entry["shape"])
                or not isinstance(entry.get("dtype"), str)
            ):
                raise kind.error(f"{where}: tensor index entry {short(key)} must be {{'shape': [ints], 'dtype': str}}")
        expected_sha = manifest.get("sha256")
        if not isinstance(expected_sha, str) or not _SHA_RE.fullmatch(expected_sha):
            raise kind.error(f"{where}: 'sha256' must be 64 lowercase hex digits, got {short(expected_sha)}")
        tensor_path = directory / kind.weights
        if not tensor_path.is_file():
            raise kind.error(f"{where}: {kind.weights} is missing; the artifact is incomplete, {kind.remake}")
        try:
            data = tensor_path.read_bytes()
        except OSError as err:
            raise kind.error(f"cannot read {tensor_path}: {err.strerror or err}; check its permissions") from None
        actual_sha = sha256_bytes(data)
        if actual_sha != expected_sha:
            raise kind.error(
                f"tampered: sha256 mismatch for {tensor_path} (file {actual_sha}, manifest {expected_sha}); the "
                f"tensors were modified or truncated after they were written. {kind.remake[0].upper()}{kind.remake[1:]}"
            )
        metadata, header = safetensors_header(data, tensor_path, kind)
        if metadata.get("format") != kind.format:
            raise kind.error(
                f"{where}: {tensor_path} is a safetensors file not written as {article(kind.noun)} "
                f"(metadata format {short(metadata.get('format'))}, expected {short(kind.format)})"
            )
        try:
            tensors = st_load(data)
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise kind.error(f"truncated/corrupt safetensors {tensor_path}: {err}; {kind.remake}") from None
        if set(tensors) != set(index) or set(header) != set(index):
            missing = sorted(set(index) - set(tensors))
            extra = sorted(set(tensors) - set(index))
            raise kind.error(
                f"{where}: tensor file and manifest disagree (missing from file: {missing[:5]}, "
                f"not in manifest: {extra[:5]})"
            )
        for key, entry in index.items():
            t = tensors[key]
            if list(t.shape) != entry["shape"] or dtype_name(t.dtype) != entry["dtype"]:
                raise kind.error(
                    f"{where}: tensor {key} is {dtype_name(t.dtype)}{_fmt_shape(t.shape)} in {kind.weights} but "
                    f"{entry['dtype']}{_fmt_shape(entry['shape'])} in {kind.manifest}"
                )
    except LearngeneError:
        raise
    except Exception as err:  # noqa: BLE001 - any parser surprise must still be a clean user-facing error
        raise kind.error(
            f"cannot load the {kind.noun} from {path}: unexpected problem while reading it ({type(err).__name__}: "
            f"{err}); the artifact is corrupt or not {article(kind.noun)}"
        ) from None
    return manifest, tensors, directory

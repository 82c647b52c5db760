"""In-memory image sets: one uint8 tensor per source, plus the class/group vocabulary.

The datasets learngene works with (Omniglot, CIFAR-100, rendered glyphs, a user's few-shot folder) are
small enough to hold fully in memory as uint8; batched augmentation on those tensors is then much faster
than a per-sample PIL pipeline, and indices into one tensor make streams and episodes trivially
serializable.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from learngene.errors import DataError

__all__ = ["ImageSet", "cache_dir", "convert_channels", "load_imageset", "resize_images", "save_imageset"]

_FORMAT = "learngene.imageset/1"


@dataclass(eq=False)
class ImageSet:
    """All images of one source in memory as uint8: the datasets here are small, and batched augmentation
    on tensors is fast."""

    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N], index into `classes`
    classes: list[str]  # unique class names
    groups: list[str]  # group of each class (alphabet, script, superclass); len == len(classes)
    name: str
    # Optional: True for images of the source's official test split (e.g. CIFAR-100 test set).
    official_test: torch.Tensor | None = None
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _members: list[torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        imgs, labels = self.images, self.labels
        where = f"image set {self.name!r}"
        if not isinstance(imgs, torch.Tensor) or imgs.dtype != torch.uint8 or imgs.dim() != 4:
            got = (
                f"{imgs.dtype} {tuple(imgs.shape)}" if isinstance(imgs, torch.Tensor) else type(imgs).__name__
            )
            raise DataError(f"{where}: images must be a uint8 tensor [N, C, H, W], got {got}")
        if imgs.shape[1] not in (1, 3):
            raise DataError(f"{where}: images must have 1 or 3 channels, got {imgs.shape[1]}")
        if imgs.shape[2] != imgs.shape[3]:
            raise DataError(f"{where}: images must be square, got {imgs.shape[2]}x{imgs.shape[3]}")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
            got = (
                f"{labels.dtype} {tuple(labels.shape)}"
                if isinstance(labels, torch.Tensor)
                else type(labels).__name__
            )
            raise DataError(f"{where}: labels must be an int64 tensor [N], got {got}")
        if labels.shape[0] != imgs.shape[0]:
            raise DataError(f"{where}: {imgs.shape[0]} images but {labels.shape[0]} labels")
        self.classes = [str(c) for c in self.classes]
        self.groups = [str(g) for g in self.groups]
        if len(self.groups) != len(self.classes):
            raise DataError(
                f"{where}: {len(self.classes)} classes but {len(self.groups)} groups (one per class)"
            )
        if len(set(self.classes)) != len(self.classes):
            dup = sorted({c for c in self.classes if self.classes.count(c) > 1})
            raise DataError(f"{where}: duplicate class names {dup[:10]}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise DataError(
                f"{where}: labels must lie in [0, {len(self.classes)}), got [{int(labels.min())}, {int(labels.max())}]"
            )
        if self.official_test is not None:
            ot = self.official_test
            if (
                not isinstance(ot, torch.Tensor)
                or ot.dtype != torch.bool
                or tuple(ot.shape) != (imgs.shape[0],)
            ):
                raise DataError(f"{where}: official_test must be a bool tensor [N]")
        self._index = {c: i for i, c in enumerate(self.classes)}
        self._members = None

    # ------------------------------------------------------------------ basic properties
    def __repr__(self) -> str:  # never dump the image tensor
        return f"ImageSet({self.describe()})"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def group_of(self, class_name: str) -> str:
        return self.groups[self.class_index(class_name)]

    def classes_in_group(self, group: str) -> list[str]:
        return [c for c, g in zip(self.classes, self.groups) if g == group]

    def unique_groups(self) -> list[str]:
        """Groups in order of first appearance (stable, so seeded splits stay reproducible)."""
        return list(dict.fromkeys(self.groups))

    # ------------------------------------------------------------------ lookups
    def class_index(self, class_name: str) -> int:
        try:
            return self._index[class_name]
        except KeyError:
            raise DataError(self._unknown_message(class_name)) from None

    def indices_of(self, class_name: str) -> torch.Tensor:
        """Indices (int64, ascending) of every image of that class."""
        return self._class_members()[self.class_index(class_name)]

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=len(self.classes))

    def _class_members(self) -> list[torch.Tensor]:
        if self._members is None:
            order = torch.argsort(self.labels, stable=True)
            counts = self.class_counts().tolist()
            self._members = list(torch.split(order, counts))
        return self._members

    def _unknown_message(self, class_name: str) -> str:
        close = difflib.get_close_matches(str(class_name), self.classes, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        sample = ", ".join(self.classes[:8]) + (", ..." if len(self.classes) > 8 else "")
        return f"class {class_name!r} is not in image set {self.name!r} ({len(self.classes)} classes: {sample}){hint}"

    def check_classes(self, names: Iterable[str], what: str = "classes") -> None:
        """Raise one DataError naming every missing class at once (better than failing on the first)."""
        missing = [n for n in names if n not in self._index]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
            first = self._unknown_message(missing[0]).split(";", 1)
            hint = f";{first[1]}" if len(first) > 1 else ""
            raise DataError(
                f"{len(missing)} {what} missing from image set {self.name!r}: {shown}{hint}. "
                "Check that the split/manifest was made for this data source."
            )

    # ------------------------------------------------------------------ statistics and views
    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std on the [0, 1] scale (computed in float64 chunks: exact and low-memory)."""
        c = self.channels
        if len(self) == 0:
            raise DataError(f"image set {self.name!r} is empty: cannot compute mean/std")
        s = torch.zeros(c, dtype=torch.float64)
        s2 = torch.zeros(c, dtype=torch.float64)
        n = 0
        for chunk in torch.split(self.images, 4096):
            x = chunk.to(torch.float64).div_(255.0).transpose(0, 1).reshape(c, -1)
            s += x.sum(1)
            s2 += (x * x).sum(1)
            n += x.shape[1]
        mean = s / n
        var = (s2 / n - mean * mean).clamp_min(0.0)
        std = var.sqrt().clamp_min(1e-6)
        return [float(v) for v in mean], [float(v) for v in std]

    def subset_classes(self, names: Sequence[str], name: str | None = None) -> ImageSet:
        """A new ImageSet holding only those classes (in the order given), relabelled 0..len(names)-1."""
        names = list(names)
        self.check_classes(names)
        if len(set(names)) != len(names):
            raise DataError(f"subset_classes: duplicate class names in {names}")
        idx = torch.cat([self.indices_of(n) for n in names]) if names else torch.zeros(0, dtype=torch.int64)
        remap = torch.full((len(self.classes),), -1, dtype=torch.int64)
        for new, n in enumerate(names):
            remap[self._index[n]] = new
        return ImageSet(
            images=self.images[idx],
            labels=remap[self.labels[idx]],
            classes=names,
            groups=[self.groups[self._index[n]] for n in names],
            name=name or self.name,
            official_test=None if self.official_test is None else self.official_test[idx],
        )

    def with_channels(self, channels: int | None) -> ImageSet:
        """The same set converted to 1 or 3 channels (no copy when already right)."""
        if channels is None or channels == self.channels:
            return self
        return ImageSet(
            images=convert_channels(self.images, channels),
            labels=self.labels,
            classes=list(self.classes),
            groups=list(self.groups),
            name=self.name,
            official_test=self.official_test,
        )

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self)} images, {len(self.classes)} classes, {len(set(self.groups))} groups, "
            f"{self.channels}x{self.image_size}x{self.image_size}"
        )


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert a uint8/float batch [N, C, H, W] between 1 and 3 channels (ITU-R 601 luma for RGB -> gray)."""
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        gray = (images.float() * w).sum(1, keepdim=True)
        if images.dtype == torch.uint8:
            return gray.round_().clamp_(0, 255).to(torch.uint8)
        return gray.to(images.dtype)
    raise DataError(f"cannot convert images with {c} channels to {channels}")


def resize_images(images: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 batch [N, C, H, W] to [N, C, size, size] (chunked for memory)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for part in torch.split(images, chunk):
        y = F.interpolate(
            part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    if not out:
        return torch.zeros((0, images.shape[1], size, size), dtype=torch.uint8)
    return torch.cat(out)


# ---------------------------------------------------------------------- caching (safetensors, never pickle)
def cache_dir() -> Path:
    """Where decoded/rendered datasets are cached: $LEARNGENE_CACHE, else ~/.cache/learngene."""
    env = os.environ.get("LEARNGENE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "learngene"


def save_imageset(data: ImageSet, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write an ImageSet as one safetensors file, atomically (temporary file + os.replace), so a crash or
    a concurrent reader never sees a half-written cache."""
    from safetensors.torch import save_file

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
    }
    meta.update({f"extra.{k}": str(v) for k, v in (extra or {}).items()})
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a cache should be readable like any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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

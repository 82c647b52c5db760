"""In-memory image sets: one uint8 tensor per source, plus the class/group vocabulary.

The datasets learngene works with (Omniglot, CIFAR-100, rendered glyphs, a user's few-shot folder) are
small enough to hold fully in memory as uint8; batched augmentation on those tensors is then much faster
than a per-sample PIL pipeline, and indices into one tensor make streams and episodes trivially
serializable.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import json
import logging
import os
import stat
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from learngene.errors import ConfigError, DataError

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_EXTENSIONS",
    "INVERT_CHOICES",
    "RESIZE_MODES",
    "ImageSet",
    "check_preprocessing",
    "crop_loss",
    "cache_dir",
    "convert_channels",
    "find_images",
    "image_class_folders",
    "load_image",
    "load_imageset",
    "max_image_pixels",
    "open_image",
    "read_image_folder",
    "resize_images",
    "save_imageset",
]

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
    # How image files became these tensors (the input contract a gene records): ``invert`` (False, True or
    # "auto": see :func:`load_image`) and ``resize`` ("crop", "pad" or "stretch"). Models trained on this set
    # expect a user's files read the same way.
    preprocessing: dict[str, Any] | None = None
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
        self.preprocessing = check_preprocessing(self.preprocessing, where)
        self._index = {c: i for i, c in enumerate(self.classes)}
        self._members = None

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        *,
        image_size: int | None = None,
        channels: int | None = None,
        classes: Sequence[str] | None = None,
        groups: Sequence[str] | None = None,
        name: str | None = None,
        max_per_class: int | None = None,
    ) -> ImageSet:
        """Any map-style torch ``Dataset`` of ``(image, label)`` pairs in memory: a torchvision dataset
        (``MNIST``, ``CIFAR100``, ``ImageFolder``, ``FakeData``...) or your own.

        Images may be PIL images, uint8 tensors or float tensors in [0, 1] ([C, H, W] or [H, W]); they are
        converted to uint8, to ``channels`` (default: the first image's), and resized (shorter side) and
        centre-cropped to ``image_size`` (default: the first image's size, which must then be square).
        ``classes`` name the labels 0..K-1 (default: ``dataset.classes`` if present, else the label numbers);
        ``groups`` give each class a family for group-wise splits (default: one group per class).
        ``max_per_class`` keeps the first N images of each class (a quick subset of a big dataset).
        """
        n = len(dataset) if hasattr(dataset, "__len__") else None
        if n is None:
            raise DataError(f"{type(dataset).__name__} has no len(): pass a map-style Dataset (indexable, sized)")
        if n == 0:
            raise DataError(f"{type(dataset).__name__} is empty: no images to learn from")
        images, labels, counts = [], [], {}
        for i in range(n):
            item = dataset[i]
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                raise DataError(
                    f"{type(dataset).__name__}[{i}] is {type(item).__name__}, not an (image, label) pair; wrap your "
                    "dataset so that it returns (image, label)"
                )
            img, label = item[0], int(item[1])
            if max_per_class is not None and counts.get(label, 0) >= max_per_class:
                continue
            counts[label] = counts.get(label, 0) + 1
            t = _as_uint8(img, f"{type(dataset).__name__}[{i}]")
            if channels is None:
                channels = int(t.shape[0]) if t.shape[0] in (1, 3) else 3
            t = convert_channels(t.unsqueeze(0), channels)
            if image_size is None:
                if t.shape[-1] != t.shape[-2]:
                    raise DataError(
                        f"{type(dataset).__name__} images are {t.shape[-1]}x{t.shape[-2]}, not square; pass "
                        "image_size= to resize and centre-crop them"
                    )
                image_size = int(t.shape[-1])
            if t.shape[-1] != image_size or t.shape[-2] != image_size:
                t = _resize_crop(t, image_size)
            images.append(t[0])
            labels.append(label)
        k = max(labels) + 1
        if classes is None:
            named = getattr(dataset, "classes", None)
            classes = [str(c) for c in named] if isinstance(named, (list, tuple)) and len(named) >= k else [
                str(c) for c in range(k)]
        if len(classes) < k:
            raise DataError(f"{len(classes)} class names for labels up to {k - 1}; name every label")
        used = sorted(set(labels))  # classes without an image are dropped, labels renumbered densely
        remap = {old: new for new, old in enumerate(used)}
        return cls(
            images=torch.stack(images),
            labels=torch.tensor([remap[y] for y in labels], dtype=torch.int64),
            classes=[classes[c] for c in used],
            groups=[groups[c] for c in used] if groups is not None else [classes[c] for c in used],
            name=name or type(dataset).__name__,
        )

    def input_spec(self, classes: Sequence[str] | None = None) -> dict[str, Any]:
        """Size, channels and normalization statistics (mean, std per channel) of ``classes`` (default: all).

        Models trained on part of the classes (the stream's source classes) normalize with that part's statistics
        only, so the novel classes stay unseen.
        """
        classes = list(classes) if classes is not None else list(self.classes)
        idx = torch.cat([self.indices_of(c) for c in classes])
        x = self.images[idx].float().div_(255)
        mean = x.mean(dim=(0, 2, 3)).tolist()
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
        return {"image_size": self.image_size, "channels": self.channels, "mean": mean, "std": std,
                **self.preprocessing}

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
            preprocessing=dict(self.preprocessing),
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
            preprocessing=dict(self.preprocessing),
        )

    def with_preprocessing(self, **changes: Any) -> ImageSet:
        """The same images recorded as read with other file settings (``invert``, ``resize``): what a source
        declares about how its files became these tensors, so a gene trained on them can read a user's files
        the same way."""
        return dataclasses.replace(self, preprocessing={**self.preprocessing, **changes})

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self)} images, {len(self.classes)} classes, {len(set(self.groups))} groups, "
            f"{self.channels}x{self.image_size}x{self.image_size}"
        )


def _as_uint8(img: Any, where: str) -> torch.Tensor:
    """A PIL image or an image tensor as uint8 [C, H, W] (float tensors are taken as intensities in [0, 1])."""
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.dim() == 2:
            t = t.unsqueeze(0)
        if t.dim() != 3:
            raise DataError(f"{where}: an image tensor must be [C, H, W] or [H, W], got shape {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            return t.contiguous()
        if t.is_floating_point():
            if not bool(torch.isfinite(t).all()) or float(t.min()) < 0 or float(t.max()) > 1:
                raise DataError(f"{where}: float image values must lie in [0, 1] (ToTensor's range), got "
                                f"[{float(t.min()):.3g}, {float(t.max()):.3g}]; drop Normalize from the transform")
            return (t * 255).round().to(torch.uint8)
        raise DataError(f"{where}: image tensors must be uint8 or float, got {t.dtype}")
    if hasattr(img, "convert") and hasattr(img, "size"):  # a PIL image
        im = img.convert("RGB" if img.mode not in ("1", "L", "I;16", "I", "F") else "L")
        arr = np.asarray(im, dtype=np.uint8)
        t = torch.from_numpy(arr.copy())
        return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()
    raise DataError(f"{where}: the image is a {type(img).__name__}; return a PIL image or a tensor")


def _resize_crop(t: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [1, C, H, W]: shorter side to ``size`` (antialiased), centre crop (torchvision Resize + CenterCrop)."""
    h, w = t.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = F.interpolate(t.float(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top : top + size, left : left + size].round().clamp(0, 255).to(torch.uint8)


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


# ---------------------------------------------------------------------- reading image files
# One reader for every command (inherit's support/query folders, predict's files and folders): the same files
# are found, and each file is decoded to the same pixels, whichever command reads it.

#: The file extensions (any case) taken for images when a folder is searched. A file named explicitly (e.g. on
#: the `learngene predict` command line) is decoded whatever its name: Pillow identifies it by its content.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

#: Largest image (width x height) decoded unless $LEARNGENE_MAX_IMAGE_PIXELS says otherwise. It is above every
#: camera (108-megapixel phones, 100-megapixel medium format) and keeps a decoded RGB image under 450 MB, while
#: a crafted or mistaken file (a 20000x10000 scan, a few-KB "decompression bomb") is refused before decoding.
DEFAULT_MAX_IMAGE_PIXELS = 150_000_000
_MAX_PIXELS_ENV = "LEARNGENE_MAX_IMAGE_PIXELS"

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# Formats whose 32-bit integer mode ("I") holds at most 16-bit samples: Pillow stretches a PGM/PPM maxval above
# 255 to 0..65535, and PNG stores at most 16 bits per sample.
_SIXTEEN_BIT_IN_I = ("PPM", "PNG")
_FLOAT_SLACK = 0.5 / 255  # a float within half an 8-bit step of [0, 1] rounds to 0 or 255 anyway
_pillow_guard = threading.Lock()


def max_image_pixels() -> int:
    """The pixel limit of :func:`open_image`: $LEARNGENE_MAX_IMAGE_PIXELS (0 = no limit), else the default.

    An environment variable rather than a config key: it protects the machine, applies to every command and the
    Python API alike (every file :func:`open_image` reads), and is not part of an experiment's settings.
    """
    raw = os.environ.get(_MAX_PIXELS_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            f"{_MAX_PIXELS_ENV}={raw!r} is not a number of pixels; set it to a whole number such as 200000000 "
            f"(0 = no limit), or unset it for the default of {DEFAULT_MAX_IMAGE_PIXELS:_}"
        )
    return value


def _stat(path: Path) -> os.stat_result | None:
    """stat() through symlinks; None when nothing is there. A loop or an unreadable path is a DataError, never
    "does not exist"."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError(
                f"symlink loop: {path} is a symbolic link that leads back to itself (or through too many links) "
                "and never reaches a file or folder; point it at a real file or folder, or remove it"
            ) from None
        raise DataError(f"cannot read {path}: {exc.strerror or exc}; check its permissions") from None


def _broken_link(path: Path) -> str | None:
    """The target of a dangling symlink (None when `path` is not one)."""
    try:
        return os.readlink(path) if path.is_symlink() else None
    except OSError:
        return None


def _walk_images(folder: Path, ancestors: dict[tuple[int, int], Path]) -> Iterator[Path]:
    """Depth first, names sorted at each level: the order of the paths sorted by their parts."""
    try:
        with os.scandir(folder) as it:
            names = sorted(entry.name for entry in it)
    except OSError as exc:
        raise DataError(f"cannot list folder {folder}: {exc.strerror or exc}; check its permissions") from None
    for name in names:
        if name.startswith("."):  # .DS_Store, ._photo.jpg (macOS metadata, not images), .ipynb_checkpoints/
            continue
        path = folder / name
        st = _stat(path)
        is_image_name = path.suffix.lower() in IMAGE_EXTENSIONS
        if st is None:
            target = _broken_link(path)
            if target is not None and is_image_name:  # an image the user meant to give would be lost
                raise DataError(
                    f"broken symlink: {path} points to {target}, which does not exist; fix the link or remove it"
                )
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                raise DataError(
                    f"symlink loop: {path} leads back to {ancestors[key]}, a folder that contains it; remove the "
                    "link or point it outside that folder"
                )
            yield from _walk_images(path, {**ancestors, key: path})
        elif is_image_name and stat.S_ISREG(st.st_mode):
            yield path


def find_images(
    path: str | Path, *, what: str = "image", hint: str = "pass image files or folders of images"
) -> list[Path]:
    """The image files `path` stands for: itself if it is a file, else every image below it (recursively).

    The one discovery rule of every command: extensions in IMAGE_EXTENSIONS (any case); names starting with
    '.' below `path` skipped; symlinks to files and folders followed; a symlink loop or a broken link named like
    an image is a DataError naming the path (never a silent skip or a misleading "does not exist").
    """
    path = Path(path).expanduser()
    st = _stat(path)
    if st is None:
        target = _broken_link(path)
        if target is not None:
            raise DataError(f"{what} {path} is a symbolic link to {target}, which does not exist; {hint}")
        raise DataError(f"{what} {path} does not exist; {hint}")
    if stat.S_ISREG(st.st_mode):
        return [path]
    if not stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path} is neither an image file nor a folder; {hint}")
    return list(_walk_images(path, {(st.st_dev, st.st_ino): path}))


def image_class_folders(root: str | Path) -> list[tuple[str, list[Path]]]:
    """(class name, image files) for each class subfolder of an ImageFolder tree root/<class>/<images>.

    Class folders are the subfolders not starting with '.', symlinked ones included; images are found with
    :func:`find_images`'s rule. An empty class folder is a DataError (a class without examples cannot be
    learned, and silently dropping it would shift every label after it).
    """
    root = Path(root).expanduser()
    layout = f"expected a folder laid out as {root}/<class name>/<image files>"
    st = _stat(root)
    if st is None:
        raise DataError(f"image folder not found: {root} does not exist; {layout}")
    if not stat.S_ISDIR(st.st_mode):
        raise DataError(f"image folder: {root} is not a folder; {layout}")
    top = {(st.st_dev, st.st_ino): root}
    out: list[tuple[str, list[Path]]] = []
    for name in sorted(os.listdir(root)):
        d = root / name
        sub = None if name.startswith(".") else _stat(d)
        if sub is None or not stat.S_ISDIR(sub.st_mode):
            continue
        if (sub.st_dev, sub.st_ino) in top:
            raise DataError(f"symlink loop: {d} leads back to {root}, a folder that contains it; remove the link")
        files = list(_walk_images(d, {**top, (sub.st_dev, sub.st_ino): d}))
        if not files:
            raise DataError(
                f"class folder {d} is empty: expected image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...); "
                "remove the folder or add images"
            )
        out.append((name, files))
    if not out:
        raise DataError(f"no class folders under {root}: expected an ImageFolder layout {root}/<class name>/<image files>")
    return out


@contextmanager
def _own_size_check() -> Iterator[None]:
    """Pillow's global decompression-bomb guard is replaced by ours (a settable limit, a clear message) while
    learngene opens a file; a lock keeps threads of this process from seeing the guard off."""
    from PIL import Image

    with _pillow_guard:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _to_8bit(im: PILImage.Image, path: Path, fmt: str | None) -> PILImage.Image:
    """Deep gray images (16-bit, 32-bit integer, float) as 8-bit "L" on their real scale; other modes unchanged.

    Pillow's own convert("L") clips these to 255 (a 16-bit photo comes out all white). The rules keep absolute
    intensities (no per-image contrast stretch, which would make brightness incomparable between images) and
    refuse what has no standard scale rather than guess:
      * unsigned 16-bit: v * 255 / 65535 rounded (0 -> 0, 65535 -> 255);
      * 32-bit integer: read as 16-bit where the format cannot hold more (PNG; PGM/PPM, which Pillow stretches to
        16 bits), refused otherwise (counts or labels whose scale only their author knows);
      * float: the convention of float images, intensities in [0, 1], times 255 rounded; other ranges and
        NaN/Inf refused.
    """
    from PIL import Image

    mode = im.mode
    if mode not in _SIXTEEN_BIT_MODES + ("I", "F"):
        return im
    a = np.asarray(im)
    fix = "; save it as an 8- or 16-bit image (or scale its values to [0, 1] as float) and try again"
    if mode == "F":
        if not np.isfinite(a).all():
            raise DataError(f"cannot read image {path}: float pixels include NaN or Inf{fix}")
        lo, hi = float(a.min()), float(a.max())
        if lo < -_FLOAT_SLACK or hi > 1 + _FLOAT_SLACK:
            raise DataError(
                f"cannot read image {path}: float pixels range from {lo:g} to {hi:g}, but learngene reads float "
                f"images as intensities in [0, 1] (other scales are ambiguous){fix}"
            )
        out = np.rint(a.astype(np.float64) * 255.0)
    elif mode == "I" and fmt not in _SIXTEEN_BIT_IN_I:
        raise DataError(
            f"cannot read image {path}: 32-bit integer pixels (values {int(a.min())} to {int(a.max())}) have no "
            f"standard intensity scale{fix}"
        )
    else:  # unsigned 16-bit samples
        a = a.astype(np.int64)
        if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise DataError(f"cannot read image {path}: 16-bit pixels outside 0..65535{fix}")
        out = (a * 255 + 32767) // 65535  # round(v / 257)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), mode="L")


def open_image(path: str | Path, max_pixels: int | None = None) -> PILImage.Image:
    """Decode one image file as a photo viewer shows it: an 8-bit PIL image, EXIF orientation applied.

    max_pixels: refuse images with more pixels, checked from the header before anything is decoded; None = the
    limit of :func:`max_image_pixels`, 0 = no limit. Deep images follow :func:`_to_8bit`'s rules.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if _stat(path) is None:
        raise DataError(f"image file {path} does not exist")
    try:
        with _own_size_check(), Image.open(path) as im:
            w, h = im.size
            if limit and w * h > limit:
                raise DataError(
                    f"image {path} is {w}x{h} = {w * h:,} pixels, over the limit of {limit:,} pixels (a guard "
                    f"against decompression bombs); shrink the image, or raise the limit, e.g. "
                    f"{_MAX_PIXELS_ENV}={w * h} (0 = no limit)"
                )
            im.load()
            try:  # phone photos are stored sideways with an orientation tag
                upright = ImageOps.exif_transpose(im)
            except Exception as exc:  # noqa: BLE001 - a damaged EXIF block: the orientation is unknown
                raise DataError(
                    f"cannot read the EXIF orientation of image {path} ({type(exc).__name__}: {exc}); "
                    "re-save the image without EXIF data, or with it repaired"
                ) from exc
            return _to_8bit(upright, path, im.format)  # the transposed copy forgets the format
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc}; expected a PNG/JPEG/BMP/... image file") from exc


INVERT_CHOICES = (False, True, "auto")
RESIZE_MODES = ("crop", "pad", "stretch")
_DEFAULT_PREPROCESSING = {"invert": False, "resize": "crop"}
# centre-cropping that removes more than this share of an image's area is reported once per folder
CROP_WARN_FRACTION = 0.1


def check_preprocessing(pre: Any, where: str = "preprocessing") -> dict[str, Any]:
    """The file-reading half of the input contract, with defaults for records made before it existed:
    ``{"invert": False | True | "auto", "resize": "crop" | "pad" | "stretch"}``."""
    if pre is None:
        return dict(_DEFAULT_PREPROCESSING)
    if not isinstance(pre, dict):
        raise DataError(f"{where}: preprocessing must be a dict with 'invert' and 'resize', got {type(pre).__name__}")
    unknown = sorted(set(pre) - set(_DEFAULT_PREPROCESSING))
    if unknown:
        raise DataError(f"{where}: unknown preprocessing keys {unknown}; known: invert, resize")
    out = {**_DEFAULT_PREPROCESSING, **pre}
    if out["invert"] not in INVERT_CHOICES or not isinstance(out["invert"], (bool, str)):
        raise DataError(f"{where}: invert must be true, false or 'auto', got {out['invert']!r}")
    if out["resize"] not in RESIZE_MODES:
        raise DataError(f"{where}: resize must be one of {', '.join(RESIZE_MODES)}, got {out['resize']!r}")
    return out


def crop_loss(width: int, height: int) -> float:
    """Share of an image's area that a centre crop to a square removes."""
    return 1.0 - min(width, height) / max(width, height, 1)


def load_image(
    path: str | Path,
    image_size: int,
    channels: int,
    invert: bool | str = False,
    max_pixels: int | None = None,
    resize: str = "crop",
) -> torch.Tensor:
    """Read one image file into what a model expects: uint8 [channels, S, S] (see :func:`open_image`).

    Transparent pixels become white, as a viewer shows them. ``resize``: "crop" resizes the shorter side to
    `image_size` (antialiased) and crops the centre, as torchvision's Resize+CenterCrop do; "pad" resizes the
    longer side and pads the rest with the image's border colour (nothing is cut off); "stretch" resizes both
    sides (the aspect ratio changes). invert=True flips intensities (dark-on-white drawings -> bright strokes, as
    the glyph/Omniglot models are trained); invert="auto" does so for images whose border is bright.
    """
    return _load_image(path, image_size, channels, invert, max_pixels, resize)[0]


def _load_image(path, image_size: int, channels: int, invert, max_pixels, resize: str) -> tuple[torch.Tensor, tuple[int, int]]:
    """:func:`load_image` and the file's size (width, height) before resizing."""
    from PIL import Image, ImageOps

    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    if image_size < 1:
        raise DataError(f"image_size must be >= 1, got {image_size}")
    if invert not in INVERT_CHOICES or not isinstance(invert, (bool, str)):
        raise DataError(f"invert must be True, False or 'auto', got {invert!r}")
    if resize not in RESIZE_MODES:
        raise DataError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    im = open_image(path, max_pixels)
    try:
        if im.mode in ("RGBA", "LA", "P", "PA", "RGBa", "La"):
            im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
        im = im.convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError) as exc:  # e.g. a colour space Pillow cannot convert
        raise DataError(f"cannot read image {path}: {exc}; expected a PNG/JPEG/BMP/... image file") from exc
    w, h = im.size
    if resize == "pad" and w != h:
        border = np.concatenate([np.asarray(im)[[0, -1]].reshape(-1, channels),
                                 np.asarray(im)[:, [0, -1]].reshape(-1, channels)])
        fill = tuple(int(v) for v in np.median(border, axis=0))
        im = ImageOps.pad(im, (image_size, image_size), Image.Resampling.BILINEAR,
                          color=fill[0] if channels == 1 else fill)
    elif resize == "stretch" or w == h:
        s = image_size / min(w, h)
        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=None if s >= 1 else 3.0)
    else:
        s = image_size / min(w, h)
        nw, nh = max(image_size, round(w * s)), max(image_size, round(h * s))
        im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None if s >= 1 else 3.0)
        left, top = (nw - image_size) // 2, (nh - image_size) // 2
        im = im.crop((left, top, left + image_size, top + image_size))
    t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    t = t.view(image_size, image_size, channels).permute(2, 0, 1).contiguous()
    if invert == "auto":
        border = torch.cat([t[:, 0, :], t[:, -1, :], t[:, :, 0], t[:, :, -1]], dim=1).float()
        invert = bool(border.mean() > 127.5)
    return (255 - t if invert else t), (w, h)


def is_gray_image(path: str | Path) -> bool:
    """Gray if stored gray, or colour-coded with identical channels (gray saved as RGB), as :func:`open_image` reads it."""
    im = open_image(path)
    if im.mode in ("1", "L", "LA"):
        return True
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def read_image_folder(
    root: str | Path,
    image_size: int,
    channels: int | None,
    invert: bool | str = False,
    name: str | None = None,
    min_per_class: int = 1,
    folders: list[tuple[str, list[Path]]] | None = None,
    resize: str = "crop",
) -> ImageSet:
    """An ImageFolder tree root/<class>/<images> (a user's support or query folder, or a dataset) as an ImageSet.

    Files are found by :func:`image_class_folders` (or given as its result, ``folders``) and decoded by
    :func:`load_image`; labels follow the sorted class folder names. ``channels=None`` keeps gray images gray
    (1 channel) unless any image is colour. ``invert`` and ``resize`` are :func:`load_image`'s and are
    recorded in the set's ``preprocessing``. When centre-cropping cuts off more than
    :data:`CROP_WARN_FRACTION` of some images, one warning says how many and how to keep them whole.
    """
    root = Path(root).expanduser()
    folders = image_class_folders(root) if folders is None else folders
    for cls, fs in folders:
        if len(fs) < min_per_class:
            raise DataError(
                f"class folder {root / cls} has {len(fs)} image(s) but at least {min_per_class} are needed; add images"
            )
    files = [f for _, fs in folders for f in fs]
    if channels is None:
        channels = 1 if all(is_gray_image(f) for f in files) else 3
    loaded = [_load_image(f, image_size, channels, invert, None, resize) for f in files]
    images = torch.stack([t for t, _ in loaded])
    if resize == "crop":
        _warn_crops(root, files, [wh for _, wh in loaded], image_size)
    counts = torch.tensor([len(fs) for _, fs in folders])
    return ImageSet(
        images=images,
        labels=torch.repeat_interleave(torch.arange(len(folders)), counts),
        classes=[c for c, _ in folders],
        groups=[root.name or "imagefolder"] * len(folders),
        name=name or root.name or "imagefolder",
        preprocessing={"invert": invert, "resize": resize},
    )


def _warn_crops(root: Path, files: Sequence[Path], sizes: Sequence[tuple[int, int]], image_size: int) -> None:
    losses = [crop_loss(w, h) for w, h in sizes]
    cut = [i for i, v in enumerate(losses) if v > CROP_WARN_FRACTION]
    if cut:
        worst = max(cut, key=losses.__getitem__)
        w, h = sizes[worst]
        log.warning(
            "%d of %d images under %s are not square: centre-cropping them to %dx%d cut off up to %.0f%% of an "
            "image (%s, %dx%d); read them with resize='pad' (CLI: --resize pad) to keep whole images",
            len(cut), len(files), root, image_size, image_size, 100 * losses[worst], files[worst].name, w, h)

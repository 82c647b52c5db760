"""In-memory image sets: one uint8 tensor per source, plus the class/group vocabulary.

The datasets learngene works with (Omniglot, CIFAR-100, rendered glyphs, a user's few-shot folder) are
small enough to hold fully in memory as uint8; batched augmentation on those tensors is then much faster
than a per-sample PIL pipeline, and indices into one tensor make streams and episodes trivially
serializable.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# the file readers, importable from here as before the split
from learngene.data.files import (
    CROP_WARN_FRACTION,
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGE_EXTENSIONS,
    INVERT_CHOICES,
    RESIZE_MODES,
    check_preprocessing,
    crop_loss,
    find_images,
    image_class_folders,
    is_gray_image,
    load_image,
    load_image_with_size,
    max_image_pixels,
    open_image,
)
from learngene.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "CROP_WARN_FRACTION",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_EXTENSIONS",
    "INVERT_CHOICES",
    "RESIZE_MODES",
    "ImageSet",
    "check_preprocessing",
    "crop_loss",
    "convert_channels",
    "find_images",
    "image_class_folders",
    "is_gray_image",
    "load_image",
    "max_image_pixels",
    "open_image",
    "read_image_folder",
    "resize_images",
]


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
    loaded = [load_image_with_size(f, image_size, channels, invert, None, resize) for f in files]
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

"""A registry of local dataset loaders. Nothing is ever downloaded: every loader reads files that are
already on disk (or, for "glyphs", renders them from matplotlib's fonts), and a missing file is a
DataError that names the path, the expected layout and how to point learngene at it.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from learngene.data.glyphs import load_glyphs
from learngene.data.imagecache import cache_dir, cached_build
from learngene.data.images import (
    IMAGE_EXTENSIONS,
    ImageSet,
    image_class_folders,
    read_image_folder,
    resize_images,
)
from learngene.errors import ConfigError, DataError
from learngene.registry import SOURCES

__all__ = [
    "IMAGE_EXTENSIONS",
    "cache_dir",
    "default_data_root",
    "list_sources",
    "load_cifar100",
    "load_image_folder",
    "load_omniglot",
    "load_source",
    "register_source",
]

_OMNIGLOT_CACHE_VERSION = 1
_HINT = "set LEARNGENE_DATA or pass --data-root"
# where the files come from: learngene downloads nothing, so the message says where a user gets them
_OMNIGLOT_HINT = ("learngene downloads nothing: get images_background_small1.zip and images_background_small2.zip "
                  "from the Omniglot repository (github.com/brendenlake/omniglot, folder python/) into a folder "
                  "omniglot/, then set LEARNGENE_DATA to its parent or pass --data-root omniglot/")

Loader = Callable[..., ImageSet]


def register_source(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make `fn(root, image_size, channels, seed, **kwargs) -> ImageSet` loadable by name (and by
    the config's ``data.source``)."""
    return SOURCES.register(name)


def list_sources() -> list[str]:
    return SOURCES.names()


def default_data_root() -> Path:
    """$LEARNGENE_DATA if set, else ../shared/data relative to the current working directory."""
    env = os.environ.get("LEARNGENE_DATA")
    if env:
        return Path(env).expanduser()
    return (Path.cwd() / ".." / "shared" / "data").resolve()


def load_source(
    name: str,
    *,
    root: str | Path | None = None,
    image_size: int = 32,
    channels: int | None = None,
    seed: int = 0,
    **kwargs,
) -> ImageSet:
    """Load a registered source by name; unknown names and unknown options are ConfigErrors."""
    fn = SOURCES.get(name)
    if not isinstance(image_size, int) or image_size < 8:
        raise ConfigError(f"image_size must be an integer >= 8, got {image_size!r}")
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1, 3 or None (the source's own), got {channels!r}")
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        allowed = [k for k in params if k not in ("root", "image_size", "channels", "seed")]
        bad = [k for k in kwargs if k not in allowed]
        if bad:
            raise ConfigError(
                f"data source {name!r} does not take option(s) {', '.join(bad)}; "
                f"it takes: {', '.join(allowed) or 'no extra options'}"
            )
    data = fn(
        root=None if root is None else Path(root),
        image_size=image_size,
        channels=channels,
        seed=seed,
        **kwargs,
    )
    data = data.with_channels(channels)
    if data.image_size != image_size:
        data = ImageSet(
            images=resize_images(data.images, image_size),
            labels=data.labels,
            classes=data.classes,
            groups=data.groups,
            name=data.name,
            official_test=data.official_test,
            preprocessing=data.preprocessing,
        )
    return data


# ---------------------------------------------------------------------- helpers
def _require_dir(path: Path, what: str, hint: str = _HINT) -> None:
    if not path.exists():
        raise DataError(f"{what} not found: {path} does not exist; {hint}")
    if not path.is_dir():
        raise DataError(f"{what}: {path} is not a folder; {hint}")


def _stat_fingerprint(files: list[Path], base: Path) -> list[tuple[str, int, int]]:
    out = []
    for f in files:
        st = f.stat()
        out.append((f.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns))
    return out


def _decode_gray(blob: bytes | Path, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        src = blob if isinstance(blob, Path) else io.BytesIO(blob)
        with Image.open(src) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode image {where}: {exc}; the file looks corrupt") from exc


# ---------------------------------------------------------------------- ImageFolder
def load_image_folder(
    root: str | Path,
    image_size: int,
    channels: int | None,
    min_per_class: int = 1,
    invert: bool | str = False,
    name: str | None = None,
    cache: bool = False,
) -> ImageSet:
    """Any ImageFolder tree, root/<class>/<images>, as a data source: :func:`read_image_folder` plus a cache.

    The files are found and decoded exactly as `inherit`'s support folder and `predict`'s images are (one reader
    for every command); the cache key is the files' names, sizes and times, so an edited folder is re-read.
    """
    root = Path(root).expanduser()
    folders = image_class_folders(root)

    def build() -> ImageSet:
        return read_image_folder(root, image_size, channels, invert=invert, name=name,
                                 min_per_class=min_per_class, folders=folders)

    if not cache:
        return build()
    files = [f for _, fs in folders for f in fs]
    key = hashlib.sha256(
        json.dumps(
            [_stat_fingerprint(files, root), image_size, channels, str(invert), str(root.resolve())]
        ).encode()
    ).hexdigest()[:20]
    return cached_build(cache_dir() / "imagefolder" / f"{root.name or 'root'}-{key}.safetensors", build)


@register_source("imagefolder")
def _imagefolder_source(
    root: Path | None,
    image_size: int,
    channels: int | None,
    seed: int,
    min_per_class: int = 1,
    invert: bool | str = False,
    cache: bool = True,
) -> ImageSet:
    if root is None:
        raise DataError(
            "the 'imagefolder' source needs a root folder (root/<class>/<images>); pass --data-root"
        )
    return load_image_folder(
        root, image_size, channels, min_per_class=min_per_class, invert=invert, cache=cache
    )


# ---------------------------------------------------------------------- glyphs (embedded default)
@register_source("glyphs")
def _glyphs_source(
    root: Path | None,
    image_size: int,
    channels: int | None,
    seed: int,
    per_class: int = 20,
    max_classes: int | None = None,
    min_fonts: int = 12,
    cache: bool = True,
) -> ImageSet:
    # root is ignored: the data is rendered from matplotlib's fonts and cached under cache_dir().
    data = load_glyphs(image_size, per_class, max_classes, min_fonts, seed, cache=cache)
    # rendered as bright strokes on black: a user's files of characters are inverted when their border is
    # bright (dark ink on light paper) and read as they are otherwise
    return data.with_preprocessing(invert="auto", resize="crop")


# ---------------------------------------------------------------------- Omniglot
# (source id, alphabet, character, file name, zip path or None, member name or file path)
_OmniEntry = tuple[int, str, str, str, "Path | None", "str | Path"]


def _omniglot_entries(root: Path) -> tuple[list[_OmniEntry], list]:
    """Every drawing in the zips/folders under root, plus a fingerprint of those files for the cache key.

    Zips are read in place with zipfile (no extraction); extracted folders use torchvision's layout
    images_background*/<Alphabet>/<characterNN>/*.png."""
    bases = [root, root / "omniglot-py"]
    zips = sorted({z for b in bases if b.is_dir() for z in b.glob("images_background*.zip")})
    dirs = sorted({d for b in bases if b.is_dir() for d in b.glob("images_background*") if d.is_dir()})
    if not zips and not dirs:
        raise DataError(
            f"no images_background_small*.zip or images_background*/ folder under {root}; {_OMNIGLOT_HINT}"
        )
    entries: list[_OmniEntry] = []
    fingerprint: list = []
    for src, z in enumerate(zips):
        fingerprint.append((z.name, hashlib.sha256(z.read_bytes()).hexdigest()))
        try:
            with zipfile.ZipFile(z) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile as exc:
            raise DataError(f"{z} is not a valid zip file ({exc}); copy the Omniglot archive again") from exc
        for n in names:
            parts = n.rstrip("/").split("/")
            if len(parts) >= 3 and parts[-1].lower().endswith(".png"):
                entries.append((src, parts[-3], parts[-2], parts[-1], z, n))
    for src, d in enumerate(dirs, start=len(zips)):
        files = sorted(d.glob("*/*/*.png"))
        fingerprint.append((d.name, _stat_fingerprint(files, d)))
        entries.extend((src, f.parent.parent.name, f.parent.name, f.name, None, f) for f in files)
    if not entries:
        raise DataError(f"the Omniglot files under {root} hold no <Alphabet>/<characterNN>/*.png images")
    return entries, fingerprint


def load_omniglot(
    root: str | Path | None = None, image_size: int = 32, channels: int | None = None
) -> ImageSet:
    """Omniglot background subsets: class 'Alphabet/characterNN', group = alphabet, strokes bright.

    A class present in several archives (Greek and Latin are in both small subsets, byte-identical) is
    kept once, from the first archive. Decoding is cached under cache_dir()/omniglot, keyed by the
    files' checksums and image_size, so later loads take a fraction of a second."""
    root = Path(root).expanduser() if root is not None else default_data_root() / "omniglot"
    _require_dir(root, "Omniglot data folder", _OMNIGLOT_HINT)
    entries, fingerprint = _omniglot_entries(root)

    def build() -> ImageSet:
        owner: dict[str, int] = {}
        per_class: dict[str, list[_OmniEntry]] = {}
        for e in entries:
            key = f"{e[1]}/{e[2]}"
            if owner.setdefault(key, e[0]) == e[0]:
                per_class.setdefault(key, []).append(e)
        classes = sorted(per_class)
        zips = {z: zipfile.ZipFile(z) for z in {e[4] for e in entries if e[4] is not None}}
        try:
            arrays: list[np.ndarray] = []
            counts = []
            for c in classes:
                items = sorted(per_class[c], key=lambda e: e[3])
                counts.append(len(items))
                for _, _, _, fname, z, member in items:
                    blob = zips[z].read(str(member)) if z is not None else Path(member)
                    a = _decode_gray(blob, f"{c}/{fname} under {root}")
                    if arrays and a.shape != arrays[0].shape:
                        from PIL import Image

                        a = np.asarray(
                            Image.fromarray(a).resize(arrays[0].shape[::-1], Image.Resampling.BILINEAR)
                        )
                    arrays.append(a)
        finally:
            for zf in zips.values():
                zf.close()
        imgs = torch.from_numpy(np.stack(arrays)).unsqueeze(1)
        imgs = 255 - imgs  # white paper, black ink -> bright strokes on dark, like the glyph renderings
        imgs = resize_images(imgs, image_size)
        labels = torch.repeat_interleave(torch.arange(len(classes)), torch.tensor(counts))
        return ImageSet(
            images=imgs,
            labels=labels,
            classes=classes,
            groups=[c.split("/")[0] for c in classes],
            name="omniglot",
        )

    key = hashlib.sha256(
        json.dumps([_OMNIGLOT_CACHE_VERSION, image_size, fingerprint], sort_keys=True).encode()
    ).hexdigest()[:20]
    data = cached_build(cache_dir() / "omniglot" / f"omniglot-{image_size}-{key}.safetensors", build)
    # the files are black ink on white paper and every one was inverted above: a gene trained on this set
    # inverts a user's Omniglot-style files the same way
    return data.with_channels(channels).with_preprocessing(invert=True, resize="crop")


@register_source("omniglot")
def _omniglot_source(root: Path | None, image_size: int, channels: int | None, seed: int) -> ImageSet:
    return load_omniglot(root, image_size, channels)


# ---------------------------------------------------------------------- CIFAR-100
def _find_cifar_root(root: Path) -> Path | None:
    for cand in (root, root / "cifar100", root / "cifar-100", root.parent):
        if (cand / "cifar-100-python").is_dir():
            return cand
    return None


def _cifar_coarse_groups(base: Path, classes: list[str]) -> list[str]:
    """Superclass of each fine class from the dataset's own files; 'cifar100' when unavailable."""
    try:
        with open(base / "cifar-100-python" / "meta", "rb") as f:
            meta = pickle.load(f, encoding="latin1")
        with open(base / "cifar-100-python" / "test", "rb") as f:
            test = pickle.load(f, encoding="latin1")
        fine_names, coarse_names = meta["fine_label_names"], meta["coarse_label_names"]
        fine_to_coarse = {}
        for fl, cl in zip(test["fine_labels"], test["coarse_labels"]):
            fine_to_coarse.setdefault(fine_names[fl], coarse_names[cl])
        return [fine_to_coarse.get(c, "cifar100") for c in classes]
    except Exception:  # optional information: never fail the load for it
        return ["cifar100"] * len(classes)


def load_cifar100(
    root: str | Path | None = None, image_size: int = 32, channels: int | None = None
) -> ImageSet:
    """CIFAR-100 train+test merged (official_test marks the test images), read with torchvision from the
    standard python-format 'cifar-100-python' folder; group = coarse superclass."""
    root = Path(root).expanduser() if root is not None else default_data_root() / "cifar100"
    base = _find_cifar_root(root)
    if base is None:
        raise DataError(
            f"CIFAR-100 not found under {root}: expected the standard python-format 'cifar-100-python' folder "
            f"(unpacked cifar-100-python.tar.gz) at {root / 'cifar-100-python'}; {_HINT}. Nothing is downloaded."
        )
    from torchvision.datasets import CIFAR100  # imported late: it is slow and only needed here

    parts = []
    try:
        for train in (True, False):
            parts.append(CIFAR100(str(base), train=train, download=False))
    except RuntimeError as exc:
        raise DataError(
            f"CIFAR-100 files under {base / 'cifar-100-python'} are missing or corrupt ({exc}); "
            "re-extract cifar-100-python.tar.gz there"
        ) from exc
    classes = list(parts[0].classes)
    images = torch.from_numpy(np.concatenate([p.data for p in parts])).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([t for p in parts for t in p.targets], dtype=torch.int64)
    official_test = torch.zeros(len(labels), dtype=torch.bool)
    official_test[len(parts[0].targets) :] = True
    data = ImageSet(
        images=resize_images(images, image_size),
        labels=labels,
        classes=classes,
        groups=_cifar_coarse_groups(base, classes),
        name="cifar100",
        official_test=official_test,
    )
    return data.with_channels(channels)


@register_source("cifar100")
def _cifar100_source(root: Path | None, image_size: int, channels: int | None, seed: int) -> ImageSet:
    return load_cifar100(root, image_size, channels)

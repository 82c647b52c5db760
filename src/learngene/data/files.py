"""Reading image files: one reader for every command (inherit's support/query folders, predict's files and
folders, the file-based sources). The same files are found, and each file is decoded to the same pixels,
whichever command reads it; deep, huge, sideways or broken files get a clear message instead of wrong pixels.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from learngene.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage

__all__ = [
    "CROP_WARN_FRACTION",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_EXTENSIONS",
    "INVERT_CHOICES",
    "RESIZE_MODES",
    "check_preprocessing",
    "crop_loss",
    "find_images",
    "image_class_folders",
    "is_gray_image",
    "load_image",
    "load_image_with_size",
    "max_image_pixels",
    "open_image",
]

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
    return load_image_with_size(path, image_size, channels, invert, max_pixels, resize)[0]


def load_image_with_size(path, image_size: int, channels: int, invert, max_pixels, resize: str) -> tuple[torch.Tensor, tuple[int, int]]:
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

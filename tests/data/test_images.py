from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from learngene.data import (
    ImageSet,
    convert_channels,
    load_imageset,
    load_rgb_or_gray,
    resize_images,
    save_imageset,
)
from learngene.data import sources as sources_mod
from learngene.data.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGE_EXTENSIONS,
    find_images,
    image_class_folders,
    load_image,
    open_image,
    read_image_folder,
)
from learngene.errors import ConfigError, DataError


def _toy(n_classes: int = 4, per_class: int = 3, channels: int = 1, size: int = 8) -> ImageSet:
    n = n_classes * per_class
    images = torch.arange(n * channels * size * size, dtype=torch.int64).remainder(256).to(torch.uint8)
    return ImageSet(
        images=images.view(n, channels, size, size),
        labels=torch.arange(n_classes).repeat_interleave(per_class),
        classes=[f"c{i}" for i in range(n_classes)],
        groups=["g0" if i < n_classes // 2 else "g1" for i in range(n_classes)],
        name="toy",
    )


def test_properties_and_lookup():
    d = _toy()
    assert (d.channels, d.image_size, len(d)) == (1, 8, 12)
    assert d.indices_of("c2").tolist() == [6, 7, 8]
    assert d.class_index("c3") == 3
    assert d.unique_groups() == ["g0", "g1"]


def test_unknown_class_names_close_match():
    d = _toy()
    with pytest.raises(DataError, match=r"'c33'.*did you mean 'c3'"):
        d.indices_of("c33")


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"images": torch.zeros(3, 1, 8, 8)}, "uint8"),
        ({"images": torch.zeros(3, 2, 8, 8, dtype=torch.uint8)}, "1 or 3 channels"),
        ({"images": torch.zeros(3, 1, 8, 6, dtype=torch.uint8)}, "square"),
        ({"labels": torch.tensor([0, 1, 5])}, "labels must lie"),
        ({"labels": torch.tensor([0, 1])}, "3 images but 2 labels"),
        ({"groups": ["a"]}, "groups"),
        ({"classes": ["a", "a"], "groups": ["x", "x"]}, "duplicate"),
    ],
)
def test_validation(kwargs, msg):
    base = {
        "images": torch.zeros(3, 1, 8, 8, dtype=torch.uint8),
        "labels": torch.tensor([0, 1, 1]),
        "classes": ["a", "b"],
        "groups": ["x", "y"],
        "name": "bad",
    }
    base.update(kwargs)
    with pytest.raises(DataError, match=msg):
        ImageSet(**base)


def test_mean_std_matches_torch():
    d = _toy(channels=3)
    mean, std = d.mean_std()
    x = d.images.double() / 255
    assert mean == pytest.approx(x.mean((0, 2, 3)).tolist(), abs=1e-9)
    assert std == pytest.approx(x.std((0, 2, 3), unbiased=False).tolist(), abs=1e-9)


def test_subset_classes_relabels():
    d = _toy()
    s = d.subset_classes(["c3", "c1"])
    assert s.classes == ["c3", "c1"] and s.groups == ["g1", "g0"]
    assert s.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(s.images[0], d.images[9])
    with pytest.raises(DataError, match="missing"):
        d.subset_classes(["nope"])


def test_save_load_roundtrip(tmp_path):
    d = _toy(channels=3)
    p = save_imageset(d, tmp_path / "x.safetensors")
    e = load_imageset(p)
    assert torch.equal(e.images, d.images) and torch.equal(e.labels, d.labels)
    assert (e.classes, e.groups, e.name) == (d.classes, d.groups, d.name)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(DataError, match="cannot read"):
        load_imageset(tmp_path / "junk.safetensors")


def test_convert_and_resize():
    x = torch.full((2, 1, 8, 8), 200, dtype=torch.uint8)
    rgb = convert_channels(x, 3)
    assert rgb.shape == (2, 3, 8, 8) and int(rgb.min()) == 200
    assert torch.equal(convert_channels(rgb, 1), x)
    assert resize_images(x, 4).shape == (2, 1, 4, 4)
    assert int(resize_images(x, 4).min()) == 200


# ---------------------------------------------------------------------- reading image files
def _gray(path: Path, value: int = 100, size: tuple[int, int] = (6, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)
    return path


def bilevel_png(path: Path, width: int, height: int) -> Path:
    """A real, valid 1-bit PNG of any size written row by row: 20000x10000 compresses to ~25 KB, without the
    200 MB Pillow would need to build it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit per pixel, gray
    pixels = zlib.compress(bytes((1 + (width + 7) // 8) * height), 9)  # filter byte 0 + black pixels per row
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_16bit_gray_keeps_its_range(tmp_path, fmt):
    """Pillow's convert("L") clips 16-bit values to 255; the reader scales 0..65535 to 0..255."""
    a = np.array([[0, 257 * 100], [65535, 32768]], dtype=np.uint16)
    p = tmp_path / f"deep.{fmt}"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode == "I;16"
    im = open_image(p)
    assert im.mode == "L" and np.asarray(im).tolist() == [[0, 100], [255, 128]]
    # a mid-gray 16-bit image is mid-gray, not white
    Image.fromarray(np.full((8, 8), 30000, np.uint16)).save(p)
    assert load_image(p, 4, 1).unique().tolist() == [round(30000 / 257)]
    assert load_image(p, 4, 3).shape == (3, 4, 4)


def test_16bit_pgm_uses_its_maxval(tmp_path):
    """A PGM with maxval 4095 (12-bit camera) opens as 32-bit "I" stretched by Pillow to 16 bits: read as 16-bit."""
    p = tmp_path / "cam.pgm"
    p.write_bytes(b"P5\n2 2\n4095\n" + np.array([[0, 4095], [2048, 7]], dtype=">u2").tobytes())
    assert Image.open(p).mode == "I"
    assert np.asarray(open_image(p)).tolist() == [[0, 255], [128, 0]]


def test_float_images_in_unit_range_are_scaled(tmp_path):
    p = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)).save(p)
    assert np.asarray(open_image(p)).tolist() == [[0, 128], [255, 64]]
    Image.fromarray(np.array([[-0.001, 1.001]], dtype=np.float32)).save(p)  # within half an 8-bit step
    assert np.asarray(open_image(p)).tolist() == [[0, 255]]


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.array([[0.0, 1000.0]], dtype=np.float32), "float pixels range from 0 to 1000"),
        (np.array([[0.0, -0.5]], dtype=np.float32), "float pixels range from -0.5 to 0"),
        (np.array([[0.0, np.nan]], dtype=np.float32), "NaN or Inf"),
        (np.array([[0, 70000]], dtype=np.int32), "32-bit integer pixels \\(values 0 to 70000\\)"),
        (np.array([[0, 200]], dtype=np.int32), "32-bit integer pixels"),  # 8-bit data? 16-bit? unknowable
    ],
)
def test_deep_images_without_a_standard_scale_are_refused(tmp_path, array, match):
    p = tmp_path / "x.tif"
    Image.fromarray(array).save(p)
    with pytest.raises(DataError, match=match):
        load_image(p, 4, 1)


def test_exif_orientation_is_applied(tmp_path):
    """Stored 20x10 with a bright left half and orientation 6 (rotate 90 degrees clockwise to view): the viewer
    shows it 10x20, bright half on top."""
    im = Image.new("L", (20, 10), 0)
    im.paste(255, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "phone.jpg"
    im.save(p, exif=exif.tobytes(), quality=95)
    shown = np.asarray(open_image(p))
    assert shown.shape == (20, 10)  # rows x cols: portrait
    assert shown[:10].mean() > 200 and shown[10:].mean() < 50
    t = load_image(p, 8, 1)  # centre crop of the portrait: top rows bright, bottom rows dark
    assert t[0, 0].float().mean() > 200 and t[0, -1].float().mean() < 50


def test_ordinary_images_read_as_before(tmp_path):
    """8-bit files without an orientation tag decode exactly as load_rgb_or_gray decodes them."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (13, 21, 3), dtype=np.uint8))
    files = {
        "rgb.png": rgb,
        "gray.bmp": rgb.convert("L"),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (9, 9, 4), dtype=np.uint8)),
        "pal.gif": rgb.convert("P"),
        "photo.jpg": rgb,
    }
    for name, im in files.items():
        im.save(tmp_path / name)
        for channels in (1, 3):
            for invert in (False, "auto"):
                expected = load_rgb_or_gray(tmp_path / name, 8, channels, invert=invert)
                assert torch.equal(load_image(tmp_path / name, 8, channels, invert=invert), expected), name


def test_one_discovery_rule(tmp_path):
    """Support folders (inherit) and predict's folders find the same files: one extension set, any case,
    symlinked folders and files followed, hidden names skipped."""
    root = tmp_path / "support"
    _gray(root / "cat" / "a.png")
    _gray(root / "cat" / "B.JPEG")
    _gray(root / "cat" / "c.pgm")  # predict used to skip .pgm/.ppm
    _gray(root / "cat" / "sub" / "d.tif")
    _gray(root / "cat" / ".hidden.png")
    _gray(root / "cat" / "._a.png")  # macOS metadata beside a.png
    _gray(root / "cat" / ".ipynb_checkpoints" / "e.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    elsewhere = tmp_path / "elsewhere"
    _gray(elsewhere / "dog1.png")
    _gray(tmp_path / "single.png")
    (root / "dog").symlink_to(elsewhere, target_is_directory=True)  # symlinked class folder
    (root / "cat" / "linked.png").symlink_to(tmp_path / "single.png")
    (root / ".git").mkdir()

    folders = image_class_folders(root)
    names = {c: [f.relative_to(root).as_posix() for f in fs] for c, fs in folders}
    assert names == {
        "cat": ["cat/B.JPEG", "cat/a.png", "cat/c.pgm", "cat/linked.png", "cat/sub/d.tif"],
        "dog": ["dog/dog1.png"],
    }
    assert find_images(root) == [f for _, fs in folders for f in fs]
    assert find_images(root / "dog") == [root / "dog" / "dog1.png"]
    assert sources_mod.IMAGE_EXTENSIONS == IMAGE_EXTENSIONS  # the imagefolder source takes the same files
    data = read_image_folder(root, 8, 1)
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 0, 0, 0, 0, 1]


def test_predict_finds_images_in_symlinked_class_folders(tmp_path):
    """`learngene predict support/` used to find nothing where `inherit --support support/` found the images."""
    from learngene.cli_stages import _image_paths

    elsewhere = tmp_path / "elsewhere"
    _gray(elsewhere / "x.png")
    (tmp_path / "support").mkdir()
    (tmp_path / "support" / "cls").symlink_to(elsewhere, target_is_directory=True)
    assert _image_paths([str(tmp_path / "support")]) == [tmp_path / "support" / "cls" / "x.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        _image_paths([str(tmp_path / "empty")])


def test_symlink_loops_are_reported(tmp_path):
    root = tmp_path / "support"
    _gray(root / "cat" / "a.png")
    (root / "cat" / "self.png").symlink_to("self.png")  # points to itself
    with pytest.raises(DataError, match=r"symlink loop: .*self\.png is a symbolic link that leads back to itself"):
        image_class_folders(root)
    with pytest.raises(DataError, match=r"symlink loop: .*self\.png"):
        find_images(root / "cat" / "self.png")  # named directly: a loop, not "does not exist"
    (root / "cat" / "self.png").unlink()
    (root / "cat" / "up").symlink_to("..", target_is_directory=True)  # a folder cycle: would never end
    with pytest.raises(DataError, match=r"symlink loop: .*cat/up leads back to .*support"):
        image_class_folders(root)
    with pytest.raises(DataError, match=r"symlink loop: .*cat/up leads back to"):
        find_images(root)
    (root / "cat" / "up").unlink()
    (root / "loop").symlink_to("loop")  # a class folder link to itself
    with pytest.raises(DataError, match=r"symlink loop: .*support/loop"):
        image_class_folders(root)


def test_broken_image_link_is_reported(tmp_path):
    root = tmp_path / "support"
    _gray(root / "cat" / "a.png")
    (root / "cat" / "gone.png").symlink_to(tmp_path / "deleted.png")
    with pytest.raises(DataError, match=r"broken symlink: .*gone\.png points to .*deleted\.png"):
        find_images(root)
    with pytest.raises(DataError, match=r"is a symbolic link to .*deleted\.png, which does not exist"):
        find_images(root / "cat" / "gone.png")


def test_size_limit(tmp_path, monkeypatch):
    monkeypatch.delenv("LEARNGENE_MAX_IMAGE_PIXELS", raising=False)
    huge = bilevel_png(tmp_path / "scan.png", 20000, 10000)
    assert os.path.getsize(huge) < 100_000
    assert 20000 * 10000 > DEFAULT_MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match=r"is 20000x10000 = 200,000,000 pixels, over the limit of 150,000,000 "
                       r"pixels .*LEARNGENE_MAX_IMAGE_PIXELS=200000000"):
        load_image(huge, 8, 1)
    modest = bilevel_png(tmp_path / "modest.png", 50, 40)
    assert load_image(modest, 8, 1).shape == (1, 8, 8)
    monkeypatch.setenv("LEARNGENE_MAX_IMAGE_PIXELS", "1_999")
    with pytest.raises(DataError, match="over the limit of 1,999 pixels"):
        load_image(modest, 8, 1)
    assert load_image(modest, 8, 1, max_pixels=2000).shape == (1, 8, 8)
    monkeypatch.setenv("LEARNGENE_MAX_IMAGE_PIXELS", "0")  # no limit
    assert load_image(modest, 8, 1).shape == (1, 8, 8)
    monkeypatch.setenv("LEARNGENE_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="LEARNGENE_MAX_IMAGE_PIXELS='lots' is not a number of pixels"):
        load_image(modest, 8, 1)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own guard is back for everyone else


def test_size_limit_can_be_raised_above_pillows(tmp_path, monkeypatch):
    """Above Pillow's own hard limit (2 x MAX_IMAGE_PIXELS) an image still loads when the user raised ours."""
    p = bilevel_png(tmp_path / "wide.png", 4000, 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setenv("LEARNGENE_MAX_IMAGE_PIXELS", "400000")
    assert load_image(p, 8, 1).shape == (1, 8, 8)
    assert Image.MAX_IMAGE_PIXELS == 1000

from __future__ import annotations

import pytest
import torch

from learngene.data import ImageSet, convert_channels, load_imageset, resize_images, save_imageset
from learngene.errors import DataError


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

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from learngene.data import default_data_root, list_sources, load_image_folder, load_source
from learngene.data import sources as sources_mod
from learngene.errors import ConfigError, DataError

OMNIGLOT_ALPHABETS = {
    "Balinese", "Early_Aramaic", "Greek", "Korean", "Latin", "Japanese_(katakana)", "Sanskrit", "Tagalog",
}  # fmt: skip


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARNGENE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_folder(root: Path, classes: dict[str, int], mode: str = "L", size=(20, 14)) -> Path:
    """torchvision-style fake data: a few tiny PNGs per class folder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, n in classes.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(
                root / c / f"{i}.png"
            )
    return root


def test_registry():
    assert {"glyphs", "omniglot", "cifar100", "imagefolder"} <= set(list_sources())
    with pytest.raises(
        ConfigError, match=r"unknown data source 'omniglott'. Did you mean 'omniglot'.*glyphs"
    ):
        load_source("omniglott")


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("LEARNGENE_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("LEARNGENE_DATA")
    monkeypatch.chdir(tmp_path)
    assert default_data_root() == (tmp_path.parent / "shared" / "data").resolve()


def test_image_folder(tmp_path, cache):
    root = _fake_folder(tmp_path / "support", {"cat": 3, "dog": 2})
    d = load_image_folder(root, image_size=12, channels=None)
    assert d.classes == ["cat", "dog"] and d.labels.tolist() == [0, 0, 0, 1, 1]
    assert d.images.shape == (5, 1, 12, 12)
    rgb = _fake_folder(tmp_path / "rgb", {"a": 2, "b": 2}, mode="RGB")
    assert load_image_folder(rgb, 12, None).channels == 3
    via = load_source("imagefolder", root=root, image_size=12, channels=3)
    assert via.images.shape == (5, 3, 12, 12)
    with pytest.raises(DataError, match="at least 3"):
        load_image_folder(root, 12, 1, min_per_class=3)


def test_image_folder_source_reads_like_inherit_and_predict(tmp_path, cache):
    """The dataset source uses the one reader of every command: symlinked class folders, any-case extensions,
    the same files in the same order as `inherit` (read_image_folder) and `predict` (find_images) see."""
    from learngene.data.images import find_images, read_image_folder

    elsewhere = _fake_folder(tmp_path / "elsewhere", {"dog": 2})
    root = _fake_folder(tmp_path / "data", {"cat": 2})
    (root / "cat" / "1.png").rename(root / "cat" / "1.PNG")
    (root / "dog").symlink_to(elsewhere / "dog", target_is_directory=True)
    d = load_source("imagefolder", root=root, image_size=12, channels=1)
    assert d.classes == ["cat", "dog"] and d.labels.tolist() == [0, 0, 1, 1]
    assert torch.equal(d.images, read_image_folder(root, 12, 1).images)
    assert len(find_images(root)) == 4
    (root / "cat" / "moved.png").symlink_to(tmp_path / "gone.png")  # never a silent skip
    with pytest.raises(DataError, match=r"moved.png points to .*gone.png, which does not exist"):
        load_source("imagefolder", root=root, image_size=12, channels=1)


def test_image_folder_errors(tmp_path):
    root = _fake_folder(tmp_path / "data", {"a": 2})
    (root / "empty_class").mkdir()
    with pytest.raises(DataError, match=r"empty_class is empty"):
        load_image_folder(root, 12, 1)
    with pytest.raises(DataError, match=r"does not exist"):
        load_image_folder(tmp_path / "nowhere", 12, 1)
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match=r"no class folders.*<class name>"):
        load_image_folder(tmp_path / "flat", 12, 1)


def test_omniglot_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*LEARNGENE_DATA"):
        load_source("omniglot", root=tmp_path / "nothing")
    (tmp_path / "omni").mkdir()
    with pytest.raises(DataError, match=r"no images_background_small\*\.zip.*omni"):
        load_source("omniglot", root=tmp_path / "omni")


def test_omniglot_extracted_folder_layout(tmp_path, cache):
    base = tmp_path / "omniglot" / "images_background"
    _fake_folder(base / "Alpha", {"character01": 2, "character02": 2}, size=(105, 105))
    _fake_folder(base / "Beta", {"character01": 3}, size=(105, 105))
    d = load_source("omniglot", root=tmp_path / "omniglot", image_size=16)
    assert d.classes == ["Alpha/character01", "Alpha/character02", "Beta/character01"]
    assert d.groups == ["Alpha", "Alpha", "Beta"] and len(d) == 7


def test_omniglot_real(omniglot_root, cache, monkeypatch):
    import learngene.data.sources as sources

    d = load_source("omniglot", root=omniglot_root, image_size=28)
    assert len(d.classes) == 242 and d.class_counts().eq(20).all()
    assert set(d.groups) == OMNIGLOT_ALPHABETS
    assert Counter(d.groups)["Greek"] == 24 and Counter(d.groups)["Latin"] == 26
    assert d.images.shape == (4840, 1, 28, 28)
    mean, _ = d.mean_std()
    assert 0.02 < mean[0] < 0.3  # strokes bright on a dark background, after inversion

    def no_decoding(*args, **kwargs):
        raise AssertionError("the second load decoded a PNG: the cache was not used")

    # the second load comes from the cache: not one of the 4,840 PNGs is decoded again (checked, not timed)
    monkeypatch.setattr(sources, "_decode_gray", no_decoding)
    again = load_source("omniglot", root=omniglot_root, image_size=28)
    assert torch.equal(again.images, d.images) and again.classes == d.classes


def test_cifar100_missing(tmp_path):
    with pytest.raises(DataError, match=r"cifar-100-python.*LEARNGENE_DATA") as info:
        load_source("cifar100", root=tmp_path / "c100")
    assert str(tmp_path / "c100") in str(info.value)


class _FakeCIFAR:
    classes = ["apple", "bus", "cattle"]

    def __init__(self, root, train, download):
        assert download is False
        n = 6 if train else 3
        self.data = np.full((n, 32, 32, 3), 100 if train else 200, dtype=np.uint8)
        self.targets = [i % 3 for i in range(n)]


def test_cifar100_conversion(tmp_path, monkeypatch):
    import torchvision.datasets

    (tmp_path / "cifar-100-python").mkdir()
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", _FakeCIFAR)
    d = load_source("cifar100", root=tmp_path, image_size=16)
    assert d.classes == ["apple", "bus", "cattle"] and d.images.shape == (9, 3, 16, 16)
    assert d.official_test.tolist() == [False] * 6 + [True] * 3
    assert int(d.images[-1].min()) == 200 and d.groups == ["cifar100"] * 3
    assert sources_mod.load_cifar100(tmp_path, 32, channels=1).channels == 1


def test_cifar100_coarse_groups(tmp_path, monkeypatch):
    import pickle

    import torchvision.datasets

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    meta = {
        "fine_label_names": ["apple", "bus", "cattle"],
        "coarse_label_names": ["fruit", "vehicles", "herbivores"],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta))
    (folder / "test").write_bytes(pickle.dumps({"fine_labels": [2, 0, 1], "coarse_labels": [2, 0, 1]}))
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", _FakeCIFAR)
    d = load_source("cifar100", root=tmp_path)
    assert d.groups == ["fruit", "vehicles", "herbivores"]

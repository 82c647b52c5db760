from __future__ import annotations

import time

import pytest
import torch

from learngene.data import load_glyphs, load_source
from learngene.data.glyphs import glyph_candidates, glyph_char, script_group
from learngene.errors import ConfigError


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        d = tmp_path_factory.mktemp("glyph_cache")
        mp.setenv("LEARNGENE_CACHE", str(d))
        yield d


@pytest.fixture(scope="module")
def small(cache):
    return load_glyphs(image_size=16, per_class=6, max_classes=30, seed=0)


def test_small_generation_shape_and_groups(small):
    assert small.images.shape == (180, 1, 16, 16) and small.images.dtype == torch.uint8
    assert small.class_counts().tolist() == [6] * 30
    assert all(c.startswith("U+") for c in small.classes)
    # round-robin over scripts: a 30-class set still spans many groups, incl. letters of several scripts
    assert len(set(small.groups)) >= 10
    assert {"LATIN", "GREEK", "CYRILLIC"} <= set(small.groups)


def test_not_blank_and_bright_on_dark(small):
    x = small.images.float()
    assert (x.amax((1, 2, 3)) >= 128).all()  # every image has strokes
    assert (x[:, :, 0, :].mean() < 20) and (x[:, :, :, 0].mean() < 20)  # dark border/background
    assert x.mean() < 100


def test_classes_differ(small):
    # class means are pairwise distinct, and no two classes share an identical first image
    means = torch.stack([small.images[small.indices_of(c)].float().mean(0) for c in small.classes])
    flat = means.flatten(1)
    dist = torch.cdist(flat, flat) + torch.eye(len(flat)) * 1e9
    assert dist.min() > 1.0
    firsts = {small.images[small.indices_of(c)[0]].numpy().tobytes() for c in small.classes}
    assert len(firsts) == 30


def test_deterministic_and_seeded(cache, small):
    again = load_glyphs(image_size=16, per_class=6, max_classes=30, seed=0, cache=False)
    assert torch.equal(again.images, small.images) and again.classes == small.classes
    other = load_glyphs(image_size=16, per_class=6, max_classes=30, seed=1, cache=False)
    assert other.classes != small.classes or not torch.equal(other.images, small.images)


def test_cache_hit_is_fast(cache, small):
    t = time.perf_counter()
    hit = load_glyphs(image_size=16, per_class=6, max_classes=30, seed=0)
    assert time.perf_counter() - t < 1.0
    assert torch.equal(hit.images, small.images) and hit.groups == small.groups
    assert list((cache / "glyphs").glob("glyphs-*.safetensors"))


def test_augmented_images_fill_up(cache):
    d = load_glyphs(image_size=16, per_class=30, max_classes=2, seed=0, cache=False)
    for c in d.classes:
        imgs = d.images[d.indices_of(c)]
        assert len({im.numpy().tobytes() for im in imgs}) >= 25  # fonts + distinct augmentations


def test_source_registry_and_errors(cache):
    d = load_source("glyphs", image_size=16, channels=3, per_class=2, max_classes=3)
    assert d.images.shape == (6, 3, 16, 16)
    with pytest.raises(ConfigError, match="per_class"):
        load_glyphs(per_class=0)
    with pytest.raises(ConfigError, match="does not take"):
        load_source("glyphs", per_clas=2)


def test_candidates_and_groups():
    cands = glyph_candidates(12)
    assert 1500 < len(cands) < 3000
    assert all(len(fonts) >= 12 for _, fonts in cands.values())
    assert 0x20 not in cands and 0x0301 not in cands  # no whitespace, no combining marks
    assert script_group(ord("A")) == "LATIN" and script_group(0x0416) == "CYRILLIC"
    assert script_group(0x03A9) == "GREEK" and script_group(0x2192) == "ARROWS"
    assert glyph_char("U+0416") == "Ж"

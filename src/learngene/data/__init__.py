"""Data layer: in-memory image sets, local dataset sources, class splits, task streams and episodes.

Nothing here downloads anything: "glyphs" is rendered from matplotlib's fonts (works right after
pip install), the other sources read files already on disk (see default_data_root()).
"""

from __future__ import annotations

from learngene.data.episodes import Episode, sample_episodes
from learngene.data.glyphs import glyph_candidates, glyph_char, load_glyphs, script_group
from learngene.data.imagecache import cache_dir, load_imageset, save_imageset
from learngene.data.images import ImageSet, convert_channels, resize_images
from learngene.data.sources import (
    IMAGE_EXTENSIONS,
    default_data_root,
    list_sources,
    load_cifar100,
    load_image_folder,
    load_omniglot,
    load_source,
    register_source,
)
from learngene.data.splits import CIFAR100_PAPER_SPLIT, IMAGENET100_PAPER_SPLIT, ClassSplit, paper_split
from learngene.data.stream import CLASS_SAMPLING, Experience, TaskStream, load_manifest
from learngene.data.transforms import AUGMENT_KINDS, BatchAugment, load_rgb_or_gray, normalize, to_float

__all__ = [
    "AUGMENT_KINDS",
    "CIFAR100_PAPER_SPLIT",
    "CLASS_SAMPLING",
    "IMAGENET100_PAPER_SPLIT",
    "IMAGE_EXTENSIONS",
    "BatchAugment",
    "ClassSplit",
    "Episode",
    "Experience",
    "ImageSet",
    "TaskStream",
    "cache_dir",
    "convert_channels",
    "default_data_root",
    "glyph_candidates",
    "glyph_char",
    "list_sources",
    "load_cifar100",
    "load_glyphs",
    "load_image_folder",
    "load_imageset",
    "load_manifest",
    "load_omniglot",
    "load_rgb_or_gray",
    "load_source",
    "normalize",
    "paper_split",
    "register_source",
    "resize_images",
    "sample_episodes",
    "save_imageset",
    "script_group",
    "to_float",
]

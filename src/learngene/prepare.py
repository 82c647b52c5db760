"""From a config to data: load the source, split its classes, draw the task stream."""

from __future__ import annotations

from typing import Any

from learngene.config import Config
from learngene.data import ClassSplit, ImageSet, TaskStream, load_source, paper_split
from learngene.data.lookalikes import lookalike_clusters
from learngene.errors import ConfigError
from learngene.registry import SOURCES


def load_data(cfg: Config, root: str | None = None) -> ImageSet:
    d = cfg.data
    SOURCES.check(d.source, "data.source")
    kwargs: dict[str, Any] = {}
    if d.source == "glyphs":
        kwargs = {"per_class": d.per_class, "max_classes": d.max_classes}
    return load_source(
        d.source, root=root or d.root, image_size=d.image_size, channels=d.channels, seed=cfg.seed, **kwargs
    )


def make_split(cfg: Config, data: ImageSet) -> ClassSplit:
    """The configured class split. Random splits of the glyphs keep look-alike classes (near-duplicate
    renderings, :mod:`learngene.data.lookalikes`) in one part, as Omniglot keeps an alphabet in one part."""
    d = cfg.data
    together = lookalike_clusters(data) if d.source == "glyphs" and d.split in ("groups", "classes") else []
    if d.split == "groups":
        split = ClassSplit.random_groups(data, tuple(d.split_fractions), cfg.seed, together=together)
    elif d.split == "classes":
        n = len(data.classes)
        f = d.split_fractions
        total = sum(f)
        n_src, n_open = int(n * f[0] / total), int(n * f[1] / total)
        split = ClassSplit.random_classes(data, n_src, n_open, n - n_src - n_open, cfg.seed, together=together)
    elif d.split == "paper":
        if d.source not in ("cifar100", "imagefolder"):
            raise ConfigError("data.split = 'paper' exists for CIFAR-100 and ImageNet-100 (imagefolder) only")
        split = paper_split("cifar100" if d.source == "cifar100" else "imagenet100")
    else:
        split = ClassSplit.by_groups(
            data, d.source_groups or [], d.open_world_groups or [], d.novel_groups or []
        )
    split.validate_against(data)
    return split


def make_stream(cfg: Config, data: ImageSet, split: ClassSplit) -> TaskStream:
    s = cfg.stream
    return TaskStream(
        data,
        split,
        n_tasks=s.tasks,
        ways=s.ways,
        train_per_class=s.train_per_class,
        test_fraction=s.test_fraction,
        class_sampling=s.class_sampling,
        seed=cfg.seed,
    )


def input_spec(data: ImageSet, classes: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Normalization statistics from the source classes only (the novel classes stay unseen)."""
    return data.input_spec(classes)

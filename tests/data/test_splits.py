from __future__ import annotations

import pytest
import torch

from learngene.data import CIFAR100_PAPER_SPLIT, IMAGENET100_PAPER_SPLIT, ClassSplit, ImageSet, paper_split
from learngene.errors import ConfigError, DataError

PAPER_NOVEL = {
    "baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck", "plain", "poppy",
    "rocket", "rose", "snail", "sweet_pepper", "table", "telephone", "wardrobe", "whale", "woman", "worm",
}  # fmt: skip


def _grouped(groups: dict[str, int], per_class: int = 2) -> ImageSet:
    classes, gs = [], []
    for g, n in groups.items():
        for i in range(n):
            classes.append(f"{g}/c{i}")
            gs.append(g)
    n = len(classes) * per_class
    return ImageSet(
        images=torch.zeros(n, 1, 8, 8, dtype=torch.uint8),
        labels=torch.arange(len(classes)).repeat_interleave(per_class),
        classes=classes,
        groups=gs,
        name="grouped",
    )


DATA = _grouped({"A": 10, "B": 6, "C": 8, "D": 4, "E": 12, "F": 5, "G": 7, "H": 3})


def test_overlap_and_empty_errors_name_classes():
    with pytest.raises(DataError, match=r"both source and novel: x"):
        ClassSplit(source=("x", "y"), open_world=(), novel=("x",))
    with pytest.raises(DataError, match=r"both open_world and novel: z"):
        ClassSplit(source=("y",), open_world=("z",), novel=("z",))
    with pytest.raises(DataError, match="no source"):
        ClassSplit(source=(), open_world=(), novel=("a",))
    with pytest.raises(DataError, match="no novel"):
        ClassSplit(source=("a",), open_world=(), novel=())
    with pytest.raises(DataError, match="more than once: a"):
        ClassSplit(source=("a", "a"), open_world=(), novel=("b",))


def test_lists_become_tuples_and_dict_roundtrip():
    s = ClassSplit(source=["a", "b"], open_world=["c"], novel=["d"])
    assert s.source == ("a", "b")
    assert ClassSplit.from_dict(s.to_dict()) == s
    with pytest.raises(DataError, match="malformed"):
        ClassSplit.from_dict({"source": ["a"], "nvel": ["b"]})


def test_validate_against_names_missing():
    s = ClassSplit(source=("A/c0", "nope1"), open_world=(), novel=("nope2",))
    with pytest.raises(DataError, match=r"2 split classes missing.*'nope1', 'nope2'"):
        s.validate_against(DATA)


def _disjoint_cover(s: ClassSplit, data: ImageSet) -> None:
    parts = [set(s.source), set(s.open_world), set(s.novel)]
    assert sum(len(p) for p in parts) == len(set().union(*parts))
    s.validate_against(data)


def test_random_groups_reproducible_disjoint_and_group_pure():
    a = ClassSplit.random_groups(DATA, seed=3)
    b = ClassSplit.random_groups(DATA, seed=3)
    assert a == b
    _disjoint_cover(a, DATA)
    assert len(a.all_classes) == len(DATA.classes)
    group = {c: g for c, g in zip(DATA.classes, DATA.groups)}
    part_groups = [{group[c] for c in p} for p in (a.source, a.open_world, a.novel)]
    assert (
        all(part_groups) and not (part_groups[0] & part_groups[2]) and not (part_groups[0] & part_groups[1])
    )
    # class shares roughly follow the fractions
    assert len(a.source) > len(a.novel) > 0
    seeds = {ClassSplit.random_groups(DATA, seed=s) for s in range(8)}
    assert len(seeds) > 1


def test_random_groups_needs_groups():
    one = _grouped({"A": 6})
    with pytest.raises(DataError, match="random_classes"):
        ClassSplit.random_groups(one)
    with pytest.raises(ConfigError, match="fractions"):
        ClassSplit.random_groups(DATA, fractions=(0.5, 0.5, 0.0))


def test_random_classes():
    a = ClassSplit.random_classes(DATA, 20, 5, 10, seed=1)
    assert a == ClassSplit.random_classes(DATA, 20, 5, 10, seed=1)
    assert a != ClassSplit.random_classes(DATA, 20, 5, 10, seed=2)
    assert (len(a.source), len(a.open_world), len(a.novel)) == (20, 5, 10)
    _disjoint_cover(a, DATA)
    with pytest.raises(DataError, match="only 55"):
        ClassSplit.random_classes(DATA, 50, 5, 10)


def test_by_groups():
    s = ClassSplit.by_groups(DATA, ["A", "B"], ["C"], ["D"])
    assert len(s.source) == 16 and len(s.open_world) == 8 and len(s.novel) == 4
    with pytest.raises(DataError, match=r"unknown group.*'Z'"):
        ClassSplit.by_groups(DATA, ["A"], [], ["Z"])
    with pytest.raises(DataError, match="both source and novel"):
        ClassSplit.by_groups(DATA, ["A"], [], ["A"])


def test_paper_splits():
    c = paper_split("cifar100")
    assert c is CIFAR100_PAPER_SPLIT
    # PAPER.md's base table has 64 names (cattle is only in the open-world table), covering all 100 classes.
    assert (len(c.source), len(c.open_world), len(c.novel)) == (64, 16, 20)
    assert set(c.novel) == PAPER_NOVEL
    assert "cattle" in c.open_world and "cattle" not in c.source
    assert len(set(c.all_classes)) == 100
    i = IMAGENET100_PAPER_SPLIT
    assert (len(i.source), len(i.open_world), len(i.novel)) == (64, 16, 20)
    assert all(w.startswith("n") and len(w) == 9 for w in i.all_classes)
    with pytest.raises(ConfigError, match="cifar100"):
        paper_split("cifar10")

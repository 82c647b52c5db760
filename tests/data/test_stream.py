from __future__ import annotations

import json

import pytest
import torch

from learngene.data import ClassSplit, ImageSet, TaskStream, load_manifest
from learngene.errors import ConfigError, DataError


def _data(n_classes: int = 14, per_class: int = 10) -> ImageSet:
    n = n_classes * per_class
    return ImageSet(
        images=torch.zeros(n, 1, 8, 8, dtype=torch.uint8),
        labels=torch.arange(n_classes).repeat_interleave(per_class),
        classes=[f"k{i:02d}" for i in range(n_classes)],
        groups=["g"] * n_classes,
        name="toy",
    )


DATA = _data()
SPLIT = ClassSplit(
    source=tuple(f"k{i:02d}" for i in range(9)), open_world=("k09", "k10"), novel=("k11", "k12", "k13")
)


def _stream(**kw) -> TaskStream:
    args = {"n_tasks": 6, "ways": 3, "seed": 5}
    args.update(kw)
    return TaskStream(DATA, SPLIT, **args)


def _same(a: TaskStream, b: TaskStream) -> bool:
    return a.class_order == b.class_order and all(
        x.classes == y.classes
        and x.labels == y.labels
        and x.new_classes == y.new_classes
        and torch.equal(x.train_indices, y.train_indices)
        and torch.equal(x.test_indices, y.test_indices)
        for x, y in zip(a, b)
    )


def test_reproducible_from_seed():
    assert _same(_stream(), _stream())
    assert not _same(_stream(), _stream(seed=6))


def test_pools_disjoint_and_only_source_classes():
    s = _stream()
    for e in s:
        assert not set(e.train_indices.tolist()) & set(e.test_indices.tolist())
        assert set(e.classes) <= set(SPLIT.source) and len(set(e.classes)) == 3
        for c in e.classes:
            assert len(s.test_pool(c)) == 2 and len(s.train_pool(c)) == 8
    all_train = torch.cat([e.train_indices for e in s]).unique()
    all_test = torch.cat([e.test_indices for e in s]).unique()
    assert not set(all_train.tolist()) & set(all_test.tolist())


def test_new_first_covers_all_then_repeats():
    s = _stream()
    # 9 source classes, 3 per task: first three tasks are all new, then every class has been seen
    assert [len(e.new_classes) for e in s] == [3, 3, 3, 0, 0, 0]
    assert sorted(s.class_order) == sorted(SPLIT.source)
    s2 = TaskStream(DATA, SPLIT, n_tasks=3, ways=4, seed=0)  # 9 = 4 + 4 + 1 new (+3 repeats)
    assert [len(e.new_classes) for e in s2] == [4, 4, 1]
    assert all(len(set(e.classes)) == 4 for e in s2)


def test_global_labels_consistent_and_new_classes_truth():
    s = _stream(class_sampling="random", n_tasks=8)
    seen: set[str] = set()
    for e in s:
        assert e.new_classes == [c for c in e.classes if c not in seen]
        seen |= set(e.classes)
        assert e.labels == [s.class_order.index(c) for c in e.classes]
        assert e.labels == [s.global_label(c) for c in e.classes]
        tgt = s.targets(e.train_indices)
        expected = torch.tensor([s.global_label(DATA.classes[int(DATA.labels[i])]) for i in e.train_indices])
        assert torch.equal(tgt, expected)
    # labels are assigned in order of first appearance
    firsts = [c for e in s for c in e.new_classes]
    assert firsts == s.class_order
    assert s.targets(s.open_world_test_indices).eq(-1).all()
    with pytest.raises(DataError, match="open_world"):
        s.global_label("k09")


def test_seen_test_indices_and_open_world():
    s = _stream()
    got = s.seen_test_indices(1)
    classes = set(s[0].classes) | set(s[1].classes)
    assert {DATA.classes[int(DATA.labels[i])] for i in got} == classes
    assert len(got) == 2 * len(classes)
    assert len(s.open_world_test_indices) == 4 and len(s.open_world_train_indices) == 16
    with pytest.raises(ConfigError, match="out of range"):
        s.seen_test_indices(6)


def test_train_per_class():
    s = _stream(train_per_class=5)
    for e in s:
        assert len(e.train_indices) == 15
        for c in e.classes:
            sub = e.train_indices[DATA.labels[e.train_indices] == DATA.class_index(c)]
            assert set(sub.tolist()) <= set(s.train_pool(c).tolist())
    with pytest.raises(DataError, match="has 8 training images"):
        _stream(train_per_class=9)


def test_manifest_roundtrip(tmp_path):
    s = _stream(train_per_class=4, class_sampling="random")
    path = s.save_manifest(tmp_path / "stream.json")
    m = load_manifest(path)
    r = TaskStream.from_manifest(DATA, m)
    assert _same(s, r)
    assert torch.equal(r.open_world_test_indices, s.open_world_test_indices)
    assert r.to_manifest() == json.loads(json.dumps(s.to_manifest()))


def test_manifest_mismatched_data():
    m = _stream().to_manifest()
    fewer = _data(n_classes=14, per_class=6)
    with pytest.raises(DataError, match="made on"):
        TaskStream.from_manifest(fewer, m)
    other = _data(n_classes=8)
    with pytest.raises(DataError, match="missing"):
        TaskStream.from_manifest(other, m)
    m["experiences"][0]["labels"] = [9, 9, 9]
    with pytest.raises(DataError, match="inconsistent"):
        TaskStream.from_manifest(DATA, m)
    with pytest.raises(DataError, match="not a learngene"):
        TaskStream.from_manifest(DATA, {"format": "x"})


@pytest.mark.parametrize(
    "kw, err, msg",
    [
        ({"ways": 10}, DataError, "only 9 source classes"),
        ({"n_tasks": 0}, ConfigError, "n_tasks"),
        ({"test_fraction": 1.0}, ConfigError, "test_fraction"),
        ({"class_sampling": "roundrobin"}, ConfigError, "new_first"),
    ],
)
def test_errors(kw, err, msg):
    with pytest.raises(err, match=msg):
        _stream(**kw)


def test_class_with_one_image():
    d = ImageSet(
        images=torch.zeros(5, 1, 8, 8, dtype=torch.uint8),
        labels=torch.tensor([0, 0, 1, 1, 2]),
        classes=["a", "b", "c"],
        groups=["g"] * 3,
        name="tiny",
    )
    with pytest.raises(DataError, match=r"'c' has 1 image"):
        TaskStream(d, ClassSplit(source=("a", "c"), open_world=(), novel=("b",)), n_tasks=1, ways=2)

from __future__ import annotations

import pytest
import torch

from learngene.data import Episode, ImageSet, sample_episodes
from learngene.errors import DataError


def _data() -> ImageSet:
    counts = [12, 12, 12, 12, 12, 12, 3]
    return ImageSet(
        images=torch.zeros(sum(counts), 1, 8, 8, dtype=torch.uint8),
        labels=torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)),
        classes=[f"n{i}" for i in range(len(counts))],
        groups=["g"] * len(counts),
        name="toy",
    )


DATA = _data()
NOVEL = [f"n{i}" for i in range(6)]


def test_disjoint_labels_and_counts():
    eps = sample_episodes(DATA, NOVEL, ways=5, shots=2, queries=4, n_episodes=10, seed=1)
    assert len(eps) == 10
    for e in eps:
        assert len(set(e.classes)) == 5 and set(e.classes) <= set(NOVEL)
        assert not set(e.support_indices.tolist()) & set(e.query_indices.tolist())
        assert len(e.support_indices) == 10 and len(e.query_indices) == 20
        assert e.support_labels.tolist() == [i for i in range(5) for _ in range(2)]
        for idx, lab in ((e.support_indices, e.support_labels), (e.query_indices, e.query_labels)):
            names = [DATA.classes[int(DATA.labels[i])] for i in idx]
            assert names == [e.classes[int(j)] for j in lab]
    assert len({tuple(e.classes) for e in eps}) > 1


def test_deterministic_and_seed_sensitive():
    a = sample_episodes(DATA, NOVEL, 3, 1, None, 4, seed=7)
    b = sample_episodes(DATA, NOVEL, 3, 1, None, 4, seed=7)
    c = sample_episodes(DATA, NOVEL, 3, 1, None, 4, seed=8)
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
    assert [x.to_dict() for x in a] != [x.to_dict() for x in c]
    # queries=None: all remaining images of each class
    assert all(len(e.query_indices) == 3 * 11 for e in a)


def test_dict_roundtrip_and_validation():
    e = sample_episodes(DATA, NOVEL, 2, 3, 2, 1)[0]
    r = Episode.from_dict(e.to_dict(), DATA)
    assert r.to_dict() == e.to_dict()
    bad = e.to_dict()
    bad["query_labels"] = [1 - x for x in bad["query_labels"]]
    with pytest.raises(DataError, match="do not match"):
        Episode.from_dict(bad, DATA)


def test_errors():
    with pytest.raises(DataError, match="asked for 7-way but only 6"):
        sample_episodes(DATA, NOVEL, 7, 1, None, 1)
    with pytest.raises(DataError, match=r"'n6' \(3\)"):
        sample_episodes(DATA, NOVEL + ["n6"], 5, 3, None, 1)
    with pytest.raises(DataError, match="shots must be >= 1"):
        sample_episodes(DATA, NOVEL, 5, 0, None, 1)
    with pytest.raises(DataError, match="missing"):
        sample_episodes(DATA, ["n0", "zzz"], 2, 1, None, 1)

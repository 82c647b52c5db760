"""Few-shot target tasks (episodes) for individual models: N ways, K shots, always seeded.

Evaluation numbers are only comparable when every method sees the same episodes, so episodes are a
pure function of (data, classes, ways, shots, queries, n_episodes, seed) and serialize to JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from learngene.data.images import ImageSet
from learngene.errors import DataError

__all__ = ["Episode", "sample_episodes"]


@dataclass(eq=False)
class Episode:
    """One N-way K-shot task; labels are local (0..ways-1, in the order of `classes`)."""

    classes: list[str]
    support_indices: torch.Tensor
    support_labels: torch.Tensor  # labels 0..ways-1
    query_indices: torch.Tensor
    query_labels: torch.Tensor

    @property
    def ways(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return {
            "classes": list(self.classes),
            "support_indices": self.support_indices.tolist(),
            "support_labels": self.support_labels.tolist(),
            "query_indices": self.query_indices.tolist(),
            "query_labels": self.query_labels.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict, data: ImageSet | None = None) -> Episode:
        """Inverse of to_dict; with `data`, checks that every index points at an image of its class."""
        try:
            ep = cls(
                classes=[str(c) for c in d["classes"]],
                support_indices=torch.as_tensor(d["support_indices"], dtype=torch.int64),
                support_labels=torch.as_tensor(d["support_labels"], dtype=torch.int64),
                query_indices=torch.as_tensor(d["query_indices"], dtype=torch.int64),
                query_labels=torch.as_tensor(d["query_labels"], dtype=torch.int64),
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise DataError(f"malformed episode record: {exc}") from exc
        if data is not None:
            ep.validate_against(data)
        return ep

    def tensors(self, data: ImageSet, spec: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalized support images and labels, query images and labels (``spec``: mean and std)."""
        from learngene.data.transforms import normalize

        sx = normalize(data.images[self.support_indices], spec["mean"], spec["std"])
        qx = normalize(data.images[self.query_indices], spec["mean"], spec["std"])
        return sx, self.support_labels.long(), qx, self.query_labels.long()

    def validate_against(self, data: ImageSet) -> None:
        data.check_classes(self.classes, what="episode classes")
        cls_idx = torch.tensor([data.class_index(c) for c in self.classes], dtype=torch.int64)
        for idx, lab, what in (
            (self.support_indices, self.support_labels, "support"),
            (self.query_indices, self.query_labels, "query"),
        ):
            if idx.shape != lab.shape:
                raise DataError(f"episode {what}: {idx.numel()} indices but {lab.numel()} labels")
            if idx.numel() == 0:
                continue
            if int(idx.min()) < 0 or int(idx.max()) >= len(data):
                raise DataError(f"episode {what} indices out of range for {data.name!r} ({len(data)} images)")
            if int(lab.min()) < 0 or int(lab.max()) >= len(self.classes):
                raise DataError(f"episode {what} labels must lie in 0..{len(self.classes) - 1}")
            if bool((data.labels[idx] != cls_idx[lab]).any()):
                raise DataError(f"episode {what} indices do not match their classes in {data.name!r}")


def sample_episodes(
    data: ImageSet,
    classes: Sequence[str],
    ways: int,
    shots: int,
    queries: int | None,
    n_episodes: int,
    seed: int = 0,
) -> list[Episode]:
    """`n_episodes` seeded episodes: each picks `ways` of `classes`, then per class `shots` support and
    `queries` query images (None = all the class's remaining images), support and query disjoint."""
    classes = [str(c) for c in classes]
    for label, v in (("ways", ways), ("shots", shots), ("n_episodes", n_episodes), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise DataError(f"episodes: {label} must be an integer, got {v!r}")
    if shots < 1:
        raise DataError(f"episodes: shots must be >= 1 (images per class to learn from), got {shots}")
    if ways < 1:
        raise DataError(f"episodes: ways must be >= 1, got {ways}")
    if n_episodes < 1:
        raise DataError(f"episodes: n_episodes must be >= 1, got {n_episodes}")
    if queries is not None and (isinstance(queries, bool) or not isinstance(queries, int) or queries < 1):
        raise DataError(
            f"episodes: queries must be None (all remaining images) or an integer >= 1, got {queries!r}"
        )
    if len(set(classes)) != len(classes):
        raise DataError("episodes: the candidate classes contain duplicates")
    if ways > len(classes):
        raise DataError(
            f"episodes: asked for {ways}-way but only {len(classes)} novel classes are available "
            f"(candidates given to sample_episodes); lower ways to <= {len(classes)} or add classes"
        )
    data.check_classes(classes, what="episode classes")
    members = [data.indices_of(c) for c in classes]
    need = shots + (queries if queries is not None else 1)
    short = [(c, len(m)) for c, m in zip(classes, members) if len(m) < need]
    if short:
        listed = ", ".join(f"{c!r} ({n})" for c, n in short[:10])
        raise DataError(
            f"episodes: {shots}-shot tasks with {queries if queries is not None else '>= 1'} queries per class need "
            f"{need} images per class; too few in: {listed}. Lower shots/queries or drop those classes"
        )
    gen = torch.Generator().manual_seed(seed)
    episodes = []
    for _ in range(n_episodes):
        chosen = torch.randperm(len(classes), generator=gen)[:ways].tolist()
        s_idx, s_lab, q_idx, q_lab = [], [], [], []
        for local, ci in enumerate(chosen):
            m = members[ci]
            perm = m[torch.randperm(len(m), generator=gen)]
            q_end = len(m) if queries is None else shots + queries
            s_idx.append(perm[:shots])
            q_idx.append(perm[shots:q_end])
            s_lab.append(torch.full((shots,), local, dtype=torch.int64))
            q_lab.append(torch.full((q_end - shots,), local, dtype=torch.int64))
        episodes.append(
            Episode(
                classes=[classes[ci] for ci in chosen],
                support_indices=torch.cat(s_idx),
                support_labels=torch.cat(s_lab),
                query_indices=torch.cat(q_idx),
                query_labels=torch.cat(q_lab),
            )
        )
    return episodes

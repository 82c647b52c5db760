"""Look-alike classes: near-duplicate drawings that a class split must keep on one side.

Why: the embedded glyphs hold different code points that render almost alike (U+00B7 MIDDLE DOT and U+22C5 DOT
OPERATOR, U+007C and U+2223, subscript and superscript digits, which the renderer crops to the same picture).
A random split that puts one in the source classes and the other among the novel ones lets the collective
model (or the ancestry) see the novel class in all but name, which favours inheritance over scratch. Omniglot
avoids this by splitting whole alphabets; here look-alikes are linked and every link stays within one part.

The rule: the distance between two classes is the RMS difference of their mean images (pixels scaled to
[0, 1]); classes closer than :data:`LOOKALIKE_DISTANCE` are linked, and the connected components of the links
(single linkage) are the clusters a split keeps whole. The threshold 0.055 is the 5th percentile of the
nearest-neighbour distances among the 500 classes of the ``vit-glyphs`` preset (0.0552 at 32 px; 0.0548 for
the same classes at 16 px, so it holds at both sizes the presets use); it links the pairs above (0.031,
0.032, 0.042) and accent variants such as Ü / Ũ (0.052), and leaves distinct letters apart.
"""

from __future__ import annotations

import torch

from learngene.data.images import ImageSet

__all__ = ["LOOKALIKE_DISTANCE", "class_mean_distances", "lookalike_clusters"]

LOOKALIKE_DISTANCE = 0.055


def class_mean_distances(data: ImageSet) -> torch.Tensor:
    """[C, C] RMS distances between the classes' mean images (pixels in [0, 1]); the diagonal is 0."""
    flat = data.images.reshape(len(data.images), -1).to(torch.float64) / 255.0
    sums = torch.zeros(data.num_classes, flat.shape[1], dtype=torch.float64).index_add_(0, data.labels, flat)
    means = sums / data.class_counts().to(torch.float64).clamp_min(1).unsqueeze(1)
    return torch.cdist(means, means) / flat.shape[1] ** 0.5


def lookalike_clusters(data: ImageSet, threshold: float = LOOKALIKE_DISTANCE) -> list[tuple[str, ...]]:
    """Groups of >= 2 classes linked by distances below ``threshold`` (single linkage), in class order."""
    dist = class_mean_distances(data)
    parent = list(range(data.num_classes))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in (torch.triu(dist < threshold, diagonal=1)).nonzero().tolist():
        parent[root(a)] = root(b)
    members: dict[int, list[str]] = {}
    for i, name in enumerate(data.classes):
        members.setdefault(root(i), []).append(name)
    return [tuple(m) for m in members.values() if len(m) > 1]

"""Classifier heads for few-shot models: the plain linear layer and a cosine classifier that starts as the
nearest-class-mean rule.

Why a cosine head: with one image per class, a linear layer trained from random weights throws away what the
inherited features already separate, while a cosine classifier whose rows are the class prototypes *is* cosine
nearest-class-mean before the first step. Training then starts from the untrained gene's accuracy and builds on
it (Qi et al., "Low-shot learning with imprinted weights", CVPR 2018; Chen et al., "A closer look at few-shot
classification", ICLR 2019).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learngene.errors import ConfigError

__all__ = ["CLASSIFIERS", "CosineClassifier", "make_classifier", "imprint"]

CLASSIFIERS = ("linear", "cosine")


class CosineClassifier(nn.Module):
    """``logits = scale * cos(feature, weight_c)``: a learnable temperature ``scale`` over unit vectors.

    ``weight`` keeps the name and shape of ``nn.Linear.weight`` ([classes, features]) so state dicts and
    parameter counts read alike; there is no bias.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 10.0) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ConfigError(f"cosine classifier needs positive sizes, got {in_features} -> {out_features}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.normal_(self.weight, std=0.01)
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def make_classifier(kind: str, in_features: int, out_features: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, out_features)
    if kind == "cosine":
        return CosineClassifier(in_features, out_features)
    raise ConfigError(f"unknown classifier {kind!r}; choose one of {', '.join(CLASSIFIERS)}")


@torch.no_grad()
def imprint(classifier: nn.Module, features: Tensor, labels: Tensor) -> None:
    """Set each class's row from its mean support feature, so training starts from a sensible head.

    A cosine head becomes exactly cosine nearest-class-mean; a linear head gets the prototypes scaled to unit
    mean norm and the bias that makes it the Euclidean nearest-mean rule.
    """
    n = classifier.out_features
    present = torch.unique(labels)
    if present.numel() != n or int(present.min()) != 0 or int(present.max()) != n - 1:
        raise ConfigError(f"imprinting a {n}-way head needs support images of every class 0..{n - 1}, "
                          f"got labels {present.tolist()}")
    means = torch.stack([features[labels == c].mean(0) for c in range(n)])
    if isinstance(classifier, CosineClassifier):
        classifier.weight.copy_(F.normalize(means, dim=1))
        return
    norm = means.norm(dim=1, keepdim=True).clamp_min(1e-6)
    scale = 1.0 / norm.mean()
    classifier.weight.copy_(means * scale)
    classifier.bias.copy_(-0.5 * (means * scale * means).sum(1))

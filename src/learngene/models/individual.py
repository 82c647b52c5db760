"""The individual model: fresh conv blocks + an inherited learngene's blocks + a new head (a plain ``nn.Module``).

Layout (stable state-dict prefixes): ``before.{i}`` fresh conv blocks, ``gene.{k}`` the inherited blocks,
``after.{i}`` fresh conv blocks, ``head.*`` hidden MLP, ``classifier.*`` the new C-way output layer.
:func:`plan_individual` turns a gene's layer list and the size settings into its shape record; the gene
(:meth:`learngene.gene.Learngene.build`) fills in the inherited weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from learngene.config import IndividualConfig
from learngene.errors import ModelError
from learngene.models.heads import make_classifier
from learngene.models.layers import ConvBlock
from learngene.models.registry import register_architecture

__all__ = ["POOLS", "IndividualModel", "plan_individual"]

POOLS = ("flatten", "avg")


def _blocks(specs: Sequence[dict[str, Any]]) -> nn.Sequential:
    return nn.Sequential(*[ConvBlock(s["in_channels"], s["out_channels"], pool=bool(s["pool"])) for s in specs])


@register_architecture("individual")
class IndividualModel(nn.Module):
    """A lightweight descendant: ``before -> gene -> after -> head -> classifier``.

    timm's conventions: ``forward_features`` (the conv stack), ``forward_head`` (MLP + classifier, or the
    penultimate features with ``pre_logits=True``) and ``reset_classifier`` (a new label set).
    """

    def __init__(self, in_channels: int, image_size: int, before: Sequence[dict[str, Any]],
                 gene: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], hidden: Sequence[int],
                 num_classes: int, dropout: float = 0.0, pool: str = "flatten", classifier: str = "linear"):
        super().__init__()
        if pool not in POOLS:
            raise ModelError(f"individual model: pool must be one of {', '.join(POOLS)}, got {pool!r}")
        self._cfg = {
            "name": "individual", "in_channels": in_channels, "image_size": image_size,
            "before": [dict(s) for s in before], "gene": [dict(s) for s in gene], "after": [dict(s) for s in after],
            "hidden": list(hidden), "num_classes": num_classes, "dropout": dropout, "pool": pool,
            "classifier": classifier,
        }
        chain = list(before) + list(gene) + list(after)
        prev = in_channels
        size = image_size
        for s in chain:
            if s["in_channels"] != prev:
                raise ModelError(f"individual model: a block expects {s['in_channels']} input channels but gets {prev}")
            prev = s["out_channels"]
            size = size // 2 if s["pool"] else size
        if size < 1:
            raise ModelError(f"individual model: too many pools for {image_size}x{image_size} images")
        self.before = _blocks(before)
        self.gene = _blocks(gene)
        self.after = _blocks(after)
        # "avg": global average pooling, features that do not move with the drawing (on Omniglot pseudo-tasks
        # cosine NCM on the gene's pooled features beats the flattened map by 6.6 points, BENCHMARKS.md)
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if pool == "avg" else [nn.Flatten()]
        dim = prev if pool == "avg" else prev * size * size
        for h in hidden:
            layers += [nn.Linear(dim, h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            dim = h
        self.head = nn.Sequential(*layers)
        self.classifier = make_classifier(classifier, dim, num_classes)
        self.feature_dim = dim

    def config(self) -> dict[str, Any]:
        return copy.deepcopy(self._cfg)

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> IndividualModel:
        kw = {k: v for k, v in cfg.items() if k != "name"}
        return cls(**kw)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(self.gene(self.before(x)))

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = self.head(feats)
        return h if pre_logits else self.classifier(h)

    def forward_penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh ``num_classes``-way output layer (new label set); the rest of the model is kept."""
        self.classifier = make_classifier(self._cfg["classifier"], self.feature_dim, num_classes).to(
            self.classifier.weight.device)
        self._cfg["num_classes"] = num_classes

    def inherited_params(self) -> int:
        return sum(p.numel() for p in self.gene.parameters())


def plan_individual(gene_layers: Sequence[dict[str, Any]], input_spec: dict[str, Any], spec: IndividualConfig,
                    num_classes: int) -> dict[str, Any]:
    """Turn a gene's layer list and the size settings (``before``, ``after``, ``hidden``, ``pool_before``,
    ``adapt`` of :class:`~learngene.config.IndividualConfig`) into an IndividualModel config (shape-checked)."""
    channels, image_size = int(input_spec["channels"]), int(input_spec["image_size"])
    gene_specs = [
        {"in_channels": int(g["in_channels"]), "out_channels": int(g["out_channels"]), "pool": bool(g["pool"])}
        for g in gene_layers
    ]
    before: list[dict[str, Any]] = []
    spatial_in = int(input_spec.get("spatial_in", image_size))
    gene_in = gene_specs[0]["in_channels"] if gene_specs else channels
    at_input = spatial_in == image_size and gene_in == channels
    if gene_specs and not at_input:
        widths = list(spec.before)
        if not widths:
            raise ModelError(
                f"the gene expects {gene_in} input channels (it sat inside the collective model), so the individual "
                "model needs at least one fresh layer before it: set individual.before, e.g. [32]"
            )
        if widths[-1] != gene_in:
            if not spec.adapt:
                raise ModelError(
                    f"the last fresh layer before the gene has {widths[-1]} channels but the gene expects {gene_in}; "
                    f"set individual.before to end with {gene_in}, or keep individual.adapt = true"
                )
            widths[-1] = gene_in
        n_pools = 0
        if spec.pool_before and spatial_in < image_size:
            n_pools = max(0, round(math.log2(image_size / spatial_in)))
        prev = channels
        for i, w in enumerate(widths):
            pool = i < n_pools if n_pools <= len(widths) else True
            before.append({"in_channels": prev, "out_channels": w, "pool": pool})
            prev = w
    elif not gene_specs:
        prev = channels
        for w in spec.before:
            before.append({"in_channels": prev, "out_channels": w, "pool": True})
            prev = w
    after: list[dict[str, Any]] = []
    prev = gene_specs[-1]["out_channels"] if gene_specs else (before[-1]["out_channels"] if before else channels)
    for w in spec.after:
        after.append({"in_channels": prev, "out_channels": w, "pool": False})
        prev = w
    return {
        "name": "individual", "in_channels": channels, "image_size": image_size, "before": before,
        "gene": gene_specs, "after": after, "hidden": list(spec.hidden), "num_classes": num_classes, "dropout": 0.0,
        "pool": spec.pool, "classifier": spec.classifier,
    }

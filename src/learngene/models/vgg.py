"""An expandable VGG-style CNN: the collective model of Learngene and the source of learngene layers.

Layout and **stable state-dict names** (growth, EWC, gradient recording and learngene extraction all key on
them, so they never change between versions):

* ``features.{i}`` -- the i-th :class:`ConvBlock` (0-based, contiguous even after a block is inserted):
  ``features.{i}.conv.weight`` / ``.conv.bias``, ``features.{i}.bn.{weight,bias,running_mean,running_var,
  num_batches_tracked}``.  A block listed in ``pools`` ends with a 2x2 max-pool (``features.{i}.pool``).
* ``head`` -- flatten, then per hidden size ``fc{k}`` (Linear) -> ``relu{k}`` -> ``drop{k}``, so the hidden
  linears are ``head.fc0.*``, ``head.fc1.*``...  With ``hidden=()`` the head only flattens.
* ``classifier`` -- the last Linear (``classifier.weight`` / ``classifier.bias``), one row per class.

Flattened conv features are channel-major (PyTorch's NCHW flatten): channel ``c`` owns the ``h*w``
consecutive columns ``c*h*w .. (c+1)*h*w - 1`` of ``head.fc0`` (or of ``classifier`` when there is no
hidden layer).  Widening the last block must respect this; :mod:`learngene.models.growth` does.

Convolutions keep their bias (``conv_bias=True``) even though BatchNorm follows and makes it redundant:
that is PyTorch's default and what the paper's parameter counts (5.1M -> 16.4M) include.  Pass
``conv_bias=False`` for the leaner variant; growth handles both.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from learngene.errors import ModelError
from learngene.models.layers import ConvBlock, as_int, as_int_list
from learngene.models.registry import register_architecture, register_model

__all__ = [
    "ConvBlock",
    "ExpandableVGG",
    "test_vgg",
    "vgg4",
    "vgg8_small",
    "vgg13_paper",
]


def _final_spatial(image_size: int, num_pools: int) -> int:
    """Side length after ``num_pools`` 2x2 max-pools (floor division, as nn.MaxPool2d does)."""
    side = image_size
    for _ in range(num_pools):
        side //= 2
    return side


_VGG_ARGS = ("widths", "pools", "in_channels", "image_size", "num_classes", "hidden", "dropout", "conv_bias")


@register_architecture("expandable_vgg")
class ExpandableVGG(nn.Module):
    """A VGG-style CNN whose conv widths and class count can grow without changing what it computes.

    ``pools`` are 0-based indices of the blocks followed by a 2x2 max-pool.  Widths, pools and the class count
    are read back from the modules, so they stay true after :mod:`~learngene.models.growth` edits the model.
    """

    def __init__(
        self,
        widths: Sequence[int],
        pools: Sequence[int],
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 5,
        hidden: Sequence[int] = (1024, 1024),
        dropout: float = 0.5,
        conv_bias: bool = True,
    ) -> None:
        super().__init__()
        widths = as_int_list(widths, "widths", 1)
        if not widths:
            raise ModelError(
                "widths is empty; an ExpandableVGG needs at least one conv block, e.g. widths=[64]"
            )
        pool_list = as_int_list(pools, "pools", 0)
        bad = [p for p in pool_list if p >= len(widths)]
        if bad:
            raise ModelError(
                f"pools {bad} refer to blocks that do not exist (there are {len(widths)} blocks, indices "
                f"0..{len(widths) - 1}); pools are 0-based block indices"
            )
        if len(set(pool_list)) != len(pool_list):
            raise ModelError(f"pools {pool_list} lists a block twice; each block has at most one pool")
        in_channels = as_int(in_channels, "in_channels")
        image_size = as_int(image_size, "image_size")
        num_classes = as_int(num_classes, "num_classes")
        if _final_spatial(image_size, len(pool_list)) < 1:
            max_pools = int(math.floor(math.log2(image_size)))
            raise ModelError(
                f"{len(pool_list)} max-pools shrink a {image_size}x{image_size} image to nothing; use at most "
                f"{max_pools} pools for this image size or a larger image_size"
            )
        hidden = as_int_list(hidden, "hidden", 1)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ModelError(f"dropout must be a number in [0, 1), got {dropout!r}")

        self.in_channels = in_channels
        self.image_size = image_size
        self.hidden = tuple(hidden)
        self.dropout = float(dropout)
        self.conv_bias = bool(conv_bias)

        pool_set = set(pool_list)
        blocks, prev = [], in_channels
        for i, w in enumerate(widths):
            blocks.append(ConvBlock(prev, w, pool=i in pool_set, bias=self.conv_bias))
            prev = w
        self.features = nn.Sequential(*blocks)

        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten(1))
        dim = self.feature_dim
        for k, h in enumerate(hidden):
            layers[f"fc{k}"] = nn.Linear(dim, h)
            layers[f"relu{k}"] = nn.ReLU()
            layers[f"drop{k}"] = nn.Dropout(self.dropout)
            dim = h
        self.head = nn.Sequential(layers)
        self.classifier = nn.Linear(dim, num_classes)

    # ------------------------------------------------------------------ shape facts (read from the modules)
    @property
    def blocks(self) -> list[ConvBlock]:
        return list(self.features)  # type: ignore[arg-type]

    @property
    def widths(self) -> list[int]:
        return [b.out_channels for b in self.blocks]

    @property
    def pools(self) -> list[int]:
        return [i for i, b in enumerate(self.blocks) if b.has_pool]

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    @property
    def spatial(self) -> int:
        """Side length of the last conv block's output map."""
        return _final_spatial(self.image_size, len(self.pools))

    @property
    def feature_dim(self) -> int:
        """Size of the flattened conv output (channels * h * w)."""
        return self.widths[-1] * self.spatial**2

    @property
    def penultimate_dim(self) -> int:
        """Size of the classifier's input (last hidden size, or feature_dim without hidden layers)."""
        return self.classifier.in_features

    def conv_layer_names(self) -> list[str]:
        """Stable module prefixes of the conv blocks: ``["features.0", "features.1", ...]``."""
        return [f"features.{i}" for i in range(len(self.features))]

    # ------------------------------------------------------------------ forward passes
    def forward_features(self, x: Tensor) -> Tensor:
        """Conv stack output, flattened channel-major to ``[B, feature_dim]``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelError(
                f"expected images shaped [batch, {self.in_channels}, {self.image_size}, {self.image_size}], "
                f"got {list(x.shape)}; resize/convert the inputs or build the model with matching "
                "in_channels/image_size"
            )
        out = torch.flatten(self.features(x), 1)
        if out.shape[1] != self.feature_dim:
            raise ModelError(
                f"images of size {list(x.shape[2:])} give {out.shape[1]} features but the head expects "
                f"{self.feature_dim} ({self.image_size}x{self.image_size} inputs); resize the images or rebuild "
                f"the model with image_size={x.shape[-1]}"
            )
        return out

    def forward_penultimate(self, x: Tensor) -> Tensor:
        """Output of the hidden MLP, i.e. the classifier's input (the embedding used by few-shot heads)."""
        return self.head(self.forward_features(x))

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """Hidden MLP + classifier on already-extracted flattened features (timm: ``pre_logits`` stops before
        the classifier)."""
        h = self.head(feats)
        return h if pre_logits else self.classifier(h)

    def reset_classifier(self, num_classes: int, seed: int | None = None) -> None:
        """A fresh ``num_classes``-way classifier (a new label set; timm's convention), drawn from ``seed``."""
        num_classes = as_int(num_classes, "num_classes")
        old = self.classifier
        if seed is None:
            new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        else:
            weight, bias = new_class_rows(num_classes, old.in_features, seed)
            new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(weight.to(old.weight))
                new.bias.copy_(bias.to(old.bias))
        new.train(old.training)
        self.classifier = new

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ growth of the output layer
    def expand_classes(self, num_classes: int, seed: int | None = None) -> None:
        """Add classifier rows for new classes; old rows (and so old-class logits) stay exactly as they were.

        New rows get nn.Linear's default init (uniform in +-1/sqrt(fan_in)), drawn from ``seed`` when given
        (reproducible) or from torch's global RNG.  Any optimizer built before this call is stale.
        """
        num_classes = as_int(num_classes, "num_classes")
        old = self.classifier
        if num_classes < old.out_features:
            raise ModelError(
                f"expand_classes({num_classes}) would drop classes: the classifier already has "
                f"{old.out_features} outputs; the class count can only grow"
            )
        if num_classes == old.out_features:
            return
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        weight, bias = new_class_rows(num_classes - old.out_features, old.in_features, seed)
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(torch.cat([old.weight.detach(), weight.to(old.weight)], 0))
            new.bias.copy_(torch.cat([old.bias.detach(), bias.to(old.bias)], 0))
        new.train(old.training)
        self.classifier = new

    # ------------------------------------------------------------------ serialization of the shape
    def config(self) -> dict[str, Any]:
        """JSON-serializable shape record; :func:`~learngene.models.registry.model_from_config` rebuilds it."""
        return {
            "name": "expandable_vgg",
            "widths": self.widths,
            "pools": self.pools,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "hidden": list(self.hidden),
            "dropout": self.dropout,
            "conv_bias": self.conv_bias,
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ExpandableVGG:
        if not isinstance(cfg, dict):
            raise ModelError(f"ExpandableVGG config must be a dict, got {type(cfg).__name__}")
        name = cfg.get("name", "expandable_vgg")
        if name != "expandable_vgg":
            raise ModelError(
                f"config is for architecture {name!r}, not 'expandable_vgg'; use model_from_config"
            )
        unknown = sorted(set(cfg) - set(_VGG_ARGS) - {"name"})
        if unknown:
            raise ModelError(
                f"unknown ExpandableVGG config keys {unknown}; valid keys: {list(_VGG_ARGS)} (was the config "
                "written by a newer version?)"
            )
        missing = [k for k in ("widths", "pools") if k not in cfg]
        if missing:
            raise ModelError(f"ExpandableVGG config lacks {missing}; it must come from model.config()")
        return cls(**{k: cfg[k] for k in _VGG_ARGS if k in cfg})

    def extra_repr(self) -> str:
        return f"widths={self.widths}, pools={self.pools}, image_size={self.image_size}"


def new_class_rows(n_new: int, in_features: int, seed: int) -> tuple[Tensor, Tensor]:
    """nn.Linear-style init for ``n_new`` classifier rows, reproducible from ``seed`` (float32, CPU).

    Shared by :meth:`ExpandableVGG.expand_classes` and growth plans so a replayed plan gives the same rows.
    """
    gen = torch.Generator().manual_seed(int(seed))
    bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
    weight = torch.empty(n_new, in_features).uniform_(-bound, bound, generator=gen)
    bias = torch.empty(n_new).uniform_(-bound, bound, generator=gen)
    return weight, bias


# ---------------------------------------------------------------------- registered presets
def _build(preset: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> ExpandableVGG:
    unknown = sorted(set(overrides) - set(_VGG_ARGS))
    if unknown:
        raise ModelError(f"model {preset!r} does not take {unknown}; valid overrides: {', '.join(_VGG_ARGS)}")
    return ExpandableVGG(**{**defaults, **overrides})


@register_model
def vgg13_paper(**overrides: Any) -> ExpandableVGG:
    """The paper's collective model at task 0: 13 conv blocks, 5 pools, MLP 1024-1024 (~5.05M params at 5 classes)."""
    defaults = dict(
        widths=[64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256],
        pools=[1, 3, 6, 9, 12],
        image_size=32,
        hidden=(1024, 1024),
        dropout=0.5,
    )
    return _build("vgg13_paper", defaults, overrides)


@register_model
def vgg8_small(**overrides: Any) -> ExpandableVGG:
    """A CPU-friendly collective model: 8 blocks (32..128 channels), 4 pools, one hidden layer of 256."""
    defaults = dict(
        widths=[32, 32, 64, 64, 96, 96, 128, 128],
        pools=[1, 3, 5, 7],
        image_size=32,
        hidden=(256,),
        dropout=0.5,
    )
    return _build("vgg8_small", defaults, overrides)


@register_model
def vgg4(**overrides: Any) -> ExpandableVGG:
    """The classic few-shot Conv-4 backbone: 4 blocks of 64 channels, a pool after each, no hidden MLP.

    ``hidden=()`` (flatten -> classifier) matches the Conv-4 used across the few-shot literature, so the
    penultimate embedding is the flattened conv output.
    """
    defaults = dict(widths=[64, 64, 64, 64], pools=[0, 1, 2, 3], image_size=32, hidden=(), dropout=0.0)
    return _build("vgg4", defaults, overrides)


@register_model
def test_vgg(**overrides: Any) -> ExpandableVGG:
    """Tiny model for tests: widths 4,6,8 with a pool after each, 16x16 inputs (2x2 final map), hidden (16,)."""
    defaults = dict(widths=[4, 6, 8], pools=[0, 1, 2], image_size=16, hidden=(16,), dropout=0.5)
    return _build("test_vgg", defaults, overrides)


test_vgg.__test__ = False  # type: ignore[attr-defined]  # a model, not a pytest test, despite the name

"""Building blocks shared by the collective model, the learngene and the individual models.

``ConvBlock`` is the unit that grows and that a CNN learngene is made of; its submodule names are part of the
stable state-dict layout (``features.{i}.conv.weight``, ``gene.{k}.bn.running_mean``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from learngene.errors import ModelError
from learngene.models.registry import register_architecture

__all__ = ["ConvBlock"]


def as_int(value: Any, what: str, minimum: int = 1) -> int:
    """Accept ints (and integral floats from JSON/TOML) only, with a message naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ModelError(f"{what} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ModelError(f"{what} must be >= {minimum}, got {value!r}")
    return int(value)


def as_int_list(values: Any, what: str, minimum: int) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ModelError(f"{what} must be a list of integers, got {values!r}")
    return [as_int(v, f"{what}[{i}]", minimum) for i, v in enumerate(values)]


@register_architecture("conv_block")
class ConvBlock(nn.Module):
    """conv3x3 (padding 1) -> BatchNorm2d -> ReLU [-> MaxPool2d(2)]: the unit that grows and that a learngene is made of.

    Submodule names (``conv``, ``bn``, ``act``, ``pool``) are part of the stable state-dict layout.  ``pool`` is
    an ``nn.Identity`` when the block does not downsample, so every block has the same attribute set.
    """

    def __init__(self, in_channels: int, out_channels: int, pool: bool = False, bias: bool = True) -> None:
        super().__init__()
        in_channels = as_int(in_channels, "ConvBlock in_channels")
        out_channels = as_int(out_channels, "ConvBlock out_channels")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bool(bias))
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()
        self.pool: nn.Module = nn.MaxPool2d(2) if pool else nn.Identity()

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    @property
    def has_pool(self) -> bool:
        return isinstance(self.pool, nn.MaxPool2d)

    @property
    def has_bias(self) -> bool:
        return self.conv.bias is not None

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))

    def config(self) -> dict[str, Any]:
        return {
            "type": "conv_block",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "pool": self.has_pool,
            "bias": self.has_bias,
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ConvBlock:
        if cfg.get("type", "conv_block") != "conv_block":
            raise ModelError(f"ConvBlock.from_config got a config of type {cfg.get('type')!r}")
        try:
            return cls(
                cfg["in_channels"],
                cfg["out_channels"],
                bool(cfg.get("pool", False)),
                bool(cfg.get("bias", True)),
            )
        except KeyError as exc:
            raise ModelError(f"conv_block config lacks {exc}; it must come from ConvBlock.config()") from exc

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, pool={self.has_pool}"

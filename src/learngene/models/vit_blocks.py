"""Addressing a timm ViT's transformer blocks by their stable names (``blocks.{i}.*``): counting them, reading and
loading one block's tensors, and the tensors outside the blocks (embeddings, final norm, head)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from learngene.errors import ModelError

__all__ = [
    "BLOCK_PREFIX",
    "EMBEDDING_PREFIXES",
    "FINAL_NORM_PREFIXES",
    "block_param_names",
    "block_prefix",
    "block_state_dict",
    "load_block_state_dict",
    "num_blocks",
    "shared_state_dict",
    "split_block_key",
]

# shared tensors that feed the first block: what "the embeddings" means when copying from an ancestry
EMBEDDING_PREFIXES = ("patch_embed.", "pos_embed", "cls_token", "reg_token", "norm_pre.")
BLOCK_PREFIX = "blocks."
# the norm after the last block (timm puts it in ``norm`` or, with global pooling, ``fc_norm``)
FINAL_NORM_PREFIXES = ("norm.", "fc_norm.")
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


# ---------------------------------------------------------------------- block addressing
def num_blocks(model: nn.Module) -> int:
    """How many transformer blocks ``model.blocks`` holds."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        raise ModelError(
            f"{type(model).__name__} has no 'blocks' sequence; expected a timm VisionTransformer"
        )
    return len(blocks)


def split_block_key(key: str) -> tuple[int, str] | None:
    """``"blocks.3.attn.qkv.weight"`` -> ``(3, "attn.qkv.weight")``; None for a tensor outside the blocks."""
    m = _BLOCK_KEY.match(key)
    return (int(m.group(1)), m.group(2)) if m else None


def block_prefix(index: int) -> str:
    """The state-dict prefix of block ``index`` (``"blocks.3."``): stable across timm 1.x and our versions."""
    return f"{BLOCK_PREFIX}{int(index)}."


def _check_index(model: nn.Module, index: int) -> int:
    n = num_blocks(model)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
        raise ModelError(f"block index {index!r} is out of range: the model has blocks 0..{n - 1}")
    return index


def block_param_names(model: nn.Module) -> list[str]:
    """Block-relative names of a block's tensors (``"attn.qkv.weight"``, ...), in state-dict order."""
    return list(model.blocks[0].state_dict()) if num_blocks(model) else []


def block_state_dict(model: nn.Module, index: int) -> dict[str, Tensor]:
    """Block ``index``'s tensors under block-relative names (detached views: clone before editing)."""
    _check_index(model, index)
    return {k: v.detach() for k, v in model.blocks[index].state_dict().items()}


@torch.no_grad()
def load_block_state_dict(model: nn.Module, index: int, tensors: Mapping[str, Tensor]) -> None:
    """Copy block-relative ``tensors`` into block ``index``; every name must match exactly, shapes too."""
    _check_index(model, index)
    block = model.blocks[index]
    own = block.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise ModelError(f"block {index}: missing tensors {missing}, unexpected {unexpected}")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ModelError(f"block {index} {k}: shape {tuple(v.shape)} does not fit {tuple(own[k].shape)}")
    block.load_state_dict({k: v.detach().clone() for k, v in tensors.items()}, strict=True)


def shared_state_dict(model: nn.Module, include_head: bool = True) -> dict[str, Tensor]:
    """Every tensor outside ``blocks.*``: embeddings, tokens, norms and (optionally) the head ``head.*``."""
    return {
        k: v.detach()
        for k, v in model.state_dict().items()
        if not k.startswith(BLOCK_PREFIX) and (include_head or not k.startswith("head."))
    }

"""What a model accepts: images and labels checked before training or prediction, with a message that says the fix.

Why a module of its own: a wrong tensor given from Python (raw uint8 pixels, 28x28 images for a 32x32 gene, RGB
for a gray gene, one label too many, a label past the last class) otherwise fails deep inside torch with a
shape error, or trains silently on nonsense. Every entry point that takes tensors from a user (few-shot
training, :func:`learngene.predict`) asks here first. The model's expected input comes from its ``config()``
record (``in_channels``, ``image_size``: individual models and the collective VGG both have one).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from learngene.errors import DataError

__all__ = ["check_few_shot_inputs", "check_images", "expected_input"]


def expected_input(model: nn.Module) -> tuple[int | None, int | None]:
    """``(channels, image_size)`` the model was built for (None where its record does not say)."""
    config = getattr(model, "config", None)
    cfg: Any = config() if callable(config) else {}
    if not isinstance(cfg, dict):
        return None, None
    channels, size = cfg.get("in_channels"), cfg.get("image_size")
    return (channels if isinstance(channels, int) else None), (size if isinstance(size, int) else None)


def _num_classes(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    head = getattr(model, "classifier", None)
    return head.out_features if isinstance(head, nn.Linear) else None


def check_images(model: nn.Module, x: Any, what: str = "images", *, where: str = "") -> None:
    """``x`` must be normalized float images ``[N, C, H, W]`` of the model's channels, size and dtype."""
    at = f"{where}: " if where else ""
    if not isinstance(x, Tensor):
        raise DataError(f"{at}{what} must be a torch.Tensor of images [N, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise DataError(f"{at}{what} have shape {list(x.shape)}; expected a batch of images [N, C, H, W]")
    if len(x) == 0:
        raise DataError(f"{at}{what}: none given (an empty tensor)")
    if not x.is_floating_point():
        raise DataError(
            f"{at}{what} are {str(x.dtype).removeprefix('torch.')} pixels, but the model takes normalized float "
            "images; pass gene.preprocess(images) (uint8 images scaled and normalized with the gene's mean and std)"
        )
    channels, size = expected_input(model)
    if channels is not None and x.shape[1] != channels:
        raise DataError(
            f"{at}{what} have {x.shape[1]} channel(s) but the model takes {channels}; convert the images first "
            f"(e.g. ImageSet.from_dataset(..., channels={channels}), or `learngene inherit`, which converts them)"
        )
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        raise DataError(
            f"{at}{what} are {x.shape[-1]}x{x.shape[-2]} but the model takes {size}x{size}; resize them first "
            f"(e.g. ImageSet.from_dataset(..., image_size={size}), or `learngene inherit`, which resizes them)"
        )
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    if weight is not None and x.dtype != weight.dtype:
        raise DataError(
            f"{at}{what} are {str(x.dtype).removeprefix('torch.')} but the model's weights are "
            f"{str(weight.dtype).removeprefix('torch.')}; convert them, e.g. x.to({weight.dtype})"
        )


def _check_labels(model: nn.Module, x: Tensor, y: Any, what: str, at: str) -> None:
    if not isinstance(y, Tensor) or y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        shown = f"{str(y.dtype).removeprefix('torch.')} {list(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise DataError(f"{at}{what} labels must be a 1-D integer tensor of class indices, got {shown}")
    if len(y) != len(x):
        raise DataError(f"{at}{what} has {len(x)} images but {len(y)} labels; give exactly one label per image")
    n = _num_classes(model)
    low, high = int(y.min()), int(y.max())
    if low < 0 or (n is not None and high >= n):
        raise DataError(
            f"{at}{what} labels range over {low}..{high} but the model has {n} outputs (classes 0..{(n or 1) - 1}); "
            f"number the classes 0..C-1, or build the model with num_classes={high + 1}"
        )


def check_few_shot_inputs(model: nn.Module, support_x: Any, support_y: Any, query_x: Any = None,
                          query_y: Any = None) -> None:
    """Everything :func:`~learngene.individual.train_few_shot` needs of its tensors, checked before training.

    Every class of the model needs at least one support image: weight imprinting starts each class's output
    from the mean of its support features, and a class never seen in training cannot be learned.
    """
    at = "train_few_shot: "
    check_images(model, support_x, "support images", where="train_few_shot")
    _check_labels(model, support_x, support_y, "the support set", at)
    n = _num_classes(model)
    if n is not None:
        missing = sorted(set(range(n)) - set(support_y.unique().tolist()))
        if missing:
            raise DataError(
                f"{at}classes {missing[:10]} of the model's {n} have no support image; give each class at least one "
                f"(labels 0..{n - 1}), or build the model with fewer classes"
            )
    if (query_x is None) != (query_y is None):
        raise DataError(f"{at}give query_x and query_y together (one is None), or neither")
    if query_x is not None:
        check_images(model, query_x, "query images", where="train_few_shot")
        _check_labels(model, query_x, query_y, "the query set", at)

"""The collective trainer's batches: images of the in-memory stream picked by index, shuffled and augmented by
the caller's generators, normalized on the training device (each batch made by the engine's
:func:`~learngene.engine.batch_of`), and the logits of a set of indices for the accuracy matrices."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from learngene.data import ImageSet
from learngene.data.transforms import BatchAugment
from learngene.engine import batch_of
from learngene.runtime import autocast

__all__ = ["Batches"]


class Batches:
    """Feeds normalized (optionally augmented) batches of an in-memory ImageSet, by image index, to a device (each
    batch made by the engine's :func:`~learngene.engine.batch_of`)."""

    def __init__(self, data: ImageSet, spec: dict[str, Any], device: torch.device, channels_last: bool = False):
        self.data = data
        self.spec = spec
        self.device = device
        self.channels_last = channels_last

    def prepare(self, idx: torch.Tensor, augment: BatchAugment | None = None, gen: torch.Generator | None = None):
        return batch_of(self.data.images, idx, augment=augment, generator=gen, spec=self.spec, device=self.device,
                        channels_last=self.channels_last)

    def iterate(
        self,
        idx: torch.Tensor,
        batch_size: int,
        shuffle_gen: torch.Generator | None = None,
        augment: BatchAugment | None = None,
        aug_gen: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = idx[torch.randperm(len(idx), generator=shuffle_gen)] if shuffle_gen is not None else idx
        aug_gen = aug_gen if aug_gen is not None else shuffle_gen
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            yield chunk, self.prepare(chunk, augment, aug_gen)

    @torch.no_grad()
    def logits(self, model: nn.Module, idx: torch.Tensor, batch_size: int = 256, amp: bool = False) -> torch.Tensor:
        model.eval()
        outs = []
        for _, x in self.iterate(idx, batch_size):
            with autocast(self.device, amp):
                outs.append(model(x).float())
        if not outs:
            return torch.empty(0, model.num_classes, device=self.device)
        return torch.cat(outs)

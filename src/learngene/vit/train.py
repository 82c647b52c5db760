"""How every model of a transformer run trains: the classes' images as a task, one recipe, cached results.

:class:`Task` holds a classification task over some classes of an ImageSet (uint8 images on the device, each
class split into train and test images); :class:`Recipe` is the run's optimization (AdamW, learning rate,
weight decay, batch size, schedule, AMP, augmentation, device, progress) and turns it into the engine's options,
so the ancestry, the auxiliary net, the criterion's candidates, the descendants and ``inherit`` all train through
:func:`learngene.engine.fit` the same way.  :func:`fingerprint` (from :mod:`learngene.models.cache`) and
:class:`NetworkRecord` serve the run's cache (a rerun reuses every entry whose fingerprint still matches).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from learngene.engine import Batches, accuracy, cosine_schedule
from learngene.errors import DataError
from learngene.models.cache import fingerprint  # noqa: F401 - the run's cache keys (re-exported)
from learngene.models.heads import CosineClassifier
from learngene.models.vit import vit_config, vit_cosine_config

__all__ = ["NetworkRecord", "Recipe", "Task", "fingerprint", "split_per_class"]


class NetworkRecord:
    """What ``save_network`` needs of a model (``config()`` and ``state_dict()``) for a plain timm ViT."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def config(self) -> dict[str, Any]:
        # a few-shot descendant's cosine head is rebuilt by the "vit_cosine" architecture
        return vit_cosine_config(self.model) if isinstance(self.model.head, CosineClassifier) else vit_config(self.model)

    def state_dict(self) -> dict[str, Tensor]:
        return self.model.state_dict()


def split_per_class(labels: Tensor, n_classes: int, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Train/test indices: of each class's images, round(test_fraction * n) (at least 1) go to the test set."""
    gen = torch.Generator().manual_seed(int(seed))
    train, test = [], []
    for c in range(n_classes):
        members = (labels == c).nonzero().flatten()
        if len(members) < 2:
            raise DataError(f"class {c} has {len(members)} image(s); a train/test split needs at least 2 per class")
        members = members[torch.randperm(len(members), generator=gen)]
        k = min(len(members) - 1, max(1, round(test_fraction * len(members))))
        test.append(members[:k])
        train.append(members[k:])
    return torch.cat(train), torch.cat(test)


class Task:
    """A classification task over some classes of an ImageSet: uint8 train/test images on the device."""

    def __init__(self, data: Any, classes: Sequence[str], spec: Mapping[str, Any], test_fraction: float,
                 seed: int, device: torch.device) -> None:
        idx = torch.cat([data.indices_of(c) for c in classes])
        local = torch.cat([torch.full((len(data.indices_of(c)),), i, dtype=torch.int64)
                           for i, c in enumerate(classes)])
        tr, te = split_per_class(local, len(classes), test_fraction, seed)
        self.classes = list(classes)
        self.spec = spec
        self.train_x, self.train_y = data.images[idx[tr]].to(device), local[tr].to(device)
        self.test_x, self.test_y = data.images[idx[te]].to(device), local[te].to(device)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def accuracy(self, model: nn.Module) -> float:
        return accuracy(model, self.test_x, self.test_y, spec=self.spec, batch_size=512)

    def sizes(self) -> dict[str, int]:
        return {"classes": self.num_classes, "train": len(self.train_y), "test": len(self.test_y)}


@dataclass(frozen=True)
class Recipe:
    """The optimization every model of a transformer run (and ``inherit``) trains with."""

    lr: float
    weight_decay: float
    batch_size: int
    schedule: str = "cosine"  # cosine (per step, no warm-up) | constant
    amp: bool = False
    augment: str = "none"
    device: torch.device = torch.device("cpu")
    progress: bool = False
    descendant_lr: float | None = None  # descendants and the criterion's candidates; None: lr

    @classmethod
    def from_config(cls, cfg: Any, device: torch.device, progress: bool = False) -> Recipe:
        t = cfg.train
        return cls(lr=t.lr, weight_decay=t.weight_decay, batch_size=t.batch_size, schedule=cfg.vit.schedule, amp=t.amp,
                   augment=cfg.data.augment, device=device, progress=progress, descendant_lr=cfg.individual.lr)

    @property
    def child_lr(self) -> float:
        return self.descendant_lr or self.lr

    def batches(self, x: Tensor, y: Tensor, spec: Mapping[str, Any] | None, seed: int) -> Batches:
        """Shuffled, augmented, normalized mini-batches of uint8 images ``x``."""
        return Batches(x, y, self.batch_size, spec=spec, augment=self.augment, seed=seed)

    def task_batches(self, task: Task, seed: int) -> Batches:
        return self.batches(task.train_x, task.train_y, task.spec, seed)

    def options(self, *, seed: int, lr: float | None = None, hook: Callable | None = None,
                only: Sequence[nn.Parameter] | None = None, schedule: bool = True,
                evaluate: Callable[[nn.Module], float] | None = None, eval_epochs: Sequence[int] | None = None,
                desc: str = "training") -> dict[str, Any]:
        """Keyword arguments of :func:`learngene.engine.fit`: AdamW at ``lr`` (default the recipe's) over the
        trainable parameters (``only``: just these, e.g. a probe's head) with ``hook`` before each step."""
        keep = None if only is None else {id(p) for p in only}
        rate = self.lr if lr is None else lr

        def optimizer(params: list[nn.Parameter]) -> torch.optim.Optimizer:
            if keep is not None:
                params = [p for p in params if id(p) in keep]
            opt = torch.optim.AdamW(params, lr=rate, weight_decay=self.weight_decay)
            if hook is not None:
                opt.register_step_pre_hook(hook)
            return opt

        return {"optimizer": optimizer, "scheduler": cosine_schedule if schedule and self.schedule == "cosine" else None,
                "device": self.device, "amp": self.amp, "seed": seed, "evaluate": evaluate,
                "eval_epochs": eval_epochs, "progress": self.progress, "desc": desc}

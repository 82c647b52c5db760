"""torch.distributed glue: read torchrun's environment, pick the backend, and a few collective helpers.

Launch with ``torchrun --nproc_per_node N -m learngene collective|evaluate|run ...``. Without torchrun every
helper degrades to the single-process behaviour, so the rest of the code calls them unconditionally.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from learngene.errors import ConfigError
from learngene.runtime import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()


def init_distributed(device_arg: str | None = "auto") -> tuple[DistInfo, torch.device]:
    """Start the process group when launched by torchrun: NCCL on CUDA, gloo on CPU (timm's habit)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_arg)
    if world <= 1:
        return SINGLE, device
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices: use --nproc_per_node "
                f"<= {torch.cuda.device_count()} or --device cpu"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=_dt.timedelta(minutes=30))
    return DistInfo(rank, world, local, backend), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj: Any, src: int = 0) -> Any:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers_(info: DistInfo, module: torch.nn.Module, src: int = 0) -> None:
    """Every rank takes rank ``src``'s buffers (BatchNorm running statistics), in place.

    Why: DDP syncs buffers at the start of each training forward only, so after an epoch's last batch the
    ranks' running statistics differ slightly; evaluation, recognition, the Fisher and the checkpoint (rank 0's)
    would otherwise see different models on different ranks, and a resumed run would differ from an
    uninterrupted one.
    """
    if not info.enabled:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src)


def weighted_mean_(info: DistInfo, tensors: dict[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
    """Average per-rank means whose sample counts differ: sum(w_r * x_r) / sum(w_r), in place."""
    if not info.enabled:
        return tensors
    device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
    total = torch.tensor([float(weight)], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    for t in tensors.values():
        t.mul_(weight)
        dist.all_reduce(t)
        t.div_(float(total.item()))
    return tensors


def all_reduce_sum(info: DistInfo, values: list[float], device: torch.device | str = "cpu") -> list[float]:
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_true(info: DistInfo, flag: bool, device: torch.device | str = "cpu") -> bool:
    """Every rank must take the same branch (e.g. stop on a NaN), or the next collective call hangs."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())

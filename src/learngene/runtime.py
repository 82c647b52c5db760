"""Device selection, seeding and mixed precision: the few places where the hardware shows through."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from learngene.errors import ConfigError


def resolve_device(name: str | None = "auto") -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA on a machine without it is an error, not a silent CPU run."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use --device cpu or --device auto"
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (seed, task, epoch...), identical across processes and runs."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)



@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | str | None = None) -> Iterator[None]:
    """Run a block with torch's global RNG seeded by ``seed``, then give the caller's RNG state back.

    Why: weight initialization and dropout draw from the global RNG, and a library must not reseed its user's
    global RNG. Inside the block the draws are exactly those of ``torch.manual_seed(seed)``, so results are
    reproducible; outside it nothing changed (the CPU state, and the given CUDA device's, are restored).
    ``seed=None`` runs the block on the global RNG as it is.
    """
    if seed is None:
        yield
        return
    with rng_preserved(device):
        torch.manual_seed(int(seed))  # seeds the CUDA devices too, as a plain manual_seed would
        yield


@contextlib.contextmanager
def rng_preserved(device: torch.device | str | None = None) -> Iterator[None]:
    """Whatever the block draws from torch's global RNG (a module's default init that is overwritten anyway),
    the caller's RNG state is as before afterwards."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        yield


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Autocast on the actual device type (a hard-coded 'cuda' silently does nothing elsewhere)."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """Loss scaling only matters for CUDA fp16; elsewhere the scaler is a no-op."""
    return torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")



def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar that draws only on a terminal: redirected stderr (a log file, a pipe, CI) gets no frames.

    Why: tqdm redraws its line with carriage returns; in a log file every redraw stays, so a run's log fills with
    hundreds of half-drawn bars. ``disable=None`` is tqdm's own rule for that (draw only when the stream is a
    TTY); ``enabled=False`` (``--quiet``, rank > 0) turns the bar off everywhere.
    """
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    # a notebook draws a widget, not carriage returns: there the bar stays on (its stream is never a TTY)
    widget = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)
    return tqdm(iterable, disable=(False if widget else None) if enabled else True, **kwargs)


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info

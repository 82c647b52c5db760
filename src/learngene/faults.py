"""Fault injection for the reliability tests: ``LEARNGENE_KILL_AT=point:n`` SIGKILLs the process the n-th
time it reaches ``point`` (batch, checkpoint_write, task_end, growth). Unset, it costs one dict lookup."""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def maybe_kill(point: str) -> None:
    spec = os.environ.get("LEARNGENE_KILL_AT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

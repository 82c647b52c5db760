"""The collective trainer's plugins, one per module (Avalanche's layout); :mod:`.base` documents the lifecycle."""

from __future__ import annotations

from learngene.collective.plugins.base import Batch, Plugin, Trainer
from learngene.collective.plugins.checkpoint import CheckpointPlugin
from learngene.collective.plugins.distillation import DistillationPlugin
from learngene.collective.plugins.ewc import EWCPlugin
from learngene.collective.plugins.faults import FaultPlugin
from learngene.collective.plugins.growth import GrowthPlugin
from learngene.collective.plugins.openworld import OpenWorldPlugin
from learngene.collective.plugins.recorder import RecorderPlugin
from learngene.collective.plugins.replay import ReplayPlugin

__all__ = [
    "Batch",
    "CheckpointPlugin",
    "DistillationPlugin",
    "EWCPlugin",
    "FaultPlugin",
    "GrowthPlugin",
    "OpenWorldPlugin",
    "Plugin",
    "RecorderPlugin",
    "ReplayPlugin",
    "Trainer",
]

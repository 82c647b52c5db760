"""One exception family, so the CLI can turn every user-facing problem into a clear message.

Each error says what is wrong *and* how to fix it; the CLI prints ``str(err)`` without a traceback.
"""

from __future__ import annotations


class LearngeneError(Exception):
    """Base class of every error meant for the user (bad data, config, file, device)."""


class DataError(LearngeneError):
    """Missing, malformed or insufficient data (paths, class folders, image counts, splits)."""


class ConfigError(LearngeneError):
    """An impossible or malformed configuration (unknown key, wrong type, bad value, unknown preset)."""


class GeneError(LearngeneError):
    """A learngene artifact that is foreign, truncated, tampered with or incompatible."""


class CheckpointError(LearngeneError):
    """A checkpoint that is missing, corrupt or does not belong to this run."""


class ModelError(LearngeneError):
    """An architecture request that cannot be built (shape or channel mismatch, bad growth)."""


class DiskFullError(LearngeneError):
    """A write failed because the disk (or the user's quota) is full; the file being written is left unchanged."""


class NonFiniteError(LearngeneError):
    """A NaN/Inf loss or gradient during training."""

"""learngene: the Learngene paradigm (Wang et al., AAAI 2022) as a PyTorch library.

Data flows one way: stream -> collective -> criterion -> gene -> individual -> benchmark.
"""

from learngene.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    GeneError,
    LearngeneError,
    ModelError,
    NonFiniteError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "GeneError",
    "LearngeneError",
    "ModelError",
    "NonFiniteError",
    "__version__",
]

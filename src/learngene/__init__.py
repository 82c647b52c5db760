"""learngene: the Learngene paradigm (Wang et al., AAAI 2022) as a PyTorch library.

Data flows one way: stream -> collective -> criterion -> gene -> individual -> evaluation. The names below are
the public API (see the README's Python quickstart); they are imported on first use, so ``import learngene``
and the CLI's ``--help`` stay instant (no torch until a name that needs it is touched).
"""

from __future__ import annotations

from learngene.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DiskFullError,
    GeneError,
    LearngeneError,
    ModelError,
    NonFiniteError,
)

__version__ = "0.2.0"

# public name -> module that defines it (in the order of the data flow)
_API = {
    # configuration and registries
    "Config": "learngene.config",
    "IndividualConfig": "learngene.config",
    "load_config": "learngene.config",
    "Registry": "learngene.registry",
    # data: any torch Dataset -> ImageSet -> TaskStream
    "ImageSet": "learngene.data",
    "TaskStream": "learngene.data",
    "ClassSplit": "learngene.data",
    "load_source": "learngene.data",
    "register_source": "learngene.data",
    # models
    "create_model": "learngene.models",
    "list_models": "learngene.models",
    "model_from_config": "learngene.models",
    "register_model": "learngene.models",
    # the collective model: a trainer with plugins
    "CollectiveTrainer": "learngene.collective.trainer",
    "Plugin": "learngene.collective.plugins",
    "collective_from_config": "learngene.collective.learner",
    "OpenWorldPlugin": "learngene.collective.plugins",
    "GrowthPlugin": "learngene.collective.plugins",
    "EWCPlugin": "learngene.collective.plugins",
    "ReplayPlugin": "learngene.collective.plugins",
    "DistillationPlugin": "learngene.collective.plugins",
    "RecorderPlugin": "learngene.collective.plugins",
    "CheckpointPlugin": "learngene.collective.plugins",
    "EWC": "learngene.collective.ewc",
    "GradientRecorder": "learngene.collective.recorder",
    "GrowthSchedule": "learngene.models.schedule",
    # criterion and gene
    "register_criterion": "learngene.criterion",
    "Learngene": "learngene.gene",
    "Gene": "learngene.kinds",
    "load_gene": "learngene.kinds",
    "inherit": "learngene.kinds",
    "select_learngene": "learngene.run",
    # individual models
    "build_individual": "learngene.individual",
    "train_few_shot": "learngene.individual",
    "save_individual": "learngene.individual",
    "load_individual": "learngene.individual",
    "predict": "learngene.prediction",
    # transformer learngenes
    "TransformerGene": "learngene.vit.gene",
    "extract_tleg": "learngene.vit.gene",
    "extract_heur_lg": "learngene.vit.gene",
    "ExpandedViT": "learngene.models.expansion",
    "build_descendant": "learngene.vit.descendants",
    "register_descendant_method": "learngene.vit.methods",
    "run_vit": "learngene.vit.run",
    # evaluation and whole runs
    "register_method": "learngene.evaluate",
    "run_collective": "learngene.collective_run",
    "run_paradigm": "learngene.run",
}
_RENAMED = {"collective_from_config": "from_config"}

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DiskFullError",
    "GeneError",
    "LearngeneError",
    "ModelError",
    "NonFiniteError",
    "__version__",
    *_API,
]


def __getattr__(name: str) -> object:
    import importlib  # here, not at the top: the package namespace holds the public API only

    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'learngene' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    """The public API (and the submodules imported so far); not the helpers of this file."""
    return sorted({n for n in globals() if not n.startswith("_") or n.startswith("__")} | set(_API))


del annotations  # the __future__ import's flag is not part of the API


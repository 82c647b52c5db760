"""Models: the expandable VGG collective model, its registry, and function-preserving growth.

``create_model(name, **overrides)`` builds a registered preset (``list_models()`` names them);
``model_from_config(model.config())`` rebuilds any model, grown or not, from its shape record.
"""

from __future__ import annotations

# the built-in models and architectures register themselves when imported: here, so that every user of the
# registries (and a user registering a name of their own) finds them there
from learngene.models import expansion, individual, vit  # noqa: E402, F401, I001
from learngene.models.growth import (
    GrowthPlan,
    deepen,
    expand_classes,
    identity_block,
    plan_deepen,
    plan_expand_classes,
    plan_widen,
    widen,
)
from learngene.models.layers import ConvBlock
from learngene.models.registry import (
    create_model,
    list_architectures,
    list_models,
    model_from_config,
    register_architecture,
    register_model,
)
from learngene.models.schedule import GrowthSchedule, paper_schedule
from learngene.models.vgg import ExpandableVGG

__all__ = [
    "ConvBlock",
    "ExpandableVGG",
    "GrowthPlan",
    "GrowthSchedule",
    "create_model",
    "deepen",
    "expand_classes",
    "identity_block",
    "list_architectures",
    "list_models",
    "model_from_config",
    "paper_schedule",
    "plan_deepen",
    "plan_expand_classes",
    "plan_widen",
    "register_architecture",
    "register_model",
    "widen",
]

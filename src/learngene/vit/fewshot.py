"""Few-shot training of transformer descendants: the individual recipe of the CNN paradigm, on a timm ViT.

Fine-tuning a whole ViT from a random head on one image per class throws away what the inherited blocks know
(issue 16: a TLEG descendant then barely beats chance).  So a descendant is trained on a support set exactly as an
individual model is (:func:`learngene.individual.train_few_shot`, one recipe for both paradigms):

* its head becomes a cosine classifier imprinted with the class prototypes (``individual.classifier``,
  ``individual.imprint``): before the first step it *is* cosine nearest-class-mean on the inherited features;
* a head stage trains only what is fresh, every inherited tensor frozen (``individual.head_epochs``);
* then everything trains gently (``individual.epochs``, ``individual.inherit_mode``: EWC towards the gene, a lower
  rate for inherited tensors, or frozen), on augmented support images (``individual.augment``).

"Inherited" is every tensor the descendant took from its learngene (:attr:`Descendant.inherited`: all but the head
for TLEG and the truncated ancestry; the embeddings and the stacked blocks for Heur-LG); a scratch descendant has
none and trains everything as one stage.  LayerNorm keeps no running statistics, so the recipe's BatchNorm handling
does nothing here.  The rate is ``vit.fewshot_lr`` (SGD, as for individual models): in this paradigm
``individual.lr`` is the full-data descendants' AdamW rate.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learngene.config import Config, IndividualConfig
from learngene.individual import train_few_shot
from learngene.models.heads import make_classifier
from learngene.runtime import seeded
from learngene.vit.descendants import Descendant

__all__ = ["RECIPE_KEYS", "attach_head", "features", "fewshot_record", "fewshot_settings", "ncm_accuracy",
           "train_descendant", "train_episode"]

# the settings of the recipe a report records (and that `learngene inherit` reads from a transformer gene)
RECIPE_KEYS = ("classifier", "imprint", "head_epochs", "epochs", "batch_size", "schedule", "momentum", "weight_decay",
               "inherit_mode", "ewc_lambda", "lr_scale", "augment")


def fewshot_settings(cfg: Config) -> IndividualConfig:
    """The individual recipe's settings for a transformer descendant: ``[individual]`` at ``vit.fewshot_lr``."""
    return replace(cfg.individual, lr=cfg.vit.fewshot_lr)


def fewshot_record(cfg: Config) -> dict[str, Any]:
    s = fewshot_settings(cfg)
    return {"lr": s.lr, **{k: getattr(s, k) for k in RECIPE_KEYS}}


def attach_head(model: nn.Module, num_classes: int, kind: str = "cosine") -> nn.Module:
    """Give a timm ViT a fresh ``num_classes`` head of ``kind`` (``cosine`` or ``linear``) on its pooled features."""
    width = model.head.in_features if isinstance(model.head, nn.Linear) else int(model.embed_dim)
    model.head = make_classifier(kind, width, num_classes)
    model.num_classes = num_classes
    return model


@torch.no_grad()
def features(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """The pooled, normalized features a ViT's head reads (eval mode, in chunks)."""
    was = model.training
    model.eval()
    out = torch.cat([model.forward_head(model.forward_features(x[i:i + batch_size]), pre_logits=True)
                     for i in range(0, len(x), batch_size)])
    model.train(was)
    return out


def ncm_accuracy(model: nn.Module, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> float:
    """Cosine nearest-class-mean on the model's untrained features: the accuracy an imprinted cosine head starts
    from, and the bar a trained descendant must clear (it is the gene used as it is)."""
    fs, fq = features(model, sx), features(model, qx)
    classes = int(sy.max()) + 1
    protos = torch.stack([fs[sy == c].mean(0) for c in range(classes)])
    pred = (F.normalize(fq, dim=1) @ F.normalize(protos, dim=1).t()).argmax(1)
    return float((pred == qy).float().mean())


def train_descendant(d: Descendant, sx: Tensor, sy: Tensor, settings: IndividualConfig, *, seed: int,
                     qx: Tensor | None = None, qy: Tensor | None = None, curve_every: int = 1) -> dict[str, Any]:
    """Train descendant ``d`` (its model's head replaced) on normalized support images with the individual recipe;
    returns :func:`~learngene.individual.train_few_shot`'s record (``accuracy`` and a curve with a query set)."""
    classes = int(sy.max()) + 1
    with seeded(seed):  # the fresh head's draws, without touching the caller's RNG
        attach_head(d.model, classes, settings.classifier)
    inherited = tuple(k for k in d.inherited if not k.startswith("head."))
    return train_few_shot(d.model, sx, sy, settings, query_x=qx, query_y=qy, seed=seed, use_gene_ewc=bool(inherited),
                          curve_every=curve_every, inherited=inherited)


def train_episode(d: Descendant, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, settings: IndividualConfig, *,
                  seed: int) -> float:
    """Query accuracy of descendant ``d`` after the recipe on one episode."""
    return float(train_descendant(d, sx, sy, settings, seed=seed, qx=qx, qy=qy,
                                  curve_every=max(1, settings.head_epochs + settings.epochs))["accuracy"])

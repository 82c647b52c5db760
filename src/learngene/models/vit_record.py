"""The ViT shape record: every key a timm ``VisionTransformer`` of this package is described by, its defaults and
checks (:func:`vit_kwargs`), the model built from it (:func:`construct_vit`) and its complete form
(:func:`full_config`). One clear line where timm cannot be imported (:func:`require_timm`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from learngene.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from timm.models.vision_transformer import VisionTransformer

__all__ = ["VIT_DEFAULTS", "VIT_POOLS", "construct_vit", "full_config", "require_timm", "vit_kwargs"]

# every key of the shape record, with the value a fresh config gets when the key is left out
VIT_DEFAULTS: dict[str, Any] = {
    "img_size": 32,
    "patch_size": 4,
    "in_chans": 3,
    "num_classes": 5,
    "embed_dim": 96,
    "depth": 8,
    "num_heads": 3,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "qk_norm": False,
    "scale_attn_norm": False,
    "scale_mlp_norm": False,
    "proj_bias": True,
    "init_values": None,
    "class_token": False,
    "reg_tokens": 0,
    "no_embed_class": False,
    "pos_embed": "learn",
    "pre_norm": False,
    "final_norm": True,
    "fc_norm": True,
    "global_pool": "avg",
    "pool_include_prefix": False,
    "dynamic_img_size": False,
    "dynamic_img_pad": False,
    "drop_rate": 0.0,
    "pos_drop_rate": 0.0,
    "patch_drop_rate": 0.0,
    "proj_drop_rate": 0.0,
    "attn_drop_rate": 0.0,
    "drop_path_rate": 0.0,
    "act_layer": "gelu",
    "norm_eps": 1e-6,
}
VIT_POOLS = ("", "avg", "avgmax", "max", "token", "map")
_ACTS = ("gelu", "gelu_tanh", "relu", "silu", "timm_gelu", "timm_gelu_tanh", "quick_gelu")
_BOOL_KEYS = (
    "qkv_bias",
    "qk_norm",
    "scale_attn_norm",
    "scale_mlp_norm",
    "proj_bias",
    "class_token",
    "no_embed_class",
    "pre_norm",
    "final_norm",
    "fc_norm",
    "pool_include_prefix",
    "dynamic_img_size",
    "dynamic_img_pad",
)
_RATE_KEYS = (
    "drop_rate",
    "pos_drop_rate",
    "patch_drop_rate",
    "proj_drop_rate",
    "attn_drop_rate",
    "drop_path_rate",
)


# ---------------------------------------------------------------------- validation helpers
def _int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ModelError(f"ViT config {what} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ModelError(f"ViT config {what} must be >= {minimum}, got {value!r}")
    return int(value)


def _size(value: Any, what: str) -> int | tuple[int, int]:
    """An int or a [h, w] pair (JSON turns tuples into lists)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ModelError(f"ViT config {what} must be an int or a [height, width] pair, got {value!r}")
        h, w = (_int(v, what, 1) for v in value)
        return h if h == w else (h, w)
    return _int(value, what, 1)


def _float(value: Any, what: str, lo: float, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelError(f"ViT config {what} must be a finite number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ModelError(f"ViT config {what} must be {bounds}, got {value!r}")
    return float(value)


def _norm_layer(eps: float) -> Any:
    """timm's LayerNorm with the recorded eps (``None`` keeps timm's default, eps 1e-6)."""
    if eps == 1e-6:
        return None
    from timm.layers import LayerNorm

    return functools.partial(LayerNorm, eps=eps)


def _act_layer(name: str) -> Any:
    if name == "gelu":
        return None  # VisionTransformer's default: torch's nn.GELU
    if name == "gelu_tanh":
        return functools.partial(nn.GELU, approximate="tanh")
    if name == "relu":
        return nn.ReLU
    if name == "silu":
        return nn.SiLU
    from timm.layers import get_act_layer

    return get_act_layer({"timm_gelu": "gelu", "timm_gelu_tanh": "gelu_tanh"}.get(name, name))


def require_timm() -> None:
    """One clear line where timm cannot be imported: not installed (the CPU-only install of the README leaves it
    out), or installed beside a torchvision built for another torch (``operator torchvision::nms does not
    exist``: timm imports torchvision)."""
    try:
        import timm  # noqa: F401
    except (ImportError, RuntimeError, OSError) as err:
        raise ModelError(
            f"the transformer learngenes need timm, which cannot be imported here ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160] if str(err) else 'not installed'}); install the full set as the README's "
            "first command does (pip install torch==2.14.1 torchvision==0.29.1 && pip install -e .), or use the "
            "CNN paradigm (presets without vit-), which needs neither timm nor torchvision"
        ) from None


def vit_kwargs(cfg: Mapping[str, Any], *, allow_depth_zero: bool = False) -> dict[str, Any]:
    """Validate a shape record and turn it into ``VisionTransformer`` keyword arguments."""
    require_timm()  # every ViT (a preset, a gene's record, a descendant) is built from a record checked here
    if not isinstance(cfg, Mapping):
        raise ModelError(f"ViT config must be a dict (from vit_config()), got {type(cfg).__name__}")
    name = cfg.get("name", "vit")
    if name != "vit":
        raise ModelError(f"config is for architecture {name!r}, not 'vit'; use model_from_config")
    unknown = sorted(set(cfg) - set(VIT_DEFAULTS) - {"name"})
    if unknown:
        raise ModelError(
            f"unknown ViT config keys {unknown}; valid keys: {sorted(VIT_DEFAULTS)} "
            "(was the config written by a newer version?)"
        )
    c = {**VIT_DEFAULTS, **{k: v for k, v in cfg.items() if k != "name"}}
    out: dict[str, Any] = {
        "img_size": _size(c["img_size"], "img_size"),
        "patch_size": _size(c["patch_size"], "patch_size"),
        "in_chans": _int(c["in_chans"], "in_chans", 1),
        "num_classes": _int(c["num_classes"], "num_classes", 0),
        "embed_dim": _int(c["embed_dim"], "embed_dim", 1),
        "depth": _int(c["depth"], "depth", 0 if allow_depth_zero else 1),
        "num_heads": _int(c["num_heads"], "num_heads", 1),
        "mlp_ratio": _float(c["mlp_ratio"], "mlp_ratio", 0.0),
        "reg_tokens": _int(c["reg_tokens"], "reg_tokens", 0),
    }
    if out["embed_dim"] % out["num_heads"]:
        raise ModelError(
            f"ViT embed_dim {out['embed_dim']} is not divisible by num_heads {out['num_heads']}; "
            "pick a head count that divides the width"
        )
    if int(out["embed_dim"] * out["mlp_ratio"]) < 1:
        raise ModelError(f"ViT mlp_ratio {out['mlp_ratio']} gives an empty MLP; use a ratio like 4.0")
    for key in _BOOL_KEYS:
        if not isinstance(c[key], bool):
            raise ModelError(f"ViT config {key} must be true or false, got {c[key]!r}")
        out[key] = c[key]
    for key in _RATE_KEYS:
        out[key] = _float(c[key], key, 0.0, 1.0)
    if c["init_values"] is not None:
        out["init_values"] = _float(c["init_values"], "init_values", 0.0)
    if c["pos_embed"] not in ("learn", "none"):
        raise ModelError(f"ViT config pos_embed must be 'learn' or 'none', got {c['pos_embed']!r}")
    out["pos_embed"] = c["pos_embed"]
    if c["global_pool"] not in VIT_POOLS:
        raise ModelError(f"ViT config global_pool must be one of {list(VIT_POOLS)}, got {c['global_pool']!r}")
    if c["global_pool"] == "token" and not out["class_token"]:
        raise ModelError("ViT global_pool 'token' needs class_token=true; use global_pool 'avg' without one")
    out["global_pool"] = c["global_pool"]
    if c["act_layer"] not in _ACTS:
        raise ModelError(f"ViT config act_layer must be one of {list(_ACTS)}, got {c['act_layer']!r}")
    out["act_layer"] = _act_layer(c["act_layer"])
    out["norm_layer"] = _norm_layer(_float(c["norm_eps"], "norm_eps", 0.0))
    return out


def construct_vit(kwargs: dict[str, Any], **extra: Any) -> VisionTransformer:
    from timm.models.vision_transformer import VisionTransformer

    try:
        return VisionTransformer(**{**kwargs, **extra})
    except (AssertionError, TypeError, ValueError) as err:
        raise ModelError(
            f"timm refused this ViT config ({err or type(err).__name__}); check the values"
        ) from err


def full_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The record with every key present, so two configs compare and serialize alike."""
    vit_kwargs(cfg, allow_depth_zero=True)  # validation only
    out = {"name": "vit", **VIT_DEFAULTS, **{k: v for k, v in cfg.items() if k != "name"}}
    for key in ("img_size", "patch_size"):
        if isinstance(out[key], (list, tuple)):
            out[key] = list(out[key]) if out[key][0] != out[key][1] else int(out[key][0])
    return out

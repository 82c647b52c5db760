"""Small timm vision transformers: registered presets, a JSON shape record, and stable block addressing.

Why timm's own ``VisionTransformer`` and not a private copy: descendants, ancestries and a user's locally
stored pretrained DeiT then share one class, one state-dict layout and one forward, so weights move between
them by name.  timm is imported lazily (inside functions) so ``import learngene`` stays cheap.

**Presets** are named ``vit_p{patch}_d{dim}_l{depth}``:

* ``patch 4`` on 32 px (64 tokens): the registered small family of the CPU protocol; best kept for the GPU;
* ``patch 8`` on 32 px and ``patch 7`` on 28 px (16 tokens): about 5x faster on CPU;
* ``dim`` 96 or 192 with one head per 32 channels; ``depth`` 4, 8 or 12 (any depth through ``depth=``).

Every preset defaults to no class token and global average pooling (``class_token=False, global_pool="avg"``).
timm 1.0.31 then turns the final norm into ``fc_norm`` (applied after pooling) and makes ``norm`` an
``Identity``: the final LayerNorm's weights live under ``fc_norm.weight`` / ``fc_norm.bias``.

**Stable names** (timm's): ``patch_embed.proj.*``, ``pos_embed``, ``cls_token`` / ``reg_token`` when
present, ``norm_pre.*`` (with ``pre_norm``), ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``,
``norm.*`` or ``fc_norm.*``, ``head.*``.  :func:`block_prefix` and friends address blocks by these names.

:func:`vit_config` turns any plain timm ``VisionTransformer`` into a JSON-able dict and
``model_from_config`` (architecture ``"vit"``) rebuilds an equal-shaped model from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from learngene.errors import ModelError
from learngene.models.registry import register_architecture, register_model
from learngene.models.vit_blocks import (
    BLOCK_PREFIX,
    EMBEDDING_PREFIXES,
    FINAL_NORM_PREFIXES,
    block_param_names,
    block_prefix,
    block_state_dict,
    load_block_state_dict,
    num_blocks,
    shared_state_dict,
    split_block_key,
)
from learngene.models.vit_record import (
    VIT_DEFAULTS,
    VIT_POOLS,
    construct_vit,
    full_config,
    require_timm,
    vit_kwargs,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from timm.models.vision_transformer import VisionTransformer

__all__ = [
    "BLOCK_PREFIX",
    "EMBEDDING_PREFIXES",
    "FINAL_NORM_PREFIXES",
    "VIT_PRESETS",
    "block_param_names",
    "block_prefix",
    "block_state_dict",
    "build_vit",
    "construct_vit",
    "build_vit_cosine",
    "full_config",
    "load_block_state_dict",
    "num_blocks",
    "require_timm",
    "shared_state_dict",
    "split_block_key",
    "vit_config",
    "vit_kwargs",
    "vit_cosine_config",
    "vit_preset_config",
]


@register_architecture("vit")
def build_vit(cfg: Mapping[str, Any]) -> VisionTransformer:
    """Build a timm ``VisionTransformer`` from a shape record (missing keys take the preset defaults)."""
    return construct_vit(vit_kwargs(cfg))


@register_architecture("vit_cosine")
def build_vit_cosine(cfg: Mapping[str, Any]) -> VisionTransformer:
    """A timm ``VisionTransformer`` whose head is a :class:`~learngene.models.heads.CosineClassifier` (a few-shot
    descendant, :mod:`learngene.vit.fewshot`): the record is the plain ViT's under the name ``vit_cosine``."""
    from learngene.models.heads import CosineClassifier

    model = build_vit({**cfg, "name": "vit"})
    model.head = CosineClassifier(model.head.in_features, int(cfg["num_classes"]))
    return model


def vit_cosine_config(model: nn.Module) -> dict[str, Any]:
    """The record :func:`build_vit_cosine` rebuilds ``model`` from (its head a CosineClassifier)."""
    from learngene.models.heads import CosineClassifier

    head = model.head
    if not isinstance(head, CosineClassifier):
        raise ModelError(f"vit_cosine_config needs a ViT with a cosine head, got a {type(head).__name__} head")
    model.head = nn.Linear(head.in_features, head.out_features, device="meta")  # what vit_config reads
    try:
        cfg = vit_config(model)
    finally:
        model.head = head
    return {**cfg, "name": "vit_cosine"}


# ---------------------------------------------------------------------- presets
VIT_PRESETS: dict[str, dict[str, Any]] = {}


def _preset_defaults(patch: int, dim: int, depth: int) -> dict[str, Any]:
    return {
        "img_size": 28 if patch == 7 else 32,
        "patch_size": patch,
        "embed_dim": dim,
        "depth": depth,
        "num_heads": dim // 32,
        "mlp_ratio": 4.0,
        "class_token": False,
        "global_pool": "avg",
        "fc_norm": True,
    }


def vit_preset_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The full shape record of preset ``name`` with ``overrides`` (``None`` values dropped), without building.

    Lets callers (e.g. an auxiliary net of another depth) reuse a preset's shape without paying for weights.
    """
    if name not in VIT_PRESETS:
        raise ModelError(f"unknown ViT preset {name!r}; available: {', '.join(sorted(VIT_PRESETS))}")
    unknown = sorted(set(overrides) - set(VIT_DEFAULTS))
    if unknown:
        raise ModelError(
            f"ViT preset {name!r} does not take {unknown}; valid overrides: {sorted(VIT_DEFAULTS)}"
        )
    return full_config({**VIT_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})


def _register_preset(name: str, defaults: dict[str, Any], doc: str) -> None:
    VIT_PRESETS[name] = defaults

    def preset(**overrides: Any) -> VisionTransformer:
        return build_vit(vit_preset_config(name, **overrides))

    preset.__name__ = preset.__qualname__ = name
    preset.__doc__ = doc
    register_model(preset)


for _patch, _tokens in ((4, 64), (8, 16), (7, 16)):
    for _dim in (96, 192):
        for _depth in (4, 8, 12):
            _name = f"vit_p{_patch}_d{_dim}_l{_depth}"
            _px = 28 if _patch == 7 else 32
            _register_preset(
                _name,
                _preset_defaults(_patch, _dim, _depth),
                f"ViT, patch {_patch} on {_px} px ({_tokens} tokens), width {_dim}, {_depth} blocks, avg pool.",
            )
_register_preset(
    "vit_test",
    {**_preset_defaults(4, 32, 2), "img_size": 16, "num_heads": 2},
    "Tiny ViT for tests: 16 px, patch 4 (16 tokens), width 32, 2 heads, 2 blocks.",
)


# ---------------------------------------------------------------------- describing a user's model
def _layernorm_eps(module: nn.Module, where: str) -> float:
    if not isinstance(module, nn.LayerNorm):
        raise ModelError(
            f"{where} is a {type(module).__name__}; only LayerNorm transformers can be described (no RMSNorm)"
        )
    if not module.elementwise_affine or module.bias is None:
        raise ModelError(f"{where} is a LayerNorm without weight or bias; vit_config needs affine LayerNorms")
    return float(module.eps)


def _act_name(module: nn.Module) -> str:
    from timm.layers.activations import GELU, GELUTanh, QuickGELU

    kind = type(module)
    if kind is nn.GELU:
        return "gelu" if module.approximate == "none" else "gelu_tanh"
    names = {
        nn.ReLU: "relu",
        nn.SiLU: "silu",
        GELU: "timm_gelu",
        GELUTanh: "timm_gelu_tanh",
        QuickGELU: "quick_gelu",
    }
    if kind not in names:
        raise ModelError(
            f"the MLP activation {kind.__name__} is not supported; vit_config knows GELU, ReLU, SiLU, QuickGELU"
        )
    return names[kind]


def _rate(module: nn.Module, attr: str) -> float:
    """A dropout rate, rounded so float32 schedule values (0.10000000149) read back as typed (0.1)."""
    return round(float(getattr(module, attr, 0.0) or 0.0), 6)


_SIGNATURE_ATTRS = (
    "num_heads",
    "head_dim",
    "eps",
    "p",
    "drop_prob",
    "prob",
    "approximate",
    "global_pool",
    "num_prefix_tokens",
    "no_embed_class",
    "pool_include_prefix",
    "dynamic_img_size",
    "img_size",
    "patch_size",
    "flatten",
    "strict_img_size",
    "dynamic_img_pad",
    "output_fmt",
)


def _signature(model: nn.Module) -> list[tuple[str, str, str]]:
    """What a config must reproduce, as (where, what, value): module kinds, forward-relevant attributes, shapes."""
    out: list[tuple[str, str, str]] = []
    for name, module in model.named_modules():
        where = name or "(model)"
        out.append(
            (where, "type", "LayerNorm" if isinstance(module, nn.LayerNorm) else type(module).__name__)
        )
        out.extend((where, a, str(getattr(module, a))) for a in _SIGNATURE_ATTRS if hasattr(module, a))
    out.extend((k, "shape", str(tuple(v.shape))) for k, v in model.state_dict().items())
    return out


def vit_config(model: nn.Module) -> dict[str, Any]:
    """The JSON-able shape record of a timm ``VisionTransformer`` (a preset's or a user's pretrained one).

    Everything is read from the module itself, then checked by rebuilding the record on the meta device and
    comparing module kinds, attributes and tensor shapes: a model the record cannot reproduce is refused with
    a :class:`ModelError` naming the first difference, never silently described wrong.
    """
    from timm.layers import Mlp, PatchEmbed
    from timm.layers.attention import Attention
    from timm.models.vision_transformer import Block, VisionTransformer

    if type(model) is not VisionTransformer:
        hint = ""
        if isinstance(model, VisionTransformer):
            hint = (
                " (subclasses such as DeiT's distilled model add tokens/heads a plain record cannot describe)"
            )
        raise ModelError(
            f"vit_config needs a plain timm VisionTransformer, got {type(model).__name__}{hint}; "
            "load your weights into timm.models.vision_transformer.VisionTransformer"
        )
    pe = model.patch_embed
    if type(pe) is not PatchEmbed:
        raise ModelError(f"patch embedding {type(pe).__name__} is not supported; only timm's PatchEmbed is")
    if not isinstance(pe.norm, nn.Identity):
        raise ModelError("a patch embedding with its own norm (embed_norm_layer) is not supported")
    if model.attn_pool is not None and model.global_pool != "map":
        raise ModelError(
            f"global_pool {model.global_pool!r} (attention pooling) is not supported; use avg/token/map"
        )
    blocks = list(model.blocks)
    if not blocks:
        raise ModelError("a VisionTransformer without blocks cannot be described; depth must be >= 1")
    b0 = blocks[0]
    for i, blk in enumerate(blocks):
        if type(blk) is not Block:
            raise ModelError(
                f"blocks.{i} is a {type(blk).__name__}; only timm's standard pre-norm Block is supported"
            )
        if type(blk.attn) is not Attention or getattr(blk.attn, "gate", None) is not None:
            raise ModelError(
                f"blocks.{i}.attn ({type(blk.attn).__name__}) is not timm's plain ungated Attention"
            )
        if type(blk.mlp) is not Mlp:
            raise ModelError(
                f"blocks.{i}.mlp is a {type(blk.mlp).__name__}; only timm's Mlp (no GLU/SwiGLU) is supported"
            )
    dim = int(model.embed_dim)
    attn = b0.attn
    if attn.attn_dim != dim:
        raise ModelError(f"attention width {attn.attn_dim} differs from embed_dim {dim}; not supported")
    hidden = b0.mlp.fc1.out_features
    mlp_ratio = hidden / dim
    if int(dim * mlp_ratio) != hidden:
        raise ModelError(f"MLP width {hidden} is not int(embed_dim * ratio) for any ratio; not supported")
    eps = _layernorm_eps(b0.norm1, "blocks.0.norm1")
    final = model.fc_norm if not isinstance(model.fc_norm, nn.Identity) else model.norm
    img, patch = tuple(pe.img_size), tuple(pe.patch_size)
    if pe.proj.bias is None and isinstance(model.norm_pre, nn.Identity):
        raise ModelError("a bias-free patch embedding without pre_norm is not supported (timm ties the two)")
    cfg: dict[str, Any] = {
        "name": "vit",
        "img_size": img[0] if img[0] == img[1] else list(img),
        "patch_size": patch[0] if patch[0] == patch[1] else list(patch),
        "in_chans": int(pe.proj.in_channels),
        "num_classes": int(model.head.out_features) if isinstance(model.head, nn.Linear) else 0,
        "embed_dim": dim,
        "depth": len(blocks),
        "num_heads": int(attn.num_heads),
        "mlp_ratio": float(mlp_ratio),
        "qkv_bias": attn.qkv.bias is not None,
        "qk_norm": not isinstance(attn.q_norm, nn.Identity),
        "scale_attn_norm": not isinstance(attn.norm, nn.Identity),
        "scale_mlp_norm": not isinstance(b0.mlp.norm, nn.Identity),
        "proj_bias": attn.proj.bias is not None,
        "init_values": None if isinstance(b0.ls1, nn.Identity) else 1e-5,  # shape only: gamma is learned
        "class_token": model.cls_token is not None,
        "reg_tokens": int(model.num_reg_tokens),
        "no_embed_class": bool(model.no_embed_class),
        "pos_embed": "learn" if model.pos_embed is not None else "none",
        "pre_norm": not isinstance(model.norm_pre, nn.Identity),
        "final_norm": not isinstance(final, nn.Identity),
        "fc_norm": not isinstance(model.fc_norm, nn.Identity),
        "global_pool": model.global_pool,
        "pool_include_prefix": bool(model.pool_include_prefix),
        "dynamic_img_size": bool(model.dynamic_img_size),
        "dynamic_img_pad": bool(pe.dynamic_img_pad),
        "drop_rate": _rate(model.head_drop, "p"),
        "pos_drop_rate": _rate(model.pos_drop, "p"),
        "patch_drop_rate": _rate(model.patch_drop, "prob"),
        "proj_drop_rate": _rate(attn.proj_drop, "p"),
        "attn_drop_rate": _rate(attn.attn_drop, "p"),
        "drop_path_rate": _rate(blocks[-1].drop_path1, "drop_prob"),
        "act_layer": _act_name(b0.mlp.act),
        "norm_eps": eps,
    }
    if cfg["global_pool"] not in VIT_POOLS:
        raise ModelError(f"global_pool {cfg['global_pool']!r} is not supported; use one of {list(VIT_POOLS)}")
    if not cfg["final_norm"]:
        cfg["fc_norm"] = False
    rebuilt = construct_vit(vit_kwargs(cfg), device="meta", weight_init="skip")
    want, got = _signature(model), _signature(rebuilt)
    if want != got:
        w, g = next((w, g) for w, g in zip([*want, ("-", "-", "-")], [*got, ("-", "-", "-")]) if w != g)
        raise ModelError(
            f"this VisionTransformer has a feature vit_config cannot describe: {w[0]} {w[1]} is {w[2]} "
            f"but a standard ViT of its shape has {g[0]} {g[1]} {g[2]}; use a standard timm ViT layout"
        )
    return cfg

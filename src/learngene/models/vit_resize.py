"""Moving a timm ViT's weights to another width, head count and depth: weight selection and DCT resizing.

Every tensor of a plain timm ``VisionTransformer`` is read as a grid of named axes (:func:`tensor_axes`), so a
change of width touches each axis that depends on it, and only those:

* ``D`` -- the embedding width (the residual stream), ``H`` -- the attention heads, ``E`` -- the width of one
  head (``D / H``), ``M`` -- the MLP's hidden width (``int(D * mlp_ratio)``);
* ``3`` -- q, k and v inside ``attn.qkv`` (never mixed), ``*`` -- an axis no width changes (input channels,
  patch pixels, tokens).

``attn.qkv.weight`` ``[3D, D]`` is read as ``[3, H, E, D]`` and ``attn.proj.weight`` ``[D, D]`` as ``[D, H, E]``, so
a narrower descendant keeps whole heads in place instead of cutting across them.

Two ways to move weights between shapes, used by the descendants of :mod:`learngene.vit.descendants` and the
frequency learngene of :mod:`learngene.vit.frequency`:

* **Weight selection** (Xu et al., ICLR 2024): along an axis that shrinks from ``n`` to ``m``, keep the
  elements ``floor(i * n / m)`` for ``i = 0..m-1`` (uniformly spaced; the same indices in every tensor, so the
  kept channels of the residual stream agree from block to block).  Along an axis that grows, the source fills
  the first ``n`` positions and the rest keep the target model's fresh initialization (:func:`select_into`).
* **DCT resizing** (FRONT-style): the orthonormal DCT-II (``scipy.fft.dctn``) along the resized axes, the
  coefficient block truncated or zero-padded to the target length, the inverse DCT, and a factor
  ``sqrt(m / n)`` per resized axis so that element magnitudes stay where they were (a LayerNorm weight of ones
  stays ones; a constant over depth stays constant).  :func:`dct_coefficients` / :func:`from_coefficients`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from learngene.errors import ModelError
from learngene.models.vit import build_vit, full_config, split_block_key, vit_config
from learngene.runtime import seeded

__all__ = [
    "RESIZABLE",
    "at_width",
    "axis_sizes",
    "dct_coefficients",
    "descendant_shape",
    "from_coefficients",
    "layout",
    "resize_axis_selected",
    "select_into",
    "select_width",
    "tensor_axes",
    "uniform_indices",
]

RESIZABLE = ("D", "H", "E", "M", "L")  # axes a change of shape may touch (L: the depth of stacked blocks)

# block-relative name -> axes of the tensor after reshaping (timm's layout of a pre-norm Block)
_BLOCK_AXES: dict[str, tuple[str, ...]] = {
    "norm1.weight": ("D",), "norm1.bias": ("D",), "norm2.weight": ("D",), "norm2.bias": ("D",),
    "attn.qkv.weight": ("3", "H", "E", "D"), "attn.qkv.bias": ("3", "H", "E"),
    "attn.q_norm.weight": ("E",), "attn.q_norm.bias": ("E",), "attn.k_norm.weight": ("E",), "attn.k_norm.bias": ("E",),
    "attn.norm.weight": ("H", "E"), "attn.norm.bias": ("H", "E"),
    "attn.proj.weight": ("D", "H", "E"), "attn.proj.bias": ("D",),
    "ls1.gamma": ("D",), "ls2.gamma": ("D",),
    "mlp.fc1.weight": ("M", "D"), "mlp.fc1.bias": ("M",),
    "mlp.norm.weight": ("M",), "mlp.norm.bias": ("M",),
    "mlp.fc2.weight": ("D", "M"), "mlp.fc2.bias": ("D",),
}
_SHARED_AXES: dict[str, tuple[str, ...]] = {
    "patch_embed.proj.weight": ("D", "*", "*", "*"), "patch_embed.proj.bias": ("D",),
    "pos_embed": ("*", "*", "D"), "cls_token": ("*", "*", "D"), "reg_token": ("*", "*", "D"),
    "norm_pre.weight": ("D",), "norm_pre.bias": ("D",), "norm.weight": ("D",), "norm.bias": ("D",),
    "fc_norm.weight": ("D",), "fc_norm.bias": ("D",),
}


def axis_sizes(cfg: Mapping[str, Any], depth: int | None = None) -> dict[str, int]:
    """``{"D", "H", "E", "M", "3", "L"}`` of a ViT shape record (``L``: ``depth`` or the record's)."""
    d, h = int(cfg["embed_dim"]), int(cfg["num_heads"])
    if d % h:
        raise ModelError(f"width {d} is not divisible by {h} heads; pick a head count that divides the width")
    return {"D": d, "H": h, "E": d // h, "M": int(d * float(cfg.get("mlp_ratio", 4.0))), "3": 3,
            "L": int(cfg["depth"] if depth is None else depth)}


def layout(name: str, block: bool) -> tuple[str, ...]:
    """The axis names of tensor ``name`` (block-relative for a block tensor); ModelError when unknown."""
    axes = (_BLOCK_AXES if block else _SHARED_AXES).get(name)
    if axes is None:
        raise ModelError(f"no width rule for the ViT tensor {name!r}; only timm's plain VisionTransformer blocks, "
                         "embeddings and norms can change width")
    return axes


def tensor_axes(name: str, shape: Sequence[int], sizes: Mapping[str, int],
                block: bool | None = None) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The named axes of tensor ``name`` (block-relative for block tensors) and the shape it is read as.

    ``*`` axes take their length from ``shape``; a tensor whose layout is unknown (a model this module cannot
    describe) is a :class:`ModelError`, never a silent guess."""
    axes = layout(name, block if block is not None else name in _BLOCK_AXES)
    if "*" in axes:  # read as it is: the named axes must have their record's lengths
        shaped = tuple(int(s) for s in shape)
        ok = len(shaped) == len(axes) and all(a == "*" or sizes[a] == s for a, s in zip(axes, shaped))
    else:
        shaped = tuple(sizes[a] for a in axes)
        ok = math.prod(shaped) == math.prod(shape)
    if not ok:
        raise ModelError(f"ViT tensor {name!r} of shape {list(shape)} does not fit the width record {dict(sizes)}")
    return axes, shaped


def uniform_indices(n: int, m: int) -> list[int]:
    """Weight selection's uniformly spaced indices: ``floor(i * n / m)`` for ``i < m`` (needs ``m <= n``)."""
    if not 1 <= m <= n:
        raise ModelError(f"cannot select {m} of {n} elements uniformly (need 1 <= m <= n)")
    return [i * n // m for i in range(m)]


def resize_axis_selected(t: Tensor, dim: int, m: int) -> Tensor:
    """``t`` with axis ``dim`` cut to ``m`` uniformly spaced elements (unchanged when it is not longer)."""
    n = t.shape[dim]
    if m >= n:
        return t
    return t.index_select(dim, torch.tensor(uniform_indices(n, m), device=t.device))


def select_into(source: Tensor, target: Tensor, axes: Sequence[str]) -> Tensor:
    """Weight selection of ``source`` into the shape of ``target`` (both already reshaped to ``axes``).

    Axes that shrink keep uniformly spaced elements; along axes that grow the source fills the first positions
    and the other elements of ``target`` (its fresh initialization) stay.  Returns a new tensor."""
    if source.ndim != target.ndim or len(axes) != source.ndim:
        raise ModelError(f"cannot select a {list(source.shape)} tensor into {list(target.shape)}")
    out = source
    for dim, (a, m) in enumerate(zip(axes, target.shape)):
        if a == "*" and out.shape[dim] != m:
            raise ModelError(f"axis {dim} of a {list(source.shape)} tensor is fixed ({a}) but the target has {m}")
        out = resize_axis_selected(out, dim, m)
    result = target.detach().clone()
    result[tuple(slice(0, s) for s in out.shape)] = out.to(result.dtype)
    return result


# ---------------------------------------------------------------------- DCT
def _scipy_fft() -> Any:
    try:
        import scipy.fft
    except ImportError as err:  # pragma: no cover - scipy is a declared dependency
        raise ModelError(f"the frequency learngene needs scipy ({err}); pip install 'scipy>=1.10'") from None
    return scipy.fft


def dct_coefficients(t: Tensor, axes: Sequence[str], keep: Mapping[str, int]) -> Tensor:
    """The orthonormal DCT-II of ``t`` along every axis named in ``keep``, cut to the first ``keep[a]``
    coefficients there (the low frequencies); other axes untouched.  float32."""
    fft = _scipy_fft()
    dims = [i for i, a in enumerate(axes) if a in keep]
    x = t.detach().double().cpu().numpy()
    coef = fft.dctn(x, type=2, norm="ortho", axes=dims) if dims else x
    cut = tuple(slice(0, keep[a]) if a in keep else slice(None) for a in axes)
    return torch.from_numpy(coef[cut].copy()).float()


def from_coefficients(coef: Tensor, axes: Sequence[str], full: Mapping[str, int], target: Mapping[str, int]) -> Tensor:
    """A tensor of length ``target[a]`` along every axis ``a`` in ``full`` from its low-frequency DCT block
    ``coef`` of an original with lengths ``full``: coefficients truncated or zero-padded to the target length,
    inverse DCT, times ``sqrt(target / full)`` per axis (element magnitudes kept)."""
    fft = _scipy_fft()
    x = coef.detach().double().cpu().numpy()
    dims = [i for i, a in enumerate(axes) if a in full]
    pad = [(0, 0)] * x.ndim
    cut = [slice(None)] * x.ndim
    scale = 1.0
    for i in dims:
        a, m = axes[i], int(target[axes[i]])
        if m < 1:
            raise ModelError(f"cannot build an axis {a} of length {m}")
        cut[i] = slice(0, min(m, x.shape[i]))
        pad[i] = (0, max(0, m - x.shape[i]))
        scale *= math.sqrt(m / int(full[a]))
    import numpy as np

    x = np.pad(x[tuple(cut)], pad)
    out = fft.idctn(x, type=2, norm="ortho", axes=dims) if dims else x
    return torch.from_numpy(np.ascontiguousarray(out * scale)).float()


def descendant_shape(cfg: Mapping[str, Any], width: int | None = None, heads: int | None = None) -> dict[str, Any]:
    """The shape record ``cfg`` at ``width`` with ``heads`` heads (``None``: the record's own).

    Default heads: the record's head count when it divides the width (heads grow wider or narrower), else the
    record's head width (``width / head_dim`` heads) when that divides it; otherwise name ``heads``."""
    cfg = full_config(cfg)
    w = cfg["embed_dim"] if width is None else width
    if isinstance(w, bool) or not isinstance(w, int) or w < 1:
        raise ModelError(f"descendant width must be an integer >= 1, got {w!r}")
    if heads is None:
        own, head_dim = cfg["num_heads"], cfg["embed_dim"] // cfg["num_heads"]
        if w % own == 0:
            heads = own
        elif w % head_dim == 0:
            heads = w // head_dim
        else:
            raise ModelError(f"width {w} is divisible neither by the gene's {own} heads nor by its head width "
                             f"{head_dim}; give the head count too (--heads / heads=), a divisor of {w}")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or w % heads:
        raise ModelError(f"heads must be an integer >= 1 that divides the width {w}, got {heads!r}")
    return {**cfg, "embed_dim": w, "num_heads": heads}


@torch.no_grad()
def select_width(source: Mapping[str, Tensor], source_cfg: Mapping[str, Any], keys: Sequence[str],
                 target: nn.Module) -> tuple[str, ...]:
    """Weight selection of the tensors ``keys`` of ``source`` (a state dict of a ViT of shape ``source_cfg``)
    into ``target`` (a freshly initialized ViT of another width / head count, same block names); the others keep
    their fresh values.  Returns the keys written (the inherited ones)."""
    src_sizes, dst_sizes = axis_sizes(source_cfg), axis_sizes(vit_config(target))
    state = target.state_dict()
    written = []
    for k in keys:
        if k.startswith("head.") or k not in state:
            continue
        src, dst = source[k], state[k]
        b = split_block_key(k)
        name = b[1] if b else k
        axes, s_shape = tensor_axes(name, tuple(src.shape), src_sizes, block=b is not None)
        _, d_shape = tensor_axes(name, tuple(dst.shape), dst_sizes, block=b is not None)
        state[k] = select_into(src.detach().reshape(s_shape), dst.reshape(d_shape), axes).reshape(dst.shape)
        written.append(k)
    target.load_state_dict(state, strict=True)
    return tuple(written)


def at_width(model: nn.Module, inherited: Sequence[str], width: int | None, heads: int | None,
             seed: int | None = None) -> tuple[nn.Module, tuple[str, ...]]:
    """``model`` moved to ``width`` / ``heads`` (default: its own) by weight selection of its ``inherited`` tensors
    into a fresh model of that shape (seeded by ``seed``): the model and the keys it inherited.  ``model`` itself
    when the shape does not change."""
    cfg = vit_config(model)
    shape = descendant_shape(cfg, width, heads)
    if shape["embed_dim"] == cfg["embed_dim"] and shape["num_heads"] == cfg["num_heads"]:
        return model, tuple(inherited)
    with seeded(seed):
        target = build_vit(shape)
    return target, select_width(model.state_dict(), cfg, inherited, target)

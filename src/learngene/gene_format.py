"""What a learngene manifest may say, checked field by field before any weight reaches a model.

Split from :mod:`learngene.gene` (the API) so the rules a file must obey are in one place: layer specs, input
normalization, the criterion record, provenance, and the tensors each layer must have (names, shapes, dtypes,
finite values). The generic parts of the format (checksum, tensor index, versions) are in
:mod:`learngene.artifacts`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from learngene.artifacts import dtype_name as _dtype_name
from learngene.artifacts import short as _short
from learngene.errors import GeneError

# Sanity bounds: far above any real learngene, low enough that a hostile manifest cannot make us allocate much.
_MAX_LAYERS = 1024
_MAX_CHANNELS = 1 << 16
_MAX_IMAGE_SIZE = 1 << 14
_MAX_IMAGE_CHANNELS = 64
_LAYER_TYPES = ("conv_block",)
_FLOAT_DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
_NAME_RE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


def _fmt_shape(shape: Any) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite JSON number that survives conversion to float (huge ints do not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False

def _to_plain_json(value: Any, what: str) -> Any:
    """Deep-copy ``value`` as strict JSON (tensors/numpy scalars become numbers); non-finite floats are refused."""

    def default(obj: Any) -> Any:
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if hasattr(obj, "item"):
            return obj.item()
        raise TypeError(f"{type(obj).__name__} is not JSON data")

    try:
        return json.loads(json.dumps(value, allow_nan=False, default=default))
    except (TypeError, ValueError, RecursionError) as err:
        raise GeneError(
            f"{what} must be plain JSON data (numbers, strings, lists, objects) with finite numbers ({err})"
        ) from None


@lru_cache(maxsize=256)
def block_spec(
    in_channels: int, out_channels: int, pool: bool, bias: bool
) -> tuple[dict[str, tuple[tuple[int, ...], torch.dtype]], int]:
    """Expected state-dict entries (suffix -> (shape, dtype)) and parameter count of one ConvBlock.

    Built on the meta device: it describes exactly what ``ConvBlock`` holds without allocating any memory, so
    validation follows the real module definition and cannot be made to allocate by a hostile manifest.
    """
    from learngene.models.layers import ConvBlock

    with torch.device("meta"):
        block = ConvBlock(in_channels, out_channels, pool=pool, bias=bias)
    spec = {k: (tuple(v.shape), v.dtype) for k, v in block.state_dict().items()}
    params = sum(p.numel() for p in block.parameters())
    return spec, params


def validate_layers(layers: Any) -> list[dict]:
    if not isinstance(layers, list) or not layers:
        raise GeneError(f"'layers' must be a non-empty list of layer specs, got {type(layers).__name__}")
    if len(layers) > _MAX_LAYERS:
        raise GeneError(f"'layers' has {len(layers)} entries, more than the supported {_MAX_LAYERS}")
    out: list[dict] = []
    seen: set[str] = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise GeneError(f"layer #{i} must be an object, got {type(layer).__name__}")
        name = layer.get("name")
        if not isinstance(name, str) or len(name) > 200 or not _NAME_RE.fullmatch(name):
            raise GeneError(
                f"layer #{i}: 'name' must be a module path such as 'features.10', got {_short(name)}"
            )
        if name in seen:
            raise GeneError(f"layer {name} appears twice; each gene layer must be a distinct module")
        seen.add(name)
        if layer.get("type") not in _LAYER_TYPES:
            raise GeneError(
                f"layer {name}: unsupported type {_short(layer.get('type'))}; this version supports {list(_LAYER_TYPES)}"
            )
        for key in ("in_channels", "out_channels"):
            value = layer.get(key)
            if not _is_int(value) or not 1 <= value <= _MAX_CHANNELS:
                raise GeneError(
                    f"layer {name}: '{key}' must be an integer in [1, {_MAX_CHANNELS}], got {_short(value)}"
                )
        if not isinstance(layer.get("pool"), bool):
            raise GeneError(f"layer {name}: 'pool' must be true or false, got {_short(layer.get('pool'))}")
        if not isinstance(layer.get("bias", True), bool):
            raise GeneError(f"layer {name}: 'bias' must be true or false, got {_short(layer.get('bias'))}")
        if not _is_int(layer.get("params")) or layer["params"] < 0:
            raise GeneError(
                f"layer {name}: 'params' must be a non-negative integer, got {_short(layer.get('params'))}"
            )
        out.append(
            {
                "name": name,
                "type": layer["type"],
                "in_channels": layer["in_channels"],
                "out_channels": layer["out_channels"],
                "pool": layer["pool"],
                "bias": layer.get("bias", True),
                "params": layer["params"],
            }
        )
    for prev, nxt in zip(out, out[1:]):
        if prev["out_channels"] != nxt["in_channels"]:
            raise GeneError(
                f"layer {nxt['name']}: in_channels {nxt['in_channels']} does not match out_channels "
                f"{prev['out_channels']} of the previous layer {prev['name']}; gene layers must chain"
            )
    return out


def validate_input_spec(spec: Any) -> dict:
    if not isinstance(spec, dict):
        raise GeneError(f"'input_spec' must be an object, got {type(spec).__name__}")
    spec = _to_plain_json(spec, "input_spec")
    for key, upper in (
        ("image_size", _MAX_IMAGE_SIZE),
        ("channels", _MAX_IMAGE_CHANNELS),
        ("spatial_in", _MAX_IMAGE_SIZE),
    ):
        value = spec.get(key)
        if not _is_int(value) or not 1 <= value <= upper:
            raise GeneError(f"input_spec: '{key}' must be an integer in [1, {upper}], got {_short(value)}")
    if spec["spatial_in"] > spec["image_size"]:
        raise GeneError(
            f"input_spec: 'spatial_in' ({spec['spatial_in']}) cannot exceed 'image_size' ({spec['image_size']})"
        )
    for key in ("mean", "std"):
        values = spec.get(key)
        if (
            not isinstance(values, list)
            or len(values) != spec["channels"]
            or not all(is_number(v) for v in values)
        ):
            raise GeneError(
                f"input_spec: '{key}' must be a list of {spec['channels']} finite numbers (one per image channel), "
                f"got {_short(values)}"
            )
    if any(v <= 0 for v in spec["std"]):
        raise GeneError(f"input_spec: 'std' values must be positive, got {_short(spec['std'])}")
    return validate_file_contract(spec, GeneError)


def validate_file_contract(spec: dict, error: type[Exception]) -> dict:
    """The file-reading half of an input spec: ``invert`` (how image files were turned into the training
    tensors: false, true or "auto") and ``resize`` ("crop", "pad", "stretch"). Artifacts written before these
    fields existed get the reading they were made with (no inversion, centre crop)."""
    from learngene.data.images import INVERT_CHOICES, RESIZE_MODES

    spec = {**spec, "invert": spec.get("invert", False), "resize": spec.get("resize", "crop")}
    if not isinstance(spec["invert"], (bool, str)) or spec["invert"] not in INVERT_CHOICES:
        raise error(f"input_spec: 'invert' must be true, false or \"auto\", got {_short(spec['invert'])}")
    if spec["resize"] not in RESIZE_MODES:
        raise error(f"input_spec: 'resize' must be one of {', '.join(RESIZE_MODES)}, got {_short(spec['resize'])}")
    return spec


def validate_criterion(criterion: Any) -> dict | None:
    if criterion is None:
        return None
    if not isinstance(criterion, dict):
        raise GeneError(f"'criterion' must be an object or null, got {type(criterion).__name__}")
    criterion = _to_plain_json(criterion, "criterion")
    if not isinstance(criterion.get("name"), str):
        raise GeneError(f"criterion: 'name' must be a string, got {_short(criterion.get('name'))}")
    if not isinstance(criterion.get("scores"), dict):
        raise GeneError(
            f"criterion: 'scores' must be an object, got {type(criterion.get('scores')).__name__}"
        )
    if not isinstance(criterion.get("reason"), str):
        raise GeneError(f"criterion: 'reason' must be a string, got {_short(criterion.get('reason'))}")
    return criterion


def validate_recipe(recipe: Any) -> dict | None:
    """The ``[individual]`` settings the gene's own run chose on pseudo-tasks (how to inherit it): every key an
    :class:`~learngene.config.IndividualConfig` field with a valid value, or None (not recorded)."""
    if recipe is None:
        return None
    if not isinstance(recipe, dict):
        raise GeneError(f"'individual' must be an object or null, got {type(recipe).__name__}")
    recipe = _to_plain_json(recipe, "individual")
    from learngene.config import IndividualConfig
    from learngene.errors import ConfigError

    try:
        IndividualConfig(**recipe)
    except (ConfigError, TypeError) as err:
        raise GeneError(f"'individual' (the settings to inherit this gene with) is not valid: {err}; the gene "
                        "was written by another learngene version or edited by hand: re-export it with learngene "
                        "select, or pass the settings with --preset/--set") from None
    return recipe


def validate_provenance(provenance: Any) -> dict | None:
    if provenance is None:
        return None
    if not isinstance(provenance, dict):
        raise GeneError(f"'provenance' must be an object or null, got {type(provenance).__name__}")
    return _to_plain_json(provenance, "provenance")


# A bit flip in a float32 exponent turns a weight into ~1e38; such a gene "loads" but overflows to Inf
# on the first forward pass. Real trained conv/BN parameters are many orders of magnitude smaller.
_MAX_ABS_VALUE = 1e6


def validate_tensors(layers: list[dict], tensors: Any) -> dict[str, Tensor]:
    """Check the tensors against what ConvBlocks of the given specs hold: names, shapes, dtypes, finiteness."""
    if not isinstance(tensors, Mapping):
        raise GeneError(f"tensors must be a mapping of name -> tensor, got {type(tensors).__name__}")
    for key, value in tensors.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise GeneError(
                f"tensors must map names to torch tensors; entry {_short(key)} is {type(value).__name__}"
            )
    expected_all: set[str] = set()
    out: dict[str, Tensor] = {}
    for layer in layers:
        name = layer["name"]
        try:
            spec, params = block_spec(
                layer["in_channels"], layer["out_channels"], layer["pool"], layer["bias"]
            )
        except (ImportError, GeneError):
            raise
        except Exception as err:
            raise GeneError(
                f"layer {name}: cannot describe a conv_block {layer['in_channels']}->{layer['out_channels']} "
                f"({type(err).__name__}: {err})"
            ) from None
        for suffix, (shape, dtype) in spec.items():
            key = f"{name}.{suffix}"
            if key in expected_all:
                raise GeneError(f"tensor name {key} is claimed by two layers; rename the layers")
            expected_all.add(key)
            if key not in tensors:
                raise GeneError(f"layer {name}: tensor {key} is missing (expected shape {_fmt_shape(shape)})")
            t = tensors[key]
            if tuple(t.shape) != shape:
                raise GeneError(
                    f"layer {name}: expected {suffix} shape {_fmt_shape(shape)} got {_fmt_shape(t.shape)} "
                    f"(in_channels={layer['in_channels']}, out_channels={layer['out_channels']})"
                )
            if dtype.is_floating_point:
                if t.dtype not in _FLOAT_DTYPES:
                    raise GeneError(
                        f"layer {name}: {suffix} must be a floating tensor, got dtype {_dtype_name(t.dtype)}"
                    )
                peak = float(t.abs().max()) if t.numel() else 0.0  # one reduction; NaN propagates through max
                if not math.isfinite(peak):
                    raise GeneError(
                        f"layer {name}: {suffix} contains NaN or Inf values; the gene is unusable"
                    )
                if peak > _MAX_ABS_VALUE:
                    raise GeneError(
                        f"layer {name}: {suffix} holds a value of magnitude {peak:.3g} "
                        f"(trained weights stay far below {_MAX_ABS_VALUE:.0e}); the gene is corrupt or was "
                        "saved from a diverged run - re-export it from a healthy collective run"
                    )
                if suffix.endswith("running_var") and t.numel() and bool((t < 0).any()):
                    raise GeneError(f"layer {name}: {suffix} has negative variances; the gene is corrupt")
            elif t.dtype != dtype:
                raise GeneError(
                    f"layer {name}: {suffix} must have dtype {_dtype_name(dtype)}, got {_dtype_name(t.dtype)}"
                )
            out[key] = t.detach().to("cpu").clone().contiguous()  # the gene owns its data
        if layer["params"] != params:
            raise GeneError(
                f"layer {name}: 'params' says {layer['params']} but a conv_block {layer['in_channels']}->"
                f"{layer['out_channels']} has {params} parameters"
            )
    extra = sorted(set(tensors) - expected_all)
    if extra:
        shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
        raise GeneError(f"unexpected tensors that belong to no gene layer: {shown}")
    return out


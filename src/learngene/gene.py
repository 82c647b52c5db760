"""The learngene artifact: layers taken from a collective model, in a portable and inspectable file format.

On disk a learngene is a directory with two files:

* ``model.safetensors`` -- the tensors (conv weights, BN affine parameters and running statistics), stored with
  safetensors so loading never unpickles anything;
* ``learngene.json`` -- the manifest: format, version, layer specs, input normalization, the criterion that chose
  the layers, provenance, an index of every tensor (shape, dtype) and the SHA-256 of the tensor file.

Why this design: a learngene is meant to be shared and inherited by models trained elsewhere, so the file must be
readable without trusting its author (no pickle, ever), self-describing (``learngene inspect`` needs no code), and
checked end to end before any weight reaches a model (a tampered or truncated file fails loudly, with a message,
instead of silently producing a broken individual model).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from learngene.errors import GeneError, ModelError
from learngene.safeio import atomic_write_bytes, atomic_write_json, sha256_bytes

if TYPE_CHECKING:  # pragma: no cover
    import os

__all__ = ["GENE_FORMAT", "MANIFEST_FILE", "TENSOR_FILE", "Learngene"]

GENE_FORMAT = "learngene/v1"
MANIFEST_FILE = "learngene.json"
TENSOR_FILE = "model.safetensors"

# Sanity bounds: far above any real learngene, low enough that a hostile manifest cannot make us allocate much.
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_MAX_HEADER_BYTES = 16 * 1024 * 1024
_MAX_LAYERS = 1024
_MAX_CHANNELS = 1 << 16
_MAX_IMAGE_SIZE = 1 << 14
_MAX_IMAGE_CHANNELS = 64
_LAYER_TYPES = ("conv_block",)
_FLOAT_DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
_NAME_RE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
# A release number as learngene writes it: MAJOR.MINOR.PATCH, optionally a PEP 440 / semver suffix (0.2.0rc1,
# 0.1.0.dev3, 0.1.0+local). Any MAJOR.MINOR start is enough to recognise a gene from a newer release.
_VERSION_RE = re.compile(r"(\d{1,6})\.(\d{1,6})\.(\d{1,6})(?:[.+\-]?[0-9A-Za-z][0-9A-Za-z.+\-]{0,39})?")
_VERSION_START_RE = re.compile(r"(\d{1,6})\.(\d{1,6})(?![0-9])")
# The oldest release whose genes this one reads (MAJOR, MINOR): 0.1 is the first release writing learngene/v1.
# Raise it in the release that changes what a manifest or its tensors mean; keep GENE_FORMAT for the layout.
_OLDEST_READABLE = (0, 1)


def _package_version() -> str:
    """Imported lazily so ``learngene/__init__`` may import this module without a cycle."""
    import learngene

    return learngene.__version__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite JSON number that survives conversion to float (huge ints do not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _short(value: Any, limit: int = 60) -> str:
    """repr() cut to a readable length: error messages quote values from files that may be huge."""
    try:
        text = repr(value)
    except Exception:  # e.g. an int too long to print
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _fmt_shape(shape: Any) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


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
def _block_spec(
    in_channels: int, out_channels: int, pool: bool, bias: bool
) -> tuple[dict[str, tuple[tuple[int, ...], torch.dtype]], int]:
    """Expected state-dict entries (suffix -> (shape, dtype)) and parameter count of one ConvBlock.

    Built on the meta device: it describes exactly what ``ConvBlock`` holds without allocating any memory, so
    validation follows the real module definition and cannot be made to allocate by a hostile manifest.
    """
    from learngene.models.vgg import ConvBlock

    with torch.device("meta"):
        block = ConvBlock(in_channels, out_channels, pool=pool, bias=bias)
    spec = {k: (tuple(v.shape), v.dtype) for k, v in block.state_dict().items()}
    params = sum(p.numel() for p in block.parameters())
    return spec, params


def _validate_layers(layers: Any) -> list[dict]:
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


def _validate_input_spec(spec: Any) -> dict:
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
            or not all(_is_number(v) for v in values)
        ):
            raise GeneError(
                f"input_spec: '{key}' must be a list of {spec['channels']} finite numbers (one per image channel), "
                f"got {_short(values)}"
            )
    if any(v <= 0 for v in spec["std"]):
        raise GeneError(f"input_spec: 'std' values must be positive, got {_short(spec['std'])}")
    return spec


def _validate_criterion(criterion: Any) -> dict | None:
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


def _validate_provenance(provenance: Any) -> dict | None:
    if provenance is None:
        return None
    if not isinstance(provenance, dict):
        raise GeneError(f"'provenance' must be an object or null, got {type(provenance).__name__}")
    return _to_plain_json(provenance, "provenance")


# A bit flip in a float32 exponent turns a weight into ~1e38; such a gene "loads" but overflows to Inf
# on the first forward pass. Real trained conv/BN parameters are many orders of magnitude smaller.
_MAX_ABS_VALUE = 1e6


def _validate_tensors(layers: list[dict], tensors: Any) -> dict[str, Tensor]:
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
            spec, params = _block_spec(
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


def _major_minor(value: Any) -> tuple[int, int]:
    """MAJOR, MINOR of a version string (leniently: enough to tell a newer release); GeneError if none."""
    m = _VERSION_START_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise GeneError(f"'version' must be a version string such as '0.1.0', got {_short(value)}")
    return int(m.group(1)), int(m.group(2))


def _check_version(made_by: Any, manifest_path: Path) -> None:
    """Apply the compatibility rule of :meth:`Learngene.load` to the manifest's ``version``."""
    ours = _package_version()
    here = _major_minor(ours)
    try:
        theirs = _major_minor(made_by)
    except GeneError as err:
        raise GeneError(f"invalid learngene manifest {manifest_path}: {err}") from None
    if theirs > here:
        raise GeneError(
            f"made by learngene {made_by}, this is {ours}: incompatible format, written by a newer learngene; "
            f"upgrade learngene to {theirs[0]}.{theirs[1]} or later to load it"
        )
    if not _VERSION_RE.fullmatch(made_by):
        raise GeneError(
            f"invalid learngene manifest {manifest_path}: 'version' {_short(made_by)} is not a release number "
            f"MAJOR.MINOR.PATCH such as {ours!r} (learngene always writes all three); the manifest was edited or "
            "written by another tool, re-export the gene with learngene select"
        )
    if theirs[0] != here[0] or theirs < _OLDEST_READABLE:
        oldest = ".".join(map(str, _OLDEST_READABLE))
        raise GeneError(
            f"made by learngene {made_by}, this is {ours}: incompatible format, written by an older learngene "
            f"(this one reads genes of {here[0]}.x releases from {oldest} on); re-export the gene with this "
            f"learngene (learngene select), or load it with learngene {theirs[0]}.{theirs[1]}.x"
        )


def _safetensors_header(data: bytes, where: Path) -> tuple[dict, dict]:
    """Parse the safetensors JSON header (format: u64 little-endian length, then JSON) without trusting it."""
    if len(data) < 8:
        raise GeneError(
            f"truncated/corrupt safetensors {where}: {len(data)} bytes, shorter than the header length"
        )
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER_BYTES or 8 + n > len(data):
        raise GeneError(
            f"truncated/corrupt safetensors {where}: header claims {n} bytes but the file has {len(data)}"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise GeneError(f"truncated/corrupt safetensors {where}: unreadable header ({err})") from None
    if not isinstance(header, dict):
        raise GeneError(f"truncated/corrupt safetensors {where}: header is not an object")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict):
        metadata = {}
    return metadata, header


class Learngene:
    """A set of layers taken from a collective model, saved as model.safetensors + learngene.json: portable,
    inspectable, and loaded without executing anything from the file.

    ``layers`` are ordered specs ``{"name", "type", "in_channels", "out_channels", "pool", "params"}`` where
    ``name`` is the module path in the source model; ``tensors`` are keyed ``"{name}.{param}"`` (BN buffers
    included). The constructor validates everything and raises :class:`GeneError` on any inconsistency.
    """

    def __init__(
        self,
        layers: list[dict],
        tensors: dict[str, Tensor],
        *,
        input_spec: dict,
        criterion: dict | None = None,
        provenance: dict | None = None,
    ) -> None:
        self._layers = _validate_layers(layers)
        self._tensors = _validate_tensors(self._layers, tensors)
        self.input_spec = _validate_input_spec(input_spec)
        self.criterion = _validate_criterion(criterion)
        self.provenance = _validate_provenance(provenance)
        self.made_by = _package_version()

    # ------------------------------------------------------------------ building
    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        layer_names: list[str],
        *,
        input_spec: dict,
        criterion: dict | None = None,
        provenance: dict | None = None,
    ) -> Learngene:
        """Extract the named ConvBlocks (in model order) of ``model``, with their weights and BN statistics."""
        from learngene.models.vgg import ConvBlock

        if isinstance(layer_names, str) or not layer_names:
            raise ModelError(
                "no learngene layers given; pass a non-empty list of module names such as ['features.10']"
            )
        modules = dict(model.named_modules())
        order = {name: i for i, name in enumerate(modules)}
        blocks = [n for n, m in modules.items() if isinstance(m, ConvBlock)]
        available = ", ".join(blocks[:20]) + (" ..." if len(blocks) > 20 else "")
        layers: list[dict] = []
        for name in layer_names:
            if not isinstance(name, str) or name not in modules or name == "":
                raise ModelError(
                    f"{_short(name)} is not a module of {type(model).__name__}; conv blocks available: {available or 'none'}"
                )
            module = modules[name]
            if not isinstance(module, ConvBlock):
                raise ModelError(
                    f"{name} is a {type(module).__name__}, not a conv block; a learngene is made of conv blocks "
                    f"({available or 'none'})"
                )
            cfg = module.config() if hasattr(module, "config") else {}
            layers.append(
                {
                    "name": name,
                    "type": cfg.get("type", "conv_block"),
                    "in_channels": int(cfg.get("in_channels", module.conv.in_channels)),
                    "out_channels": int(cfg.get("out_channels", module.conv.out_channels)),
                    "pool": bool(cfg.get("pool", not isinstance(module.pool, nn.Identity))),
                    "bias": bool(cfg.get("bias", module.conv.bias is not None)),
                    "params": sum(p.numel() for p in module.parameters()),
                }
            )
        if len(set(layer_names)) != len(layer_names):
            raise ModelError(f"learngene layers {layer_names} contain duplicates; list each block once")
        positions = [order[n] for n in layer_names]
        if positions != sorted(positions):
            raise ModelError(
                f"learngene layers {layer_names} are not in model order; list them as they appear in the model "
                f"({', '.join(sorted(layer_names, key=order.__getitem__))})"
            )
        for prev, nxt in zip(layers, layers[1:]):
            if prev["out_channels"] != nxt["in_channels"]:
                raise ModelError(
                    f"layers {prev['name']} (out {prev['out_channels']}) and {nxt['name']} (in {nxt['in_channels']}) "
                    "do not chain; a learngene must be a run of consecutive compatible blocks"
                )
        prefixes = tuple(f"{n}." for n in layer_names)
        tensors = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
        prov = dict(provenance or {})
        prov.setdefault("package_version", _package_version())
        prov.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        return cls(layers, tensors, input_spec=input_spec, criterion=criterion, provenance=prov)

    def build_layers(self) -> nn.Sequential:
        """Fresh ConvBlocks holding the gene's weights (strict load): the inherited part of an individual model."""
        from learngene.models.vgg import ConvBlock

        seq = nn.Sequential(
            *(
                ConvBlock(spec["in_channels"], spec["out_channels"], pool=spec["pool"], bias=spec["bias"])
                for spec in self._layers
            )
        )
        try:
            seq.load_state_dict(self.state_dict_for(""), strict=True)
        except RuntimeError as err:  # only if ConvBlock changed since validation
            raise GeneError(f"gene weights do not fit the current ConvBlock definition: {err}") from None
        return seq

    def state_dict_for(self, prefix: str) -> dict[str, Tensor]:
        """Tensors renamed from ``"features.10.conv.weight"`` to ``f"{prefix}{k}.conv.weight"`` for the k-th layer."""
        out: dict[str, Tensor] = {}
        for k, layer in enumerate(self._layers):
            spec, _ = _block_spec(layer["in_channels"], layer["out_channels"], layer["pool"], layer["bias"])
            for suffix in spec:
                out[f"{prefix}{k}.{suffix}"] = self._tensors[f"{layer['name']}.{suffix}"].clone()
        return out

    # ------------------------------------------------------------------ properties
    @property
    def layers(self) -> list[dict]:
        return [dict(layer) for layer in self._layers]

    @property
    def tensors(self) -> dict[str, Tensor]:
        """Copies of the tensors under their source names (the gene itself stays immutable)."""
        return {k: v.clone() for k, v in self._tensors.items()}

    @property
    def layer_names(self) -> list[str]:
        return [layer["name"] for layer in self._layers]

    @property
    def in_channels(self) -> int:
        return self._layers[0]["in_channels"]

    @property
    def out_channels(self) -> int:
        return self._layers[-1]["out_channels"]

    @property
    def num_params(self) -> int:
        return sum(layer["params"] for layer in self._layers)

    @property
    def effective_widths(self) -> list[int]:
        """Distinct output channels of each layer (replicas left by widening counted once; see models.width)."""
        from learngene.models.width import effective_widths_of

        found = effective_widths_of(self._tensors)
        return [found[layer["name"]] for layer in self._layers]

    @property
    def effective_params(self) -> int:
        """Parameters of the same layers at their effective widths: what the gene really carries."""
        total, c_in = 0, self.in_channels
        for layer, c_out in zip(self._layers, self.effective_widths):
            total += _block_spec(c_in, c_out, layer["pool"], layer["bias"])[1]
            c_in = c_out
        return total

    @property
    def spatial_out(self) -> int:
        """Spatial size after the gene layers, given ``input_spec['spatial_in']`` (each pool halves, flooring)."""
        size = self.input_spec["spatial_in"]
        for layer in self._layers:
            if layer["pool"]:
                size //= 2
        return size

    # ------------------------------------------------------------------ serialization
    def _serialize(self, version: str) -> tuple[bytes, dict]:
        from safetensors.torch import save

        data = save(
            {k: v.contiguous() for k, v in self._tensors.items()},
            # one key only: safetensors writes metadata from a hash map, so several keys would come out in a random
            # order and the file (and its sha256) would differ between two saves of the same gene
            metadata={"format": GENE_FORMAT},
        )
        manifest = {
            "format": GENE_FORMAT,
            "version": version,
            "layers": self.layers,
            "input_spec": json.loads(json.dumps(self.input_spec)),
            "criterion": json.loads(json.dumps(self.criterion)),
            "provenance": json.loads(json.dumps(self.provenance)),
            "tensors": {
                k: {"shape": list(v.shape), "dtype": _dtype_name(v.dtype)}
                for k, v in sorted(self._tensors.items())
            },
            "sha256": sha256_bytes(data),
        }
        return data, manifest

    def manifest(self) -> dict:
        """The learngene.json content of this gene (including the tensor file's SHA-256).

        ``version`` is the learngene version that made it (kept from the file for a loaded gene).
        """
        return self._serialize(self.made_by)[1]

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` then ``learngene.json`` (both atomically) into ``directory``.

        The manifest is written last, so a crash in between leaves a directory that fails to load with a clear
        checksum error instead of a valid-looking artifact with stale weights.
        """
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise GeneError(f"cannot save learngene to {d}: it is an existing file; choose a directory path")
        data, manifest = self._serialize(_package_version())
        atomic_write_bytes(d / TENSOR_FILE, data)
        atomic_write_json(d / MANIFEST_FILE, manifest)
        return d

    @classmethod
    def load(cls, directory_or_file: str | os.PathLike[str]) -> Learngene:
        """Load and fully validate a learngene directory (or its learngene.json); :class:`GeneError` on any problem.

        Versions. ``format`` ("learngene/v1") names the file layout and must match exactly. ``version`` is the
        learngene release that wrote the gene, MAJOR.MINOR.PATCH; the patch never matters (patch releases
        do not change what a gene means), and for MAJOR.MINOR:

        * the same as this learngene's: loads;
        * newer: refused ("written by a newer learngene; upgrade"), since a newer release may store
          something this one would read wrongly;
        * older, same major, not older than ``_OLDEST_READABLE`` (0.1, the first release of this format):
          loads without a warning, as those releases write what this one reads, checked field by field;
        * older than that, or another major: refused ("written by an older learngene; re-export");
        * not a MAJOR.MINOR.PATCH string (e.g. "0.1", which learngene never writes): refused as an edited or
          foreign manifest (one that starts with a newer MAJOR.MINOR, e.g. "99.0", is reported as newer).
        """
        path = Path(directory_or_file)
        try:
            return cls._load(path)
        except GeneError:
            raise
        except Exception as err:  # any parser surprise must still be a clean user-facing error
            raise GeneError(
                f"cannot load learngene from {path}: unexpected problem while reading it ({type(err).__name__}: "
                f"{err}); the artifact is corrupt or not a learngene"
            ) from None

    @classmethod
    def _load(cls, path: Path) -> Learngene:
        from safetensors.torch import load as st_load

        if not path.exists():
            raise GeneError(f"no learngene at {path}: no such file or directory; pass a learngene directory")
        if path.is_dir():
            directory = path
        elif path.name in (MANIFEST_FILE, TENSOR_FILE):
            directory = path.parent
        else:
            raise GeneError(
                f"not a learngene: {path} is a file; pass the learngene directory or its {MANIFEST_FILE}"
            )
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise GeneError(f"not a learngene (no {MANIFEST_FILE} in {directory})")
        try:
            raw = manifest_path.read_bytes() if manifest_path.stat().st_size <= _MAX_MANIFEST_BYTES else None
        except OSError as err:
            raise GeneError(
                f"cannot read {manifest_path}: {err.strerror or err}; check its permissions"
            ) from None
        if raw is None:
            raise GeneError(f"not a learngene: {manifest_path} is larger than any learngene manifest")

        def _reject_constant(token: str) -> Any:
            raise ValueError(f"non-standard JSON constant {token}")

        try:
            manifest = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise GeneError(
                f"not a learngene or corrupt manifest: {manifest_path} is not valid JSON ({err}); "
                "restore the file or re-export the learngene"
            ) from None
        if not isinstance(manifest, dict):
            raise GeneError(
                f"not a learngene: {manifest_path} holds a {type(manifest).__name__}, not an object"
            )
        fmt = manifest.get("format")
        if fmt != GENE_FORMAT:
            raise GeneError(
                f"not a learngene: {manifest_path} has format {_short(fmt)}, expected {_short(GENE_FORMAT)} "
                "(a file of another tool, or a newer format this version cannot read)"
            )
        made_by = manifest.get("version")
        _check_version(made_by, manifest_path)
        where = f"invalid learngene {directory}"
        try:
            layers = _validate_layers(manifest.get("layers"))
            input_spec = _validate_input_spec(manifest.get("input_spec"))
            criterion = _validate_criterion(manifest.get("criterion"))
            provenance = _validate_provenance(manifest.get("provenance"))
        except GeneError as err:
            raise GeneError(f"{where}: {err}") from None
        index = manifest.get("tensors")
        if not isinstance(index, dict) or not index:
            raise GeneError(f"{where}: 'tensors' must be a non-empty object of name -> {{shape, dtype}}")
        for key, entry in index.items():
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("shape"), list)
                or not all(_is_int(s) and s >= 0 for s in entry["shape"])
                or not isinstance(entry.get("dtype"), str)
            ):
                raise GeneError(
                    f"{where}: tensor index entry {_short(key)} must be {{'shape': [ints], 'dtype': str}}"
                )
        expected_sha = manifest.get("sha256")
        if not isinstance(expected_sha, str) or not _SHA_RE.fullmatch(expected_sha):
            raise GeneError(f"{where}: 'sha256' must be 64 lowercase hex digits, got {_short(expected_sha)}")

        tensor_path = directory / TENSOR_FILE
        if not tensor_path.is_file():
            raise GeneError(f"{where}: {TENSOR_FILE} is missing; the artifact is incomplete, re-export it")
        try:
            data = tensor_path.read_bytes()
        except OSError as err:
            raise GeneError(
                f"cannot read {tensor_path}: {err.strerror or err}; check its permissions"
            ) from None
        actual_sha = sha256_bytes(data)
        if actual_sha != expected_sha:
            raise GeneError(
                f"tampered: sha256 mismatch for {tensor_path} (file {actual_sha}, manifest {expected_sha}); "
                "the tensors were modified or truncated after export. Re-export or re-download the learngene"
            )
        metadata, header = _safetensors_header(data, tensor_path)
        if metadata.get("format") != GENE_FORMAT:
            raise GeneError(
                f"{where}: {tensor_path} is a safetensors file not written as a learngene "
                f"(metadata format {_short(metadata.get('format'))}, expected {_short(GENE_FORMAT)})"
            )
        try:
            tensors = st_load(data)
        except Exception as err:
            raise GeneError(
                f"truncated/corrupt safetensors {tensor_path}: {err}; re-export the learngene"
            ) from None
        if set(tensors) != set(index) or set(header) != set(index):
            missing = sorted(set(index) - set(tensors))
            extra = sorted(set(tensors) - set(index))
            raise GeneError(
                f"{where}: tensor file and manifest disagree (missing from file: {missing[:5]}, "
                f"not in manifest: {extra[:5]})"
            )
        for key, entry in index.items():
            t = tensors[key]
            if list(t.shape) != entry["shape"] or _dtype_name(t.dtype) != entry["dtype"]:
                raise GeneError(
                    f"{where}: tensor {key} is {_dtype_name(t.dtype)}{_fmt_shape(t.shape)} in {TENSOR_FILE} but "
                    f"{entry['dtype']}{_fmt_shape(entry['shape'])} in {MANIFEST_FILE}"
                )
        try:
            gene = cls(
                layers,
                tensors,
                input_spec=input_spec,
                criterion=criterion,
                provenance=provenance,
            )
        except GeneError as err:
            raise GeneError(f"{where}: {err}") from None
        gene.made_by = made_by
        return gene

    # ------------------------------------------------------------------ display
    def describe(self) -> str:
        """A readable summary for ``learngene inspect``: layers, input spec, criterion scores, provenance."""
        lines = [
            f"learngene ({GENE_FORMAT}, made by learngene {self.made_by})",
            f"{len(self._layers)} layers, {self.num_params:,} parameters, channels {self.in_channels} -> "
            f"{self.out_channels}, spatial {self.input_spec['spatial_in']} -> {self.spatial_out}",
            f"effective: {self.effective_params:,} parameters with every layer at its effective width "
            "(distinct channels; copies left by widening count once)",
            "",
        ]
        effective = self.effective_widths
        rows = [("#", "layer", "type", "in -> out", "effective out", "pool", "params")]
        for k, layer in enumerate(self._layers):
            rows.append(
                (
                    str(k),
                    layer["name"],
                    layer["type"],
                    f"{layer['in_channels']} -> {layer['out_channels']}",
                    str(effective[k]),
                    "yes" if layer["pool"] else "no",
                    f"{layer['params']:,}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
        spec = self.input_spec
        lines += [
            "",
            f"input: {spec['image_size']}x{spec['image_size']}, {spec['channels']} channel(s), "
            f"mean {_fmt_numbers(spec['mean'])}, std {_fmt_numbers(spec['std'])}; "
            f"first gene layer sees {spec['spatial_in']}x{spec['spatial_in']}",
        ]
        if self.criterion is None:
            lines.append("criterion: (not recorded)")
        else:
            lines.append(f"criterion: {self.criterion['name']} -- {self.criterion['reason']}")
            for key, value in self.criterion["scores"].items():
                lines.append(f"  {key}: {_fmt_value(value)}")
        if self.provenance:
            lines.append("provenance:")
            for key, value in self.provenance.items():
                lines.append(f"  {key}: {_fmt_value(value)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"Learngene(layers={self.layer_names}, channels={self.in_channels}->{self.out_channels}, "
            f"params={self.num_params})"
        )


def _fmt_numbers(values: list) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _fmt_value(value: Any) -> str:
    if _is_number(value) and isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        return _fmt_numbers(value) if len(value) <= 12 else _fmt_numbers(value[:12])[:-1] + ", ...]"
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 100 else text[:97] + "..."

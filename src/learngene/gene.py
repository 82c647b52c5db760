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
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from learngene.artifacts import GENE, load_artifact, package_version, save_artifact, serialize
from learngene.artifacts import short as _short
from learngene.config import IndividualConfig
from learngene.errors import GeneError, ModelError
from learngene.gene_format import (
    block_spec,
    is_number,
    validate_criterion,
    validate_input_spec,
    validate_layers,
    validate_provenance,
    validate_recipe,
    validate_tensors,
)
from learngene.models.individual import IndividualModel, plan_individual
from learngene.runtime import seeded

if TYPE_CHECKING:  # pragma: no cover
    import os

__all__ = ["GENE_FORMAT", "MANIFEST_FILE", "TENSOR_FILE", "Learngene"]

GENE_FORMAT = GENE.format
MANIFEST_FILE = GENE.manifest
TENSOR_FILE = GENE.weights
_package_version = package_version

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
        individual: dict | None = None,
    ) -> None:
        self._layers = validate_layers(layers)
        self._tensors = validate_tensors(self._layers, tensors)
        self.input_spec = validate_input_spec(input_spec)
        self.criterion = validate_criterion(criterion)
        self.provenance = validate_provenance(provenance)
        # the [individual] settings the gene's run chose on pseudo-tasks from its source classes (pooling,
        # augmentation, epochs, lr, ...): `inherit` starts from them when no preset or config is given
        self.individual = validate_recipe(individual)
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
        individual: dict | None = None,
    ) -> Learngene:
        """Extract the named ConvBlocks (in model order) of ``model``, with their weights and BN statistics.

        ``input_spec`` gives ``image_size``, ``channels``, ``mean`` and ``std`` of the model's inputs; the
        spatial size the first gene layer sees (``spatial_in``) is worked out from the pools before it.
        """
        from learngene.models.layers import ConvBlock

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
        if isinstance(input_spec, dict) and "spatial_in" not in input_spec and "image_size" in input_spec:
            size = int(input_spec["image_size"])
            for name in blocks[: blocks.index(layer_names[0])]:  # the blocks before the gene, in model order
                if not isinstance(modules[name].pool, nn.Identity):
                    size //= 2
            input_spec = {**input_spec, "spatial_in": size}
        prov = dict(provenance or {})
        prov.setdefault("package_version", _package_version())
        prov.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        return cls(layers, tensors, input_spec=input_spec, criterion=criterion, provenance=prov,
                   individual=individual)

    paradigm = "cnn"  # the config paradigm whose settings ([individual]) build and train its individual models

    def build(self, num_classes: int, *, settings: IndividualConfig | None = None, seed: int | None = 0,
              inherit: bool = True) -> nn.Module:
        """An individual model around this gene for ``num_classes`` classes, sized by ``settings`` (``before``,
        ``after``, ``hidden``, ... of :class:`~learngene.config.IndividualConfig`); ``inherit=False`` gives the same
        architecture with random initialization (scratch).  The fresh layers' initialization depends on ``seed``
        only, and every model starts from a fresh copy of the gene's tensors."""
        cfg = plan_individual(self.layers, self.input_spec, settings or IndividualConfig(), num_classes)
        with seeded(seed):
            model = IndividualModel.from_config(cfg)
        if inherit:
            model.gene.load_state_dict({k: v.clone() for k, v in self.state_dict_for("").items()}, strict=True)
        return model

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 images [N, C, H, W] (as an :class:`~learngene.data.ImageSet` holds them) -> the normalized float
        input the gene was trained on (its ``input_spec`` mean and std)."""
        from learngene.data.transforms import normalize

        size, channels = self.input_spec["image_size"], self.input_spec["channels"]
        if images.dim() != 4 or images.shape[1] != channels or images.shape[-1] != size or images.shape[-2] != size:
            raise ModelError(
                f"this gene expects images shaped [N, {channels}, {size}, {size}], got {list(images.shape)}; "
                "resize them (ImageSet.from_dataset(..., image_size=...)) first"
            )
        return normalize(images, self.input_spec["mean"], self.input_spec["std"])

    def build_layers(self) -> nn.Sequential:
        """Fresh ConvBlocks holding the gene's weights (strict load): the inherited part of an individual model."""
        from learngene.models.layers import ConvBlock

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
            spec, _ = block_spec(layer["in_channels"], layer["out_channels"], layer["pool"], layer["bias"])
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
            total += block_spec(c_in, c_out, layer["pool"], layer["bias"])[1]
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
    def _fields(self) -> dict[str, Any]:
        fields = {"layers": self.layers, "input_spec": self.input_spec, "criterion": self.criterion,
                  "provenance": self.provenance}
        if self.individual is not None:
            fields["individual"] = self.individual
        return fields

    def manifest(self) -> dict:
        """The learngene.json content of this gene (including the tensor file's SHA-256).

        ``version`` is the learngene version that made it (kept from the file for a loaded gene).
        """
        return serialize(GENE, self._tensors, self._fields(), version=self.made_by)[1]

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` then ``learngene.json`` into ``directory`` (see :mod:`learngene.artifacts`)."""
        save_artifact(directory, GENE, self._tensors, self._fields())
        return Path(directory)

    @classmethod
    def load(cls, directory_or_file: str | os.PathLike[str]) -> Learngene:
        """Load and fully validate a learngene directory (or its learngene.json); :class:`GeneError` on any problem.

        The file-level checks (format, version rule, checksum, tensor index) are :func:`learngene.artifacts.load_artifact`'s;
        the layers, input spec, criterion and provenance are checked by :mod:`learngene.gene_format`.
        """
        path = Path(directory_or_file)
        manifest, tensors, directory = load_artifact(path, GENE)
        where = f"invalid learngene {directory}"
        try:
            gene = cls(
                manifest.get("layers"),
                tensors,
                input_spec=manifest.get("input_spec"),
                criterion=manifest.get("criterion"),
                provenance=manifest.get("provenance"),
                individual=manifest.get("individual"),
            )
        except GeneError as err:
            raise GeneError(f"{where}: {err}") from None
        except Exception as err:  # noqa: BLE001 - any surprise in a hostile manifest is still a clean error
            raise GeneError(
                f"cannot load learngene from {path}: unexpected problem while reading it ({type(err).__name__}: "
                f"{err}); the artifact is corrupt or not a learngene"
            ) from None
        gene.made_by = manifest["version"]
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
        if self.individual:
            lines.append("inherit with (the [individual] settings its run chose on source pseudo-tasks; --preset "
                         "or --set override them):")
            lines.append("  " + ", ".join(f"{k} = {_fmt_value(v)}" for k, v in self.individual.items()))
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
    if is_number(value) and isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and value and all(is_number(v) for v in value):
        return _fmt_numbers(value) if len(value) <= 12 else _fmt_numbers(value[:12])[:-1] + ", ...]"
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 100 else text[:97] + "..."

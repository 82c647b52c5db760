"""Function-preserving growth of an :class:`~learngene.models.vgg.ExpandableVGG` (Net2Net), as replayable plans.

A :class:`GrowthPlan` describes one step -- widen a conv block, insert an identity block, or add classes --
with everything needed to (a) apply it to the model and (b) replay it on any dict of tensors keyed like the
model's parameters/buffers (EWC anchors and Fisher, optimizer moments, gradient statistics), so whatever was
computed for the old model stays aligned with the new one.

**Widening** block ``L`` from ``n`` to ``m`` channels: new unit ``j >= n`` replicates old unit ``g[j]``
(``mapping``).  The producer (block ``L``'s conv rows, conv bias and *all* BatchNorm parameters and running
statistics) is copied; the consumer (block ``L+1``'s conv, or ``head.fc0`` / ``classifier`` for the last
block, where each channel owns ``h*w`` consecutive flattened columns) has the input slices of every copy of
unit ``u`` divided by ``c_u``, the number of copies.  The network computes the same function in eval *and*
train mode (replicated channels have identical batch statistics).

Replicas are drawn as random permutations of the old units, concatenated: with ``m <= 2n`` every unit is
copied at most once, so the ``1/c`` factors stay as balanced as possible.

``noise > 0`` breaks the symmetry between a unit and its replicas without giving up preservation: each
replica's consumer slice gets Gaussian noise ``e`` and the original unit's slice gets ``-sum(e)``, so the sum
the next layer sees is unchanged (only float rounding differs).  ``noise`` is relative to the std of the
consumer's weights; the plan stores the absolute value (``noise_std``) and a ``seed``, so replays match.

**Deepening** after block ``a`` inserts a block whose conv is a Dirac (identity) kernel and whose BatchNorm is
the identity in eval mode (running mean 0, var 1, weight ``sqrt(1+eps)``, bias 0).  Its input is the
(non-negative) output of block ``a`` -- after ``a``'s pool when it has one -- so the ReLU is the identity too.
The new block has no pool.  In *train* mode BatchNorm uses batch statistics, so only eval outputs are
preserved exactly.  Blocks after ``a`` are renumbered so ``features.{i}`` stays contiguous.

**Replaying on tensors** (:meth:`GrowthPlan.transform_state`), ``kind``:

* ``"param"`` -- the Net2Net transform itself: ``transform_state(old.state_dict()) == new.state_dict()``.
  Use it for parameter snapshots (EWC anchors).
* ``"grad"`` -- how a gradient (or SGD momentum / Adam ``exp_avg``) of the grown network relates to the old
  one at the grown point: producer copies of unit ``u`` get ``g/c_u`` (the loss sees each copy through a
  consumer slice divided by ``c_u``), consumer slices are copied unchanged (each copy sees the same
  activation).  New deepen/classes entries are 0.
* ``"importance"`` -- squared-gradient quantities (diagonal empirical Fisher, Adam ``exp_avg_sq``): the
  square of the above, i.e. producer copies ``F/c_u**2``, consumer slices copied unchanged, new entries 0.
  This is *exactly* the per-sample squared-gradient Fisher the grown network would give on the old data
  (tests check it); note it is not ``F*c**2`` on the consumer: a consumer weight that was split into ``c``
  copies is not a rescaled parameter -- each copy moves the output exactly as the original did.

Keys not touched by a step pass through, keys missing from ``state`` are ignored (a subset such as "only
trainable parameters" is fine), and a tensor whose shape does not fit the step raises ``ModelError``.

After :meth:`GrowthPlan.apply` the grown modules are *new objects*: optimizers built before hold stale
parameters and forward hooks on replaced modules are gone.  Build a new optimizer (and re-attach hooks) after
growing; carry optimizer moments over with ``transform_state`` if needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from learngene.errors import ModelError
from learngene.models.layers import ConvBlock
from learngene.models.vgg import ExpandableVGG, new_class_rows
from learngene.runtime import rng_preserved

__all__ = [
    "GROWTH_KINDS",
    "STATE_KINDS",
    "GrowthPlan",
    "identity_block",
]

GROWTH_KINDS = ("widen", "deepen", "classes")
STATE_KINDS = ("param", "grad", "importance")
_PRODUCER_SCALED = ("conv.weight", "conv.bias", "bn.weight", "bn.bias")
_PRODUCER_COPIED = ("bn.running_mean", "bn.running_var")
_PLAN_FIELDS = (
    "kind",
    "layer",
    "old_width",
    "new_width",
    "num_blocks",
    "mapping",
    "consumer",
    "spatial",
    "noise",
    "noise_std",
    "seed",
    "fan_in",
)


def _block_index(key: str) -> tuple[int, str] | None:
    """``"features.3.conv.weight"`` -> ``(3, "conv.weight")``; None for keys outside the conv stack."""
    parts = key.split(".", 2)
    if len(parts) == 3 and parts[0] == "features" and parts[1].isdigit():
        return int(parts[1]), parts[2]
    return None


def identity_block(
    channels: int,
    bias: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ConvBlock:
    """A ConvBlock (no pool) that is the identity on non-negative inputs in eval mode (Net2DeeperNet).

    Built directly in ``dtype`` so ``sqrt(1 + eps)`` is exact to that precision.
    """
    block = ConvBlock(channels, channels, pool=False, bias=bias).to(device=device, dtype=dtype)
    with torch.no_grad():
        nn.init.dirac_(block.conv.weight)
        if block.conv.bias is not None:
            block.conv.bias.zero_()
        block.bn.running_mean.zero_()
        block.bn.running_var.fill_(1.0)
        block.bn.weight.fill_(math.sqrt(1.0 + block.bn.eps))
        block.bn.bias.zero_()
        block.bn.num_batches_tracked.zero_()
    return block


@dataclass(eq=False)
class GrowthPlan:
    """One growth step, described so it can be applied to the model AND replayed on tensors keyed like it.

    Fields (``layer``/``old_width``/``new_width`` mean slightly different things per ``kind``):

    * ``widen``: block ``layer`` goes from ``old_width`` to ``new_width`` channels; ``mapping[k]`` is the old
      unit copied into new unit ``old_width + k``; ``consumer`` is the module whose inputs are split
      (``features.{layer+1}.conv``, ``head.fc0`` or ``classifier``), ``spatial`` the number of flattened
      columns per channel there (``h*w`` for a linear consumer, 1 for a conv); ``noise`` (relative) /
      ``noise_std`` (absolute) and ``seed`` describe the symmetry-breaking noise.
    * ``deepen``: an identity block of ``old_width == new_width`` channels goes after block ``layer``.
    * ``classes``: the classifier goes from ``old_width`` to ``new_width`` rows of ``fan_in`` inputs; the new
      rows are drawn from ``seed``.

    ``num_blocks`` is the model's block count *before* the step; together with the widths it lets
    :meth:`apply` refuse a model in another state (plans must be applied in the order they were made).
    """

    kind: str
    layer: int
    old_width: int
    new_width: int
    num_blocks: int
    mapping: Tensor | None = None
    consumer: str = ""
    spatial: int = 1
    noise: float = 0.0
    noise_std: float = 0.0
    seed: int | None = None
    fan_in: int = 0

    def __post_init__(self) -> None:
        if self.kind not in GROWTH_KINDS:
            raise ModelError(f"growth plan kind must be one of {GROWTH_KINDS}, got {self.kind!r}")
        if self.kind == "widen":
            if self.mapping is None:
                raise ModelError("a 'widen' plan needs a mapping (old unit copied by each new unit)")
            mapping = torch.as_tensor(self.mapping, dtype=torch.long).reshape(-1).cpu()
            if mapping.numel() != self.new_width - self.old_width:
                raise ModelError(
                    f"widen plan mapping has {mapping.numel()} entries but grows {self.old_width} -> "
                    f"{self.new_width} units ({self.new_width - self.old_width} expected)"
                )
            if mapping.numel() and (int(mapping.min()) < 0 or int(mapping.max()) >= self.old_width):
                raise ModelError(f"widen plan mapping must index old units 0..{self.old_width - 1}")
            self.mapping = mapping
            if self.noise_std > 0 and self.seed is None:
                raise ModelError("a widen plan with noise needs a seed so it can be replayed")
        if self.kind == "classes" and self.new_width > self.old_width and self.seed is None:
            raise ModelError("a 'classes' plan needs a seed for the new classifier rows")

    def __eq__(self, other: object) -> bool:
        # compare the records: the dataclass default would compare the mapping tensors ambiguously
        return isinstance(other, GrowthPlan) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable record

    # ------------------------------------------------------------------ derived index tensors
    @property
    def full_index(self) -> Tensor:
        """For every new unit, the old unit it copies (identity for the first ``old_width``)."""
        if self.mapping is None:
            raise ModelError(f"a {self.kind!r} plan has no unit mapping")
        return torch.cat([torch.arange(self.old_width), self.mapping])

    @property
    def counts(self) -> Tensor:
        """Copies of each old unit after widening (1 + its replicas), shape ``[old_width]``."""
        return torch.bincount(self.full_index, minlength=self.old_width)

    def _index_on(self, ref: Tensor) -> tuple[Tensor, Tensor]:
        """(full index, per-new-unit copy count) on ``ref``'s device; count in ``ref``'s float dtype."""
        idx = self.full_index.to(ref.device)
        count = self.counts[self.full_index].to(device=ref.device)
        return idx, count.to(ref.dtype if ref.is_floating_point() else torch.float32)

    # ------------------------------------------------------------------ applying to a model
    def _check(self, model: nn.Module) -> ExpandableVGG:
        if not isinstance(model, ExpandableVGG):
            raise ModelError(f"growth plans apply to ExpandableVGG models, got {type(model).__name__}")
        n = len(model.features)
        if n != self.num_blocks:
            raise ModelError(
                f"this {self.kind} plan was made for a model with {self.num_blocks} conv blocks, this one has {n}; "
                "apply plans in the order they were made, each to the model they were planned on"
            )
        if self.kind == "widen" and model.widths[self.layer] != self.old_width:
            raise ModelError(
                f"widen plan expects block {self.layer} to have {self.old_width} channels, it has "
                f"{model.widths[self.layer]}; apply plans in the order they were made"
            )
        if self.kind == "deepen" and model.widths[self.layer] != self.old_width:
            raise ModelError(
                f"deepen plan expects block {self.layer} to have {self.old_width} channels, it has "
                f"{model.widths[self.layer]}; apply plans in the order they were made"
            )
        if self.kind == "classes" and model.num_classes != self.old_width:
            raise ModelError(
                f"classes plan expects {self.old_width} classifier outputs, the model has {model.num_classes}"
            )
        return model

    def apply(self, model: nn.Module) -> None:
        """Grow ``model`` in place; replaced modules keep the device, dtype and train/eval mode of the old ones.

        Optimizers and hooks bound to replaced modules are stale afterwards: build a new optimizer.
        """
        vgg = self._check(model)
        with rng_preserved(next(vgg.parameters()).device):  # new modules' default init is overwritten anyway
            self._apply(vgg)

    def _apply(self, vgg: ExpandableVGG) -> None:
        if self.kind == "widen":
            self._apply_widen(vgg)
        elif self.kind == "deepen":
            ref = vgg.features[self.layer].conv.weight
            block = identity_block(self.old_width, bias=vgg.conv_bias, device=ref.device, dtype=ref.dtype)
            block.train(vgg.training)
            blocks = list(vgg.features)
            blocks.insert(self.layer + 1, block)
            vgg.features = nn.Sequential(*blocks)
        else:
            vgg.expand_classes(self.new_width, seed=self.seed)

    def _apply_widen(self, model: ExpandableVGG) -> None:
        prefix = f"features.{self.layer}."
        cons = f"{self.consumer}."
        old_state = {k: v for k, v in model.state_dict().items() if k.startswith((prefix, cons))}
        new_state = self.transform_state(old_state, kind="param")

        old_block = model.features[self.layer]
        ref = old_block.conv.weight
        block = ConvBlock(
            old_block.in_channels, self.new_width, pool=old_block.has_pool, bias=old_block.has_bias
        )
        block = block.to(device=ref.device, dtype=ref.dtype)
        block.load_state_dict({k[len(prefix) :]: v for k, v in new_state.items() if k.startswith(prefix)})
        block.train(old_block.training)
        model.features[self.layer] = block

        old_cons = model.get_submodule(self.consumer)
        new_cons: nn.Module
        if isinstance(old_cons, nn.Conv2d):
            new_cons = nn.Conv2d(
                self.new_width,
                old_cons.out_channels,
                kernel_size=old_cons.kernel_size,
                stride=old_cons.stride,
                padding=old_cons.padding,
                bias=old_cons.bias is not None,
                device=ref.device,
                dtype=ref.dtype,
            )
        elif isinstance(old_cons, nn.Linear):
            new_cons = nn.Linear(
                self.new_width * self.spatial,
                old_cons.out_features,
                bias=old_cons.bias is not None,
                device=ref.device,
                dtype=ref.dtype,
            )
        else:  # pragma: no cover - guarded by plan_widen
            raise ModelError(
                f"cannot widen into consumer {self.consumer!r} of type {type(old_cons).__name__}"
            )
        new_cons.load_state_dict({k[len(cons) :]: v for k, v in new_state.items() if k.startswith(cons)})
        new_cons.train(old_cons.training)
        parent_name, _, child = self.consumer.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new_cons)

    # ------------------------------------------------------------------ replaying on tensors
    def transform_state(self, state: Mapping[str, Tensor], kind: str = "param") -> dict[str, Tensor]:
        """Map tensors keyed by the OLD model's names to the NEW model's names/shapes (see module docstring)."""
        if kind not in STATE_KINDS:
            raise ModelError(f"transform_state kind must be one of {STATE_KINDS}, got {kind!r}")
        if not isinstance(state, Mapping):
            raise ModelError(f"transform_state needs a dict name -> tensor, got {type(state).__name__}")
        for k, v in state.items():
            if not isinstance(v, Tensor):
                raise ModelError(f"transform_state: value for {k!r} is {type(v).__name__}, expected a tensor")
        if self.kind == "widen":
            return self._widen_state(state, kind)
        if self.kind == "deepen":
            return self._deepen_state(state, kind)
        return self._classes_state(state, kind)

    def _shape_error(self, key: str, t: Tensor, expected: str) -> ModelError:
        return ModelError(
            f"{self.kind} plan: {key!r} has shape {tuple(t.shape)}, expected {expected}; the tensors must be "
            "keyed like the model *before* this step (replay plans in order, once each)"
        )

    def _widen_state(self, state: Mapping[str, Tensor], kind: str) -> dict[str, Tensor]:
        out = dict(state)
        prefix = f"features.{self.layer}."
        for suffix in _PRODUCER_SCALED + _PRODUCER_COPIED:
            key = prefix + suffix
            if key not in state:
                continue
            t = state[key]
            if t.dim() == 0 or t.shape[0] != self.old_width:
                raise self._shape_error(key, t, f"{self.old_width} rows (block {self.layer}'s channels)")
            idx, count = self._index_on(t)
            new = t.index_select(0, idx)
            if suffix in _PRODUCER_SCALED and kind != "param":
                scale = count if kind == "grad" else count * count
                new = new / scale.to(new.dtype).view(-1, *([1] * (new.dim() - 1)))
            out[key] = new
        key = f"{self.consumer}.weight"
        if key in state:
            out[key] = self._widen_consumer(key, state[key], kind)
        return out

    def _widen_consumer(self, key: str, t: Tensor, kind: str) -> Tensor:
        n_in = self.old_width * self.spatial
        if t.dim() < 2 or t.shape[1] != n_in:
            raise self._shape_error(
                key, t, f"{n_in} input columns ({self.old_width} channels x {self.spatial})"
            )
        idx, count = self._index_on(t)
        shape = t.shape
        # [out, channels, rest]: a conv's kernel positions or a linear's h*w columns per channel
        v = t.reshape(shape[0], self.old_width, -1).index_select(1, idx)
        if kind == "param":
            v = v / count.to(v.dtype).view(1, -1, 1)
            if self.noise_std > 0 and self.mapping is not None and self.mapping.numel():
                gen = torch.Generator().manual_seed(int(self.seed or 0))
                eps = torch.randn(v[:, self.old_width :].shape, generator=gen) * self.noise_std
                eps = eps.to(device=v.device, dtype=v.dtype)
                v[:, self.old_width :] += eps
                v[:, : self.old_width].index_add_(1, self.mapping.to(v.device), -eps)
        if len(shape) == 2:  # linear: back to [out, new_width * h*w], channel-major
            return v.reshape(shape[0], -1)
        return v.reshape(shape[0], self.new_width, *shape[2:])

    def _deepen_state(self, state: Mapping[str, Tensor], kind: str) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        template: dict[str, Tensor] = {}
        for key, t in state.items():
            parsed = _block_index(key)
            if parsed is None:
                out[key] = t
                continue
            i, rest = parsed
            if i >= self.num_blocks:
                raise ModelError(
                    f"deepen plan: {key!r} names block {i} but the model had {self.num_blocks} blocks before this "
                    "step; the tensors were keyed for a different model state (replay plans in order)"
                )
            if i == self.layer:
                template[rest] = t
            out[f"features.{i + 1}.{rest}" if i > self.layer else key] = t
        if template:
            w = template.get("conv.weight")
            if w is not None and w.shape[0] != self.old_width:
                raise self._shape_error(f"features.{self.layer}.conv.weight", w, f"{self.old_width} rows")
            ref_w = template.get("conv.weight", next(iter(template.values())))
            float_dtype = ref_w.dtype if ref_w.is_floating_point() else None
            ident = identity_block(self.old_width, "conv.bias" in template, dtype=float_dtype).state_dict()
            for rest, ref in template.items():
                if rest not in ident:
                    continue
                value = ident[rest].to(device=ref.device, dtype=ref.dtype)
                out[f"features.{self.layer + 1}.{rest}"] = (
                    value if kind == "param" else torch.zeros_like(value)
                )
        return out

    def _classes_state(self, state: Mapping[str, Tensor], kind: str) -> dict[str, Tensor]:
        out = dict(state)
        n_new = self.new_width - self.old_width
        if n_new == 0:
            return out
        rows = new_class_rows(n_new, self.fan_in, int(self.seed or 0))
        for key, new_rows in (("classifier.weight", rows[0]), ("classifier.bias", rows[1])):
            if key not in state:
                continue
            t = state[key]
            if (
                t.dim() == 0
                or t.shape[0] != self.old_width
                or tuple(t.shape[1:]) != tuple(new_rows.shape[1:])
            ):
                raise self._shape_error(key, t, f"{self.old_width} rows of shape {tuple(new_rows.shape[1:])}")
            extra = new_rows.to(device=t.device, dtype=t.dtype)
            if kind != "param":
                extra = torch.zeros_like(extra)
            out[key] = torch.cat([t, extra], 0)
        return out

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable record (for reports and checkpoints); :meth:`from_dict` rebuilds the same plan."""
        return {
            "kind": self.kind,
            "layer": int(self.layer),
            "old_width": int(self.old_width),
            "new_width": int(self.new_width),
            "num_blocks": int(self.num_blocks),
            "mapping": None if self.mapping is None else [int(v) for v in self.mapping.tolist()],
            "consumer": self.consumer,
            "spatial": int(self.spatial),
            "noise": float(self.noise),
            "noise_std": float(self.noise_std),
            "seed": None if self.seed is None else int(self.seed),
            "fan_in": int(self.fan_in),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GrowthPlan:
        if not isinstance(d, Mapping):
            raise ModelError(f"GrowthPlan.from_dict needs a dict from to_dict(), got {type(d).__name__}")
        missing = [k for k in ("kind", "layer", "old_width", "new_width", "num_blocks") if k not in d]
        unknown = sorted(set(d) - set(_PLAN_FIELDS))
        if missing or unknown:
            raise ModelError(
                f"growth plan record is malformed (missing {missing}, unknown {unknown}); "
                "it must come from GrowthPlan.to_dict()"
            )
        try:
            return cls(**{k: d[k] for k in _PLAN_FIELDS if k in d})
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(
                f"growth plan record has a bad value ({exc}); it must come from GrowthPlan.to_dict()"
            ) from exc

    def describe(self) -> str:
        """One line for logs: what this step does."""
        if self.kind == "widen":
            return f"widen features.{self.layer}: {self.old_width} -> {self.new_width} channels"
        if self.kind == "deepen":
            return f"deepen: identity block of {self.old_width} channels after features.{self.layer}"
        return f"classes: {self.old_width} -> {self.new_width} outputs"

"""Per-layer gradient statistics of the collective model, the raw material of the learngene criterion.

The paper picks the learngene from how much each layer's weights still move while new tasks arrive: for
every layer and epoch it counts the fraction of weight-gradient entries whose value exceeds a small
threshold. Layers whose gradients settle early hold general, reusable knowledge.

The statistics are accumulated on the training device with a handful of fused ``torch._foreach_*`` ops
per batch (no ``.item()``, no host copy); :meth:`GradientRecorder.end_epoch` does the one host transfer.

**Growth invariance.** Net2WiderNet makes ``c`` copies of a unit and divides its outgoing (consumer) weights
by ``c``, so the gradient reaching each copy's incoming weights shrinks by ``c``: a raw statistic would fall
because of the growth schedule, not because the layer settled. The recorder therefore keeps, per watched
weight, a multiplicity per output row (``m_out``: the product of the split counts the unit went through) and
per input column (``m_in``: the same for the unit that feeds the column), updated by
:meth:`GradientRecorder.on_growth`. Each entry's gradient is multiplied by its row's ``m_out`` (undoing the
split) and then weighted by ``1 / (m_out * m_in)``: all copies of one original unit (or pair of units)
together count as one entry, in the fraction (weighted mean) and in the squared norm (weighted sum). For a
function-preserving widening (no noise) this gives exactly the statistic of the network before the split,
for the widened layer, its consumer and every other layer, whatever the split counts; row scaling alone is
exact for the fraction only when every unit is split the same number of times and never for the norm (each
copy adds its full squared gradient). Networks that never grew have all multiplicities 1 and skip the
extra work.

The invariance is exact **only without growth noise**. With ``growth.noise`` (default 0.05) the copies' shares of
the outgoing weights differ, so their gradients differ and the corrected statistic moves a little: on the test
network, a fraction of 0.5000 (threshold at the median entry) became 0.494-0.531 after one widening with noise
0.05 (``tests/collective/test_recorder_growth.py``; a review measured 0.5000 -> 0.5046 on ``vgg4``). The
correction removes the split's systematic 1/c shrinkage, not the noise's effect.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from learngene.collective.gradient_records import STATS, GradientRecords
from learngene.errors import ConfigError, LearngeneError, ModelError

__all__ = ["STATS", "GradientRecorder", "conv_weights", "layer_name"]

LayerFilter = Callable[[str, nn.Parameter], bool]


def conv_weights(name: str, param: nn.Parameter) -> bool:
    """Default filter: 4-D weights (convolution kernels)."""
    return param.dim() == 4 and name.endswith("weight")


def layer_name(param_name: str) -> str:
    """``features.3.conv.weight`` -> ``features.3``; ``0.weight`` -> ``0``; other names are kept as they are."""
    if param_name.endswith(".weight"):
        base = param_name[: -len(".weight")]
        if base.endswith(".conv"):
            base = base[: -len(".conv")]
        return base
    return param_name


class GradientRecorder(GradientRecords):
    """Per layer and epoch: fraction of weight-gradient entries above ``threshold`` and the gradient L2 norm.

    Per epoch, ``fraction`` is the mean over batches of (entries above threshold / entries) and
    ``grad_norm`` the mean over batches of the layer's gradient L2 norm. ``signed=True`` counts
    ``grad > threshold`` (what the paper's reference code does); ``signed=False`` counts ``|grad| > threshold``.
    A layer whose gradient is ``None`` in a batch (frozen/unused) skips that batch; with no batch at all
    its epoch value is NaN. After growth, tell the recorder each applied plan (:meth:`on_growth`) so the numbers
    stay comparable with those before it (module docstring); ``after_backward(exclude=...)`` leaves out a
    gradient part such as the EWC penalty's.
    """

    def __init__(
        self, threshold: float = 1e-4, signed: bool = False, layer_filter: LayerFilter | None = None
    ) -> None:
        super().__init__(threshold, signed)
        self.layer_filter: LayerFilter = layer_filter if layer_filter is not None else conv_weights
        self._names: list[str] = []  # currently attached layers
        self._params: list[nn.Parameter] = []
        self._pnames: list[str] = []  # parameter names of the attached layers (keys of ``exclude``)
        # per attached layer with a non-trivial multiplicity: (position, row scale, count weight, norm scale)
        self._weighted: list[tuple[int, Tensor | None, Tensor, Tensor]] = []
        self._numel: Tensor | None = None  # [L] float64 on device (effective entry count for grown layers)
        self._acc: Tensor | None = None  # [3, L] float64 on device: sum fraction, sum norm, n batches
        self._index_cache: dict[tuple[int, ...], Tensor] = {}

    # -- collecting ------------------------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> None:
        """(Re)collect the layers to watch; call again after growth (new Parameter objects, maybe new layers).

        Batches already accumulated in the current epoch are kept for layers that still exist.
        """
        chosen: list[tuple[str, nn.Parameter]] = []
        pnames: list[str] = []
        seen: dict[str, str] = {}
        for pname, p in model.named_parameters():
            if not self.layer_filter(pname, p):
                continue
            lname = layer_name(pname)
            if lname in seen:
                raise ModelError(
                    f"gradient recorder: parameters {seen[lname]!r} and {pname!r} map to the same layer name "
                    f"{lname!r}; pass a layer_filter that selects one weight per layer"
                )
            seen[lname] = pname
            chosen.append((lname, p))
            pnames.append(pname)
        if not chosen:
            raise ModelError(
                "gradient recorder: no parameter matched the layer filter (default: 4-D conv weights); the model "
                "has no conv layer -- pass layer_filter=... to choose the weights to watch"
            )
        pending: dict[str, list[float]] = {}
        if self._acc is not None and bool(self._acc[2].any()):
            host = self._acc.cpu()
            pending = {n: host[:, i].tolist() for i, n in enumerate(self._names)}
        device = chosen[0][1].device
        weighted = [self._weights_for(pname, p) for pname, p in zip(pnames, (p for _, p in chosen))]
        self._names = [n for n, _ in chosen]
        self._params = [p for _, p in chosen]
        self._pnames = pnames
        self._weighted = [(i, *w[:3]) for i, w in enumerate(weighted) if w is not None]
        numel = [float(p.numel()) if w is None else w[3] for p, w in zip(self._params, weighted)]
        self._numel = torch.tensor(numel, dtype=torch.float64, device=device)
        acc = torch.zeros(3, len(chosen), dtype=torch.float64)
        for i, n in enumerate(self._names):
            if n in pending:
                acc[:, i] = torch.tensor(pending[n], dtype=torch.float64)
        self._acc = acc.to(device)
        self._index_cache = {}

    def _weights_for(self, pname: str, p: nn.Parameter) -> tuple[Tensor | None, Tensor, Tensor, float] | None:
        """Cached tensors that make ``pname``'s statistic growth-invariant; None when it never split.

        Returns (row scale ``m_out`` or None, count weight ``1/(m_out*m_in)``, norm scale
        ``sqrt(m_out/m_in)`` applied to the raw gradient, effective entry count = sum of the count weights).
        """
        m_out, m_in = self._mult_out.get(pname), self._mult_in.get(pname)
        if m_out is not None and bool((m_out == 1).all()):
            m_out = None
        if m_in is not None and bool((m_in == 1).all()):
            m_in = None
        if m_out is None and m_in is None:
            return None
        if p.dim() < 2:
            raise ModelError(
                f"gradient recorder: {pname!r} has growth multiplicities but is {p.dim()}-D; watch weights with "
                "output rows and input columns (conv kernels or linear weights)"
            )
        rows, cols = p.shape[0], p.shape[1]
        for what, m, n in (("output rows", m_out, rows), ("input columns", m_in, cols)):
            if m is not None and m.numel() != n:
                raise ModelError(
                    f"gradient recorder: growth bookkeeping has {m.numel()} {what} for {pname!r} but the "
                    f"parameter has {n}; call recorder.on_growth(plan) for every applied plan, in order"
                )
        out = (m_out if m_out is not None else torch.ones(rows, dtype=torch.int64)).double()
        inp = (m_in if m_in is not None else torch.ones(cols, dtype=torch.int64)).double()
        tail = [1] * (p.dim() - 2)
        w = (1.0 / out).view(-1, 1, *tail) * (1.0 / inp).view(1, -1, *tail)
        nscale = (out.view(-1, 1, *tail) / inp.view(1, -1, *tail)).sqrt()
        kernel = p.numel() // (rows * cols)
        effective = float(w.sum()) * kernel
        like = {"device": p.device, "dtype": p.dtype}
        row = None if m_out is None else out.view(-1, 1, *tail).to(**like)
        return row, w.to(**like), nscale.to(**like), effective

    @property
    def attached(self) -> list[str]:
        return list(self._names)

    @property
    def param_names(self) -> list[str]:
        """Parameter names of the attached layers (what ``after_backward(exclude=...)`` looks up)."""
        return list(self._pnames)

    def multiplicities(self, param_name: str) -> tuple[list[int] | None, list[int] | None]:
        """(per output row, per input column) split multiplicities of a weight; None where all are 1."""
        m_out, m_in = self._mult_out.get(param_name), self._mult_in.get(param_name)
        return (None if m_out is None else m_out.tolist(), None if m_in is None else m_in.tolist())

    # -- growth ----------------------------------------------------------------------------------------------
    def on_growth(self, plan: Any) -> None:
        """Update the split multiplicities for an applied growth plan (call before the next :meth:`attach`).

        ``widen``: copy ``j`` of unit ``u`` gets ``m_u * c_u`` (``c_u`` = copies of ``u`` in this plan,
        original included) on the producer's rows and on the consumer's input columns (``spatial`` columns per
        channel for a linear consumer). ``deepen``: later blocks shift by one; the identity block inherits the
        multiplicities of the block it follows on both rows and columns (its units are that block's units, so
        copies stay copies); it is all ones unless that block was widened. ``classes`` changes no unit that a
        weight gradient is split over.
        """
        kind = getattr(plan, "kind", None)
        if kind == "classes":
            return
        if kind == "widen":
            self._widen(plan)
        elif kind == "deepen":
            self._deepen(int(plan.layer))
        else:
            raise ConfigError(
                f"GradientRecorder.on_growth needs a growth plan of kind widen/deepen/classes, got {kind!r} "
                f"({type(plan).__name__})"
            )

    def _widen(self, plan: Any) -> None:
        old, spatial = int(plan.old_width), int(plan.spatial)
        index = torch.as_tensor(plan.full_index, dtype=torch.int64).cpu()
        counts = torch.as_tensor(plan.counts, dtype=torch.int64).cpu()
        producer, consumer = f"features.{int(plan.layer)}.conv.weight", f"{plan.consumer}.weight"
        m_out = self._mult_out.get(producer, torch.ones(old, dtype=torch.int64))
        m_in = self._mult_in.get(consumer, torch.ones(old * spatial, dtype=torch.int64))
        for name, m, n in ((producer, m_out, old), (consumer, m_in, old * spatial)):
            if m.numel() != n:
                raise ModelError(
                    f"gradient recorder: {name!r} has {m.numel()} tracked units but the widen plan expects {n}; "
                    "call recorder.on_growth(plan) for every applied plan, in order"
                )
        self._mult_out[producer] = (m_out * counts)[index]
        self._mult_in[consumer] = (m_in.view(old, spatial) * counts.view(-1, 1))[index].reshape(-1)

    def _deepen(self, after: int) -> None:
        def shifted(d: dict[str, Tensor]) -> dict[str, Tensor]:
            out: dict[str, Tensor] = {}
            for key, m in d.items():
                parts = key.split(".", 2)
                if (
                    len(parts) == 3
                    and parts[0] == "features"
                    and parts[1].isdigit()
                    and int(parts[1]) > after
                ):
                    key = f"features.{int(parts[1]) + 1}.{parts[2]}"
                out[key] = m
            return out

        self._mult_out, self._mult_in = shifted(self._mult_out), shifted(self._mult_in)
        source = self._mult_out.get(f"features.{after}.conv.weight")
        if source is not None:
            self._mult_out[f"features.{after + 1}.conv.weight"] = source.clone()
            self._mult_in[f"features.{after + 1}.conv.weight"] = source.clone()

    @torch.no_grad()
    def after_backward(self, exclude: Mapping[str, Tensor] | None = None) -> None:
        """Accumulate the current ``.grad`` of every watched layer (call after ``loss.backward()``).

        ``exclude`` maps parameter names to a gradient part to leave out, e.g. ``EWC.penalty_grads(model)``:
        the statistic should describe the task loss, not the pull towards the old anchor.
        """
        if self._acc is None or self._numel is None:
            raise LearngeneError("gradient recorder: call recorder.attach(model) before after_backward()")
        grads = [p.grad for p in self._params]
        positions = list(range(len(grads)))
        idx: Tensor | None = None
        if any(g is None for g in grads):
            positions = [i for i, g in enumerate(grads) if g is not None]
            if not positions:
                return
            grads = [grads[i] for i in positions]
            idx = self._index_cache.get(tuple(positions))
            if idx is None:  # the set of frozen layers rarely changes: one small upload per pattern
                idx = self._index_cache[tuple(positions)] = torch.tensor(positions, device=self._acc.device)
        if exclude:
            for k, i in enumerate(positions):
                part = exclude.get(self._pnames[i])
                if part is not None:
                    g = grads[k]
                    if part.shape != g.shape:
                        raise ModelError(
                            f"gradient recorder: the excluded gradient for {self._pnames[i]!r} has shape "
                            f"{tuple(part.shape)} but the parameter's gradient has {tuple(g.shape)}"
                        )
                    grads[k] = g - part
        norm_in = grads
        weights: list[tuple[int, Tensor]] = []
        if self._weighted:
            slot = {i: k for k, i in enumerate(positions)}
            grads, norm_in = list(grads), list(grads)
            for i, row, w, nscale in self._weighted:
                k = slot.get(i)
                if k is None:
                    continue
                norm_in[k] = grads[k] * nscale  # sqrt(w) * corrected gradient
                if row is not None:
                    grads[k] = grads[k] * row  # undo the 1/m split of the unit's outgoing weights
                weights.append((k, w))
        if self.signed:
            above = torch._foreach_sub(grads, self.threshold)
        else:
            above = torch._foreach_abs(grads)
            torch._foreach_sub_(above, self.threshold)
        torch._foreach_clamp_min_(above, 0.0)
        torch._foreach_sign_(above)  # 1 where the entry exceeds the threshold, else 0
        for k, w in weights:
            above[k].mul_(w)  # the copies of one unit count once together
        counts = torch._foreach_norm(above, 1)
        norms = torch._foreach_norm(norm_in, 2)
        batch = torch.stack(
            [
                torch.stack([c.to(torch.float64) for c in counts]),
                torch.stack([n.to(torch.float64) for n in norms]),
            ]
        ).to(self._acc.device)
        if idx is None:
            batch[0].div_(self._numel)
            self._acc[:2].add_(batch)
            self._acc[2].add_(1.0)
        else:
            batch[0].div_(self._numel[idx])
            self._acc[:2].index_add_(1, idx, batch)
            self._acc[2].index_add_(0, idx, torch.ones_like(batch[0]))

    def end_epoch(self, task: int, epoch: int) -> dict[str, dict[str, float]]:
        """Close the epoch: one host transfer, append a record, reset the accumulators."""
        if self._acc is None:
            raise LearngeneError("gradient recorder: call recorder.attach(model) before end_epoch()")
        host = self._acc.to("cpu", copy=True)  # the one host transfer (a copy: .cpu() aliases on CPU)
        self._acc.zero_()
        n = host[2]
        frac = torch.where(n > 0, host[0] / n.clamp_min(1), torch.full_like(n, math.nan)).tolist()
        norm = torch.where(n > 0, host[1] / n.clamp_min(1), torch.full_like(n, math.nan)).tolist()
        record = {
            "task": int(task),
            "epoch": int(epoch),
            "layers": list(self._names),
            "fraction": frac,
            "grad_norm": norm,
        }
        self._append(record)
        return {name: {"fraction": f, "grad_norm": g} for name, f, g in zip(self._names, frac, norm)}

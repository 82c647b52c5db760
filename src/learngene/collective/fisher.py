"""The diagonal empirical Fisher information of a model on labelled samples (what EWC weights its pull by).

Per-sample gradients are formed in batches -- layer by layer from one backward pass for the usual
conv/linear/batch-norm networks, ``torch.func.vmap`` otherwise -- instead of one backward pass per sample, and
give the same numbers (:func:`diagonal_fisher_loop` is the slow reference). Split from :mod:`ewc` so the
penalty and its growth bookkeeping stay apart from the numerics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from learngene.errors import ConfigError, DataError, ModelError, NonFiniteError

ParamFilter = Callable[[str, nn.Parameter], bool]

__all__ = ["ParamFilter", "diagonal_fisher", "diagonal_fisher_loop", "exclude_classifier"]


def exclude_classifier(name: str, param: nn.Parameter) -> bool:
    """Default EWC selection: everything but the growing ``classifier.*`` head (its rows change per task)."""
    return not name.startswith("classifier.")


# ----------------------------------------------------------------------------------------------------------
# Fisher information
# ----------------------------------------------------------------------------------------------------------


def _selected_params(model: nn.Module, params: ParamFilter | None) -> dict[str, nn.Parameter]:
    chosen = {
        name: p
        for name, p in model.named_parameters()
        if p.requires_grad and (params is None or params(name, p))
    }
    if not chosen:
        raise ModelError(
            "no trainable parameter was selected for the Fisher information: the model has no parameter with "
            "requires_grad=True that passes the `params` filter; unfreeze some layers or widen the filter"
        )
    return chosen


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then restore every submodule's own flag (some may be deliberately frozen)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, was_training in flags:
            m.training = was_training


@contextmanager
def _same_parameters(model: nn.Module) -> Iterator[None]:
    """Put every module's own Parameter objects back afterwards: ``functional_call`` on a model that holds one
    module under two names (shared weights) leaves a swapped-in plain tensor behind (torch 2.x)."""
    owned = [(m, dict(m._parameters)) for m in model.modules()]
    try:
        yield
    finally:
        for m, params in owned:
            for name, p in params.items():
                if m._parameters.get(name) is not p:
                    m._parameters[name] = p


def _check_samples(model: nn.Module, inputs: Tensor, targets: Tensor) -> None:
    """Fail early with a readable message (an out-of-range target is a device assert on CUDA)."""
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise DataError(
            "Fisher information needs `inputs` and `targets` as tensors (images [N,...], labels [N])"
        )
    if inputs.dim() < 1 or inputs.shape[0] == 0:
        raise DataError(
            "Fisher information needs at least one sample, got an empty `inputs`; pass some training "
            "images of the task that was just learned"
        )
    if targets.dim() != 1 or targets.shape[0] != inputs.shape[0]:
        raise DataError(
            f"`targets` must be a 1-D tensor of class indices with one entry per input; got shape "
            f"{tuple(targets.shape)} for {inputs.shape[0]} inputs"
        )
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise DataError(f"`targets` must hold integer class indices, got dtype {targets.dtype}")
    device = model_device(model)
    with torch.no_grad(), _eval_mode(model):
        n_classes = model(inputs[:1].to(device)).shape[-1]
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= n_classes:
        raise DataError(
            f"`targets` hold class indices in [{lo}, {hi}] but the model outputs {n_classes} classes; grow the "
            "classifier before computing the Fisher or remap the labels to 0..n_classes-1"
        )


def _finite_or_raise(fisher: dict[str, Tensor]) -> dict[str, Tensor]:
    bad = torch.stack([~torch.isfinite(f).all() for f in fisher.values()])
    if bool(bad.any()):
        names = [n for n, b in zip(fisher, bad.tolist()) if b]
        raise NonFiniteError(
            f"the Fisher information of {names} is NaN/Inf: the model produces non-finite losses on these "
            "samples; lower the learning rate or check the inputs for NaN before consolidating"
        )
    return fisher


# ----------------------------------------------------------------------------------------------------------
# Per-sample squared gradients layer by layer (the fast path of diagonal_fisher)
# ----------------------------------------------------------------------------------------------------------
#
# In eval mode a network made of the layers below treats every sample on its own, so one ordinary backward
# of the *summed* loss gives each sample's gradient with respect to each layer's output. A layer's per-sample
# weight gradient is then a small product of its input and that output gradient (a batched matmul over the
# im2col patches for a convolution), squared and summed over the chunk right away. The numbers are the
# vmap(grad) ones up to float rounding, without vmap's per-sample convolution weight gradient (grouped
# convolutions), which is slow on CPU and gets slower as the layers widen (see BENCHMARKS.md, Speed).

# Modules known to treat samples independently in eval mode (exact type, so a subclass with its own forward
# goes to the generic path). Library containers are named by their qualified name to avoid import cycles.
_SAMPLEWISE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Sequential,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Flatten,
    nn.Identity,
)
_SAMPLEWISE_NAMES = frozenset(
    {
        "learngene.models.vgg.ExpandableVGG",
        "learngene.models.layers.ConvBlock",
        "learngene.models.individual.IndividualModel",
    }
)
# elements of one im2col / per-sample-gradient buffer (16 MiB in float32): a convolution's per-sample gradients
# are formed for as many samples at a time as fit, which bounds the extra memory whatever the chunk size
_UNFOLD_BUDGET = 1 << 22


def _samplewise(m: nn.Module) -> bool:
    t = type(m)
    return t in _SAMPLEWISE_TYPES or f"{t.__module__}.{t.__qualname__}" in _SAMPLEWISE_NAMES


def _layer_supported(m: nn.Module) -> bool:
    """Layers whose per-sample parameter gradients are computed here."""
    if type(m) is nn.Conv2d:
        return m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)
    if type(m) is nn.Linear:
        return True
    if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        return m.running_mean is not None and m.running_var is not None  # eval mode uses running stats
    return False


def _layerwise_owners(model: nn.Module, selected: dict[str, nn.Parameter]) -> dict[nn.Module, dict[str, str]] | None:
    """``{module: {local param name: full name}}`` covering every selected parameter, or None when the
    layer-wise path does not apply (an unknown module type, a shared parameter, an unsupported layer)."""
    if not all(_samplewise(m) for m in model.modules()):
        return None
    owners: dict[nn.Module, dict[str, str]] = {}
    seen: set[int] = set()
    for mname, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if id(p) in seen:
                return None  # a parameter used by two modules: its per-sample gradient is a sum over both
            seen.add(id(p))
            full = f"{mname}.{pname}" if mname else pname
            if full in selected:
                if not _layer_supported(m) or selected[full] is not p:
                    return None
                owners.setdefault(m, {})[pname] = full
    if sum(len(v) for v in owners.values()) != len(selected):
        return None
    return owners


def _add_sq_grads(m: nn.Module, a: Tensor, g: Tensor, names: dict[str, str], sums: dict[str, Tensor]) -> None:
    """Add sum over samples of the squared per-sample gradients of ``m``'s parameters (input ``a``, output
    gradient ``g``, both batched) to ``sums``."""
    n = a.shape[0]
    w_name, b_name = names.get("weight"), names.get("bias")
    if isinstance(m, nn.Conv2d):
        cout = g.shape[1]
        g3 = g.reshape(n, cout, -1)  # [n, Cout, L]
        if b_name is not None:
            sums[b_name].add_(g3.sum(2).square_().sum(0))
        if w_name is not None:
            ckk = m.weight[0].numel()
            # bound both the im2col buffer [s, ckk, L] and the per-sample gradients [s, Cout, ckk]
            step = max(1, _UNFOLD_BUDGET // max(1, ckk * max(g3.shape[2], cout)))
            acc = g3.new_zeros(cout, ckk)
            for s in range(0, n, step):
                cols = F.unfold(a[s : s + step], m.kernel_size, dilation=m.dilation, padding=m.padding,
                                stride=m.stride)  # [s, Cin*kh*kw, L], channel-major like the weight
                acc.add_(torch.bmm(g3[s : s + step], cols.transpose(1, 2)).square_().sum(0))
            sums[w_name].add_(acc.view_as(m.weight))
    elif isinstance(m, nn.Linear):
        a3 = a.reshape(n, -1, a.shape[-1])
        g3 = g.reshape(n, -1, g.shape[-1])
        if b_name is not None:
            sums[b_name].add_(g3.sum(1).square_().sum(0))
        if w_name is not None:
            if a3.shape[1] == 1:  # one position per sample: sum_n (g_n a_n^T)^2 = (g^2)^T a^2
                sums[w_name].add_(g3[:, 0].square().t() @ a3[:, 0].square())
            else:
                sums[w_name].add_(torch.bmm(g3.transpose(1, 2), a3).square_().sum(0))
    else:  # batch norm in eval mode: y = (a - mean) / sqrt(var + eps) * weight + bias
        c = a.shape[1]
        g3 = g.reshape(n, c, -1)
        if b_name is not None:
            sums[b_name].add_(g3.sum(2).square_().sum(0))
        if w_name is not None:
            mean = m.running_mean.view(1, c, 1)
            inv = torch.rsqrt(m.running_var.view(1, c, 1) + m.eps)
            xhat = (a.reshape(n, c, -1) - mean) * inv
            sums[w_name].add_((g3 * xhat).sum(2).square_().sum(0))


def _layerwise_fisher_sums(
    model: nn.Module,
    owners: dict[nn.Module, dict[str, str]],
    inputs: Tensor,
    targets: Tensor,
    batch_size: int,
    device: torch.device,
    sums: dict[str, Tensor],
) -> bool:
    """Accumulate per-sample squared gradients into ``sums`` chunk by chunk; False (``sums`` then
    undefined) when the forward pass turned out not to fit the layer-wise path."""
    captured: dict[nn.Module, list[tuple[Tensor, Tensor, int, int]]] = {}

    def keep(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        a = args[0] if args else None
        if isinstance(a, Tensor) and isinstance(out, Tensor):
            captured.setdefault(m, []).append((a, out, a._version, out._version))
        else:
            captured.setdefault(m, []).append(None)  # type: ignore[arg-type]  # marks "not understood"

    handles = [m.register_forward_hook(keep) for m in owners]
    mods = list(owners)
    try:
        for start in range(0, inputs.shape[0], batch_size):
            x = inputs[start : start + batch_size].to(device)
            y = targets[start : start + batch_size].to(device=device, dtype=torch.long)
            captured.clear()
            with torch.enable_grad():
                logits = model(x)
                if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                    return False
                records = []
                for m in mods:
                    rec = captured.get(m, [])
                    if len(rec) != 1 or rec[0] is None:
                        return False  # called twice (shared module) or not at all: leave it to vmap
                    a, out, va, vo = rec[0]
                    if a._version != va or out._version != vo:
                        return False  # modified in place after the layer (e.g. ReLU(inplace=True))
                    if a.shape[0] != x.shape[0] or out.shape[0] != x.shape[0]:
                        return False  # not batch-first: the per-sample split below would be wrong
                    records.append((a, out))
                loss = F.cross_entropy(logits, y, reduction="sum")  # samples are independent: sum of per-sample
                grads = torch.autograd.grad(loss, [out for _, out in records], allow_unused=True)
            for m, (a, _), g in zip(mods, records, grads):
                if g is not None:
                    _add_sq_grads(m, a.detach(), g, owners[m], sums)
    finally:
        for h in handles:
            h.remove()
        captured.clear()
    return True


def diagonal_fisher(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    batch_size: int = 64,
    params: ParamFilter | None = None,
) -> dict[str, Tensor]:
    """Empirical diagonal Fisher: mean over samples of the squared per-sample cross-entropy gradient.

    The model runs in eval mode so a sample's gradient does not depend on the other samples of its chunk
    (batch-norm uses running statistics, dropout is off); every module's training flag is restored
    afterwards. Samples are processed in chunks of ``batch_size``. Two exact ways to the per-sample
    gradients, same numbers up to float rounding:

    * layer-wise (used when every module is a known sample-wise layer -- conv, linear, batch-norm,
      activations, pooling, dropout, containers, the library's models -- and the selected parameters belong
      to ``Conv2d`` / ``Linear`` / ``BatchNorm``): one backward of the summed loss gives each sample's output
      gradient at every layer, and the per-sample weight gradients are formed from the saved inputs (im2col +
      batched matmul for convolutions), squared and summed per chunk;
    * otherwise ``vmap(grad(...))`` from ``torch.func`` (peak memory about ``batch_size`` x number of selected
      parameters).

    Returns ``{name: tensor like the param}`` for the selected trainable parameters (``params`` filter;
    ``None`` = all trainable ones).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    _check_samples(model, inputs, targets)
    selected = _selected_params(model, params)
    device = model_device(model)
    n = inputs.shape[0]
    owners = _layerwise_owners(model, selected)
    if owners is not None:
        sums = {name: torch.zeros_like(p, requires_grad=False) for name, p in selected.items()}
        with _eval_mode(model), torch.no_grad():
            done = _layerwise_fisher_sums(model, owners, inputs, targets, batch_size, device, sums)
        if done:
            return _finite_or_raise({name: s.div_(n) for name, s in sums.items()})
    detached = {name: p.detach() for name, p in selected.items()}
    # the other parameters enter as constants: left as live Parameters they would tie the result to the
    # autograd graph of the model (e.g. the head's weight appears in every feature gradient)
    constants = {name: p.detach() for name, p in model.named_parameters() if name not in selected}
    sums = {name: torch.zeros_like(p) for name, p in detached.items()}

    def sample_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        logits = functional_call(model, {**constants, **p}, (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    per_sample_grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    with _eval_mode(model), _same_parameters(model), torch.no_grad():  # grad differentiates inside no_grad
        for start in range(0, n, batch_size):
            x = inputs[start : start + batch_size].to(device)
            y = targets[start : start + batch_size].to(device=device, dtype=torch.long)
            grads = per_sample_grads(detached, x, y)
            for name, g in grads.items():
                sums[name].add_(g.pow(2).sum(dim=0))
    return _finite_or_raise({name: s.div_(n) for name, s in sums.items()})


def diagonal_fisher_loop(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    params: ParamFilter | None = None,
) -> dict[str, Tensor]:
    """Reference Fisher with one autograd backward per sample (slow; for tests and the speed benchmark).

    Uses ``torch.autograd.grad`` so existing ``.grad`` fields of the model are left untouched.
    """
    _check_samples(model, inputs, targets)
    selected = _selected_params(model, params)
    names = list(selected)
    tensors = list(selected.values())
    device = model_device(model)
    sums = [torch.zeros_like(p, requires_grad=False) for p in tensors]
    n = inputs.shape[0]
    with _eval_mode(model):
        for i in range(n):
            x = inputs[i : i + 1].to(device)
            y = targets[i : i + 1].to(device=device, dtype=torch.long)
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
            for s, g in zip(sums, grads):
                if g is not None:
                    s.add_(g.detach().pow(2))
    return _finite_or_raise({name: s.div_(n) for name, s in zip(names, sums)})


# ----------------------------------------------------------------------------------------------------------
# EWC plugin
# ----------------------------------------------------------------------------------------------------------

"""Transformer learngenes as weight templates: block ``l`` of ``L`` is ``sum_t c(l, t) * T_t``.

TLEG (two templates, ``c(l) = [1, l/L]``), SWS (one template per stage) and plain stacking (one template per
layer) are the same rule with different fixed coefficients, so one auxiliary network, one descendant
builder and one artifact layout serve all three; a new rule only supplies :meth:`ExpansionRule.coefficients`.

:class:`ExpandedViT` is the auxiliary network: a timm ``VisionTransformer`` whose block sequence is replaced
by one template block holding, for every block tensor, a stacked parameter ``[n_templates, *shape]``.  Its
forward expands the templates for any depth and runs each layer with ``torch.func.functional_call``;
:meth:`ExpandedViT.materialize` writes the same expanded weights into an ordinary timm ViT (a descendant).

**Learngene layout** (:meth:`ExpandedViT.templates_state_dict`): ``templates.<block tensor>`` (e.g.
``templates.attn.qkv.weight`` of shape ``[n_templates, 3*dim, dim]``) plus the shared tensors under their
timm names (``patch_embed.proj.weight``, ``pos_embed``, ``fc_norm.weight``, ... and ``head.*`` on request).
:meth:`ExpandedViT.config` is the JSON-able record ``{"name": "expanded_vit", "vit": ..., "rule": ...,
"depth": ...}`` that :meth:`ExpandedViT.from_templates` needs alongside the tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from learngene.errors import GeneError, ModelError
from learngene.models.registry import register_architecture
from learngene.models.vit import (
    BLOCK_PREFIX,
    build_vit,
    construct_vit,
    full_config,
    shared_state_dict,
    vit_config,
    vit_kwargs,
    vit_preset_config,
)
from learngene.runtime import seeded

__all__ = [
    "ExpandedViT",
    "ExpansionRule",
    "LinearRule",
    "StackRule",
    "StagewiseRule",
    "TEMPLATE_PREFIX",
    "combine_templates",
    "list_rules",
    "register_rule",
    "rule_from_spec",
]

TEMPLATE_PREFIX = "templates."
_RULES: dict[str, type[ExpansionRule]] = {}


def _depth(depth: Any) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ModelError(f"depth must be an integer >= 1, got {depth!r}")
    return depth


class ExpansionRule:
    """Fixed coefficients ``c(l, t)`` that turn ``n_templates`` tensors into the blocks of a depth-``L`` net.

    Subclasses set ``name``, implement :meth:`_coefficients` and, when some depths are impossible,
    :meth:`_check`.  :meth:`init_roles` says which templates start like a block (``"base"``) and which
    start as a per-layer change (``"delta"``): LayerNorm weights of a delta start at 0, of a base at 1.
    """

    name: ClassVar[str] = ""

    def __init__(self, n_templates: int) -> None:
        if isinstance(n_templates, bool) or not isinstance(n_templates, int) or n_templates < 1:
            raise ModelError(f"{self.name or 'rule'} needs n_templates >= 1, got {n_templates!r}")
        self._n = n_templates

    @property
    def n_templates(self) -> int:
        return self._n

    def _check(self, depth: int) -> None:
        """Raise ModelError when this rule cannot expand to ``depth`` (``depth`` is already >= 1)."""

    def _coefficients(self, depth: int) -> list[list[float]]:
        raise NotImplementedError

    def check_depth(self, depth: int) -> int:
        """``depth`` as an int, or a ModelError saying why this rule cannot build it."""
        depth = _depth(depth)
        self._check(depth)
        return depth

    def coefficients(self, depth: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """``[depth, n_templates]``: row ``l`` weights the templates that make block ``l``."""
        depth = self.check_depth(depth)
        return torch.tensor(self._coefficients(depth), dtype=dtype).reshape(depth, self.n_templates)

    def init_roles(self) -> list[str]:
        return ["base"] * self.n_templates

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "n_templates": self.n_templates}

    @classmethod
    def _from_fields(cls, cfg: dict[str, Any]) -> ExpansionRule:
        return cls(cfg["n_templates"])

    @staticmethod
    def from_config(cfg: Mapping[str, Any]) -> ExpansionRule:
        """Rebuild a rule from :meth:`to_config` (dispatching on ``cfg["name"]``)."""
        if not isinstance(cfg, Mapping) or "name" not in cfg:
            raise ModelError(f"an expansion rule config must be a dict with a 'name', got {cfg!r}")
        cls = _RULES.get(cfg["name"])
        if cls is None:
            raise ModelError(
                f"unknown expansion rule {cfg['name']!r}; known rules: {', '.join(sorted(_RULES))}"
            )
        try:
            return cls._from_fields(dict(cfg))
        except KeyError as err:
            raise ModelError(f"expansion rule config {dict(cfg)} lacks the field {err}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExpansionRule) and self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_config().items())))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items() if k != "name")
        return f"{type(self).__name__}({fields})"


def register_rule(cls: type[ExpansionRule]) -> type[ExpansionRule]:
    """Class decorator: make a rule reachable by its ``name`` from configs and :func:`rule_from_spec`."""
    if not cls.name:
        raise ModelError(f"expansion rule {cls.__name__} needs a non-empty class attribute 'name'")
    existing = _RULES.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ModelError(f"expansion rule name {cls.name!r} is already taken by {existing.__qualname__}")
    _RULES[cls.name] = cls
    return cls


def list_rules() -> list[str]:
    return sorted(_RULES)


@register_rule
class LinearRule(ExpansionRule):
    """TLEG: ``block l = T_0 + (l / L) * T_1`` for ``l = 0..L-1`` (T_0 is the base, T_1 the per-layer slope)."""

    name = "linear"

    def __init__(self, n_templates: int = 2) -> None:
        if n_templates != 2:
            raise ModelError(f"the linear (TLEG) rule has exactly 2 templates, got {n_templates!r}")
        super().__init__(2)

    def _coefficients(self, depth: int) -> list[list[float]]:
        return [[1.0, layer / depth] for layer in range(depth)]

    def init_roles(self) -> list[str]:
        return ["base", "delta"]


@register_rule
class StagewiseRule(ExpansionRule):
    """SWS: ``n_stages`` templates; block ``l`` of ``L`` copies template ``floor(l * n / L)`` (0,0,0,1,1,1).

    Every stage starts like an ordinary block (all templates are ``"base"``): each one is used on its own,
    never added to another, so a zero LayerNorm would switch its stage off.  Depths below ``n_stages``
    are refused because a stage would get no block.
    """

    name = "stagewise"

    def __init__(self, n_stages: int = 2) -> None:
        super().__init__(n_stages)

    @property
    def n_stages(self) -> int:
        return self.n_templates

    def stage_map(self, depth: int) -> list[int]:
        depth = self.check_depth(depth)
        return [layer * self.n_stages // depth for layer in range(depth)]

    def _check(self, depth: int) -> None:
        if depth < self.n_stages:
            raise ModelError(
                f"the stagewise rule with {self.n_stages} stages needs depth >= {self.n_stages} "
                f"(one block per stage at least), got {depth}; use a deeper model or fewer stages"
            )

    def _coefficients(self, depth: int) -> list[list[float]]:
        return [[1.0 if t == s else 0.0 for t in range(self.n_stages)] for s in self.stage_map(depth)]

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "n_stages": self.n_stages}

    @classmethod
    def _from_fields(cls, cfg: dict[str, Any]) -> ExpansionRule:
        return cls(cfg["n_stages"])


@register_rule
class StackRule(ExpansionRule):
    """Plain stacking: template ``l`` is block ``l``; only the depth the templates were made for exists."""

    name = "stack"

    def _check(self, depth: int) -> None:
        if depth != self.n_templates:
            raise ModelError(
                f"the stack rule holds exactly {self.n_templates} blocks, so it builds depth {self.n_templates} "
                f"only, not {depth}; use the linear or stagewise rule for other depths"
            )

    def _coefficients(self, depth: int) -> list[list[float]]:
        return [[1.0 if t == layer else 0.0 for t in range(depth)] for layer in range(depth)]


def rule_from_spec(spec: ExpansionRule | Mapping[str, Any] | str, depth: int | None = None) -> ExpansionRule:
    """A rule from an instance, a config dict, or a string: ``"linear"``, ``"stagewise"`` (2 stages),
    ``"stagewise:3"``, or ``"stack"`` (one template per layer of ``depth``)."""
    if isinstance(spec, ExpansionRule):
        return spec
    if isinstance(spec, Mapping):
        return ExpansionRule.from_config(spec)
    if not isinstance(spec, str):
        raise ModelError(f"expansion rule must be a name, a config dict or an ExpansionRule, got {spec!r}")
    name, _, arg = spec.partition(":")
    if name not in _RULES:
        raise ModelError(f"unknown expansion rule {name!r}; known rules: {', '.join(sorted(_RULES))}")
    if arg:
        try:
            n = int(arg)
        except ValueError:
            raise ModelError(f"rule spec {spec!r}: the part after ':' must be an integer") from None
        return _RULES[name](n)
    if name == "stack":
        if depth is None:
            raise ModelError("the stack rule needs a depth (one template per layer); pass 'stack:N'")
        return StackRule(_depth(depth))
    return _RULES[name]()


def combine_templates(templates: Tensor, row: list[float]) -> Tensor:
    """``sum_t row[t] * templates[t]``, skipping zero terms and multiplying by 1 never.

    Elementwise in a fixed order, so a block comes out bit-identical whatever the depth or device batch,
    and stagewise / stacked blocks are exact copies of their template.
    """
    out: Tensor | None = None
    for t, c in enumerate(row):
        if c == 0.0:
            continue
        term = templates[t] if c == 1.0 else templates[t] * c
        out = term if out is None else out + term
    return torch.zeros_like(templates[0]) if out is None else out


class _ExpandedBlocks(nn.Module):
    """Stands in for ``VisionTransformer.blocks``: runs ``depth`` blocks expanded from one template block."""

    def __init__(self, templates: nn.Module, rule: ExpansionRule, depth: int, drop_path_rate: float) -> None:
        super().__init__()
        self.templates = templates
        self.rule = rule
        self.depth = rule.check_depth(depth)
        self.drop_path_rate = drop_path_rate
        self._drop_paths = [m for m in templates.modules() if hasattr(m, "drop_prob")]

    def block_weights(self, depth: int) -> list[dict[str, Tensor]]:
        coeffs = self.rule.coefficients(depth).tolist()
        params = dict(self.templates.named_parameters())
        return [{n: combine_templates(t, row) for n, t in params.items()} for row in coeffs]

    def forward(self, x: Tensor) -> Tensor:
        from torch.func import functional_call

        depth = self.depth
        coeffs = self.rule.coefficients(depth).tolist()
        params = dict(self.templates.named_parameters())
        for layer, row in enumerate(coeffs):
            rate = self.drop_path_rate * layer / (depth - 1) if depth > 1 else 0.0  # timm's linear schedule
            for module in self._drop_paths:
                module.drop_prob = rate
            weights = {n: combine_templates(t, row) for n, t in params.items()}
            x = functional_call(self.templates, weights, (x,))
        return x

    def extra_repr(self) -> str:
        return f"rule={self.rule!r}, depth={self.depth}"


def _init_templates(block: nn.Module, roles: list[str], init_values: float | None) -> None:
    """Replace every block parameter by a ``[n_templates, *shape]`` stack initialised per TLEG.

    Linear weights: truncated normal (std 0.02) for every template; biases: 0; LayerNorm weights and
    LayerScale gammas: their usual value (1 / ``init_values``) for ``"base"`` templates, 0 for ``"delta"``.
    """
    from timm.layers import LayerScale

    k = len(roles)
    for mod_name, module in block.named_modules():
        for p_name, param in list(module.named_parameters(recurse=False)):
            stack = torch.zeros(k, *param.shape, dtype=param.dtype, device=param.device)
            where = f"{mod_name}.{p_name}"
            for t, role in enumerate(roles):
                if p_name == "bias":
                    continue
                if isinstance(module, nn.Linear) and p_name == "weight":
                    nn.init.trunc_normal_(stack[t], std=0.02)
                elif isinstance(module, nn.LayerNorm) and p_name == "weight":
                    stack[t].fill_(1.0 if role == "base" else 0.0)
                elif isinstance(module, LayerScale) and p_name == "gamma":
                    stack[t].fill_(float(init_values or 1e-5) if role == "base" else 0.0)
                else:
                    raise ModelError(
                        f"block parameter {where} ({type(module).__name__}) has no template init rule"
                    )
            setattr(module, p_name, nn.Parameter(stack))


@register_architecture("expanded_vit")
class ExpandedViT(nn.Module):
    """The auxiliary network of a transformer learngene: shared embeddings/norm/head plus block templates.

    ``vit`` is a ViT shape record (:func:`~learngene.models.vit.vit_config`,
    :func:`~learngene.models.vit.vit_preset_config`), a preset name, or a timm ``VisionTransformer`` to copy;
    ``depth`` (default: the record's) is how many expanded blocks the forward runs.  ``seed`` makes the
    initialisation reproducible without touching the global RNG.
    """

    def __init__(
        self,
        vit: Mapping[str, Any] | nn.Module | str,
        rule: ExpansionRule | Mapping[str, Any] | str = "linear",
        depth: int | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(vit, str):
            cfg = vit_preset_config(vit)
        elif isinstance(vit, nn.Module):
            cfg = vit_config(vit)
        else:
            cfg = full_config(vit)
        depth = _depth(cfg["depth"] if depth is None else depth)
        self.rule = rule_from_spec(rule, depth)
        self.rule.check_depth(depth)
        self.vit_cfg: dict[str, Any] = {**cfg, "depth": depth}
        kwargs = vit_kwargs(self.vit_cfg)
        rate = kwargs["drop_path_rate"]
        with seeded(seed):
            # depth 2 with drop path so the template block owns DropPath modules (timm gives block 0 none)
            shell = construct_vit(kwargs, depth=2 if rate > 0 else 1)
            template_block = shell.blocks[-1]
            _init_templates(template_block, self.rule.init_roles(), self.vit_cfg["init_values"])
        shell.blocks = _ExpandedBlocks(template_block, self.rule, depth, rate)
        self.vit = shell

    # ------------------------------------------------------------------ views
    @property
    def depth(self) -> int:
        """The depth the forward runs at (the auxiliary depth)."""
        return self.vit.blocks.depth

    @property
    def templates(self) -> nn.Module:
        """The template block: a timm ``Block`` whose parameters are ``[n_templates, *shape]`` stacks."""
        return self.vit.blocks.templates

    @property
    def num_classes(self) -> int:
        return int(self.vit_cfg["num_classes"])

    def block_weights(self, depth: int | None = None) -> list[dict[str, Tensor]]:
        """The expanded weights of every block at ``depth`` (block-relative names, autograd-connected)."""
        return self.vit.blocks.block_weights(self.rule.check_depth(self.depth if depth is None else depth))

    def forward(self, x: Tensor, depth: int | None = None) -> Tensor:
        """Logits of the expanded net at ``depth`` (default: the auxiliary depth)."""
        if depth is None:
            return self.vit(x)
        blocks = self.vit.blocks
        old, blocks.depth = blocks.depth, self.rule.check_depth(depth)
        try:
            return self.vit(x)
        finally:
            blocks.depth = old

    # ------------------------------------------------------------------ descendants
    @torch.no_grad()
    def materialize(
        self, depth: int, num_classes: int | None = None, *, copy_head: bool = False, seed: int | None = None
    ) -> nn.Module:
        """A plain timm ``VisionTransformer`` of ``depth`` blocks expanded by the rule (any depth the rule allows).

        Patch/position embeddings, tokens and the final norm (``fc_norm`` with average pooling) are copied;
        the head is fresh (seeded by ``seed``) unless ``copy_head`` and the class count is unchanged.
        """
        depth = self.rule.check_depth(depth)
        classes = self.num_classes if num_classes is None else num_classes
        if copy_head and classes != self.num_classes:
            raise ModelError(
                f"cannot copy a {self.num_classes}-class head into a {classes}-class descendant; "
                "pass copy_head=False for a fresh head"
            )
        with seeded(seed):
            desc = build_vit({**self.vit_cfg, "depth": depth, "num_classes": classes})
        state = desc.state_dict()
        shared = shared_state_dict(self.vit, include_head=copy_head)
        unknown = sorted(set(shared) - set(state))
        if unknown:  # a bug guard: the shell and the descendant come from the same record
            raise ModelError(f"descendant lacks the learngene's shared tensors {unknown}")
        state.update({k: v.clone() for k, v in shared.items()})
        for layer, weights in enumerate(self.block_weights(depth)):
            state.update({f"{BLOCK_PREFIX}{layer}.{n}": w.detach().clone() for n, w in weights.items()})
        desc.load_state_dict(state, strict=True)
        ref = next(iter(self.templates.parameters()))
        return desc.to(device=ref.device)

    # ------------------------------------------------------------------ the learngene
    def config(self) -> dict[str, Any]:
        """JSON-able record: the ViT shape (depth = auxiliary depth), the rule, the auxiliary depth."""
        return {
            "name": "expanded_vit",
            "vit": dict(self.vit_cfg),
            "rule": self.rule.to_config(),
            "depth": self.depth,
        }

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], *, seed: int | None = None) -> ExpandedViT:
        if not isinstance(cfg, Mapping) or cfg.get("name", "expanded_vit") != "expanded_vit":
            raise ModelError(f"config is not an 'expanded_vit' record: {cfg!r}")
        missing = [k for k in ("vit", "rule") if k not in cfg]
        if missing:
            raise ModelError(f"expanded_vit config lacks {missing}; it must come from ExpandedViT.config()")
        return cls(cfg["vit"], cfg["rule"], cfg.get("depth"), seed=seed)

    def templates_state_dict(self, include_head: bool = False) -> dict[str, Tensor]:
        """The learngene as flat tensors: ``templates.*`` stacks plus shared tensors under timm names.

        ``include_head=False`` (default) leaves out ``head.*``: descendants usually get a fresh head.
        """
        out = {f"{TEMPLATE_PREFIX}{k}": v.detach().clone() for k, v in self.templates.state_dict().items()}
        out.update({k: v.clone() for k, v in shared_state_dict(self.vit, include_head=include_head).items()})
        return out

    def stored_params(self, include_head: bool = False) -> int:
        """Numbers a user must keep to build a descendant of any depth (templates + shared parts)."""
        return sum(v.numel() for v in self.templates_state_dict(include_head=include_head).values())

    @classmethod
    def from_templates(
        cls, tensors: Mapping[str, Tensor], config: Mapping[str, Any], *, seed: int | None = None
    ) -> ExpandedViT:
        """Rebuild the auxiliary net from :meth:`templates_state_dict` tensors and :meth:`config`.

        ``head.*`` may be absent (then the head is fresh, seeded by ``seed``); anything else missing,
        unexpected or mis-shaped is refused with a :class:`GeneError`.
        """
        try:
            model = cls.from_config(config, seed=seed)
        except ModelError as err:
            raise GeneError(f"the learngene's config cannot be built: {err}") from err
        own = model.templates_state_dict(include_head=True)
        given = dict(tensors)
        missing = sorted(k for k in set(own) - set(given) if not k.startswith("head."))
        unexpected = sorted(set(given) - set(own))
        if missing or unexpected:
            raise GeneError(
                f"learngene tensors do not match its config: missing {missing}, unexpected {unexpected}; "
                "the file is truncated or belongs to another model"
            )
        bad = [
            f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
            for k, v in given.items()
            if v.shape != own[k].shape
        ]
        if bad:
            raise GeneError(f"learngene tensor shapes do not match its config: {bad[:3]}")
        with torch.no_grad():
            templates = {
                k[len(TEMPLATE_PREFIX) :]: v for k, v in given.items() if k.startswith(TEMPLATE_PREFIX)
            }
            shared = {k: v for k, v in given.items() if not k.startswith(TEMPLATE_PREFIX)}
            model.templates.load_state_dict(templates, strict=True)
            missing_shared, _ = model.vit.load_state_dict(shared, strict=False)
        left = [k for k in missing_shared if not k.startswith(("head.", "blocks."))]
        if left:  # a bug guard: the checks above should have caught it
            raise GeneError(f"learngene is missing shared tensors {left}")
        return model

    def extra_repr(self) -> str:
        return f"rule={self.rule!r}, depth={self.depth}, embed_dim={self.vit_cfg['embed_dim']}"

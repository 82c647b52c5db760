"""The auxiliary net's distillation: the loss, and its training loop on the engine."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from learngene.errors import ConfigError, ModelError
from learngene.models.expansion import ExpandedViT
from learngene.models.vit import build_vit
from learngene.runtime import seeded
from learngene.vit.auxiliary import distillation_loss, train_distilled


def _logits(seed: int, n: int = 8, c: int = 5) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed)) * 3


def test_soft_loss_is_kl_times_t_squared_mixed_with_ce():
    s, t, y = _logits(0), _logits(1), torch.arange(8) % 5
    T = 2.0
    p_t = F.softmax(t / T, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / T, -1))).sum(-1).mean() * T * T
    torch.testing.assert_close(distillation_loss(s, t, mode="soft", alpha=1.0, temperature=T), kl)
    mixed = distillation_loss(s, t, y, mode="soft", alpha=0.25, temperature=T)
    torch.testing.assert_close(mixed, 0.75 * F.cross_entropy(s, y) + 0.25 * kl)
    assert float(distillation_loss(t, t, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)


def test_hard_loss_uses_teacher_argmax():
    s, t, y = _logits(0), _logits(1), torch.arange(8) % 5
    hard = distillation_loss(s, t, y, mode="hard", alpha=0.5)
    torch.testing.assert_close(hard, 0.5 * F.cross_entropy(s, y) + 0.5 * F.cross_entropy(s, t.argmax(-1)))


def test_loss_settings_are_checked():
    s, t = _logits(0), _logits(1)
    with pytest.raises(ConfigError, match="'soft' or 'hard'"):
        distillation_loss(s, t, mode="medium")
    with pytest.raises(ConfigError, match="needs targets"):
        distillation_loss(s, t, alpha=0.5)
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        distillation_loss(s, t, alpha=1.0, temperature=0)
    with pytest.raises(ModelError, match="same label set"):
        distillation_loss(s, _logits(1, c=4), alpha=1.0)


def _kl(student, teacher, x) -> float:
    student.eval()
    with torch.no_grad():
        return float(distillation_loss(student(x), teacher(x), mode="soft", alpha=1.0, temperature=2.0))


def test_distillation_lowers_kl_and_leaves_teacher_untouched(tiny_cfg, batch):
    with seeded(0):
        teacher = build_vit({**tiny_cfg, "depth": 2})
    teacher.train()  # the loop must switch it to eval for its forward, then restore this
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = ExpandedViT(tiny_cfg, "linear", depth=2, seed=1)
    y = torch.zeros(len(batch), dtype=torch.long)
    before = _kl(student, teacher, batch)
    history = train_distilled(
        student, teacher, [(batch, y)], 8, lr=3e-3, mode="soft", alpha=1.0, temperature=2.0, seed=0
    )
    after = _kl(student, teacher, batch)
    assert len(history["loss"]) == 8 and history["train_seconds"] > 0
    assert after < 0.5 * before, (before, after)
    assert history["loss"][-1] < history["loss"][0]
    assert teacher.training
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())


def test_init_from_ancestry_fits_the_rule_to_the_ancestry_blocks(tiny_cfg, batch):
    """An ancestry whose blocks are exactly theta_A + (l/L) theta_B is recovered exactly: the aux net then computes
    the ancestry's function (same logits), and R^2 is 1; a general ancestry gets the least-squares line."""
    from learngene.vit.auxiliary import init_from_ancestry

    with seeded(0):
        ancestry = build_vit({**tiny_cfg, "depth": 4}).eval()
        a, b = build_vit({**tiny_cfg, "depth": 1}), build_vit({**tiny_cfg, "depth": 1})
    base, slope = a.blocks[0].state_dict(), b.blocks[0].state_dict()
    state = ancestry.state_dict()
    for i in range(4):
        state.update({f"blocks.{i}.{k}": base[k] + (i / 4) * slope[k] for k in base})
    ancestry.load_state_dict(state)
    aux = ExpandedViT(tiny_cfg, "linear", 4, seed=1).eval()
    r2 = init_from_ancestry(aux, ancestry)
    assert min(r2.values()) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(aux(batch), ancestry(batch), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(aux.templates.state_dict()["attn.qkv.weight"][1], slope["attn.qkv.weight"],
                               atol=1e-5, rtol=1e-4)
    # a block off the line: the fit is the least-squares line (its mean through depth is the blocks' mean)
    state["blocks.2.mlp.fc1.weight"] += 0.3
    ancestry.load_state_dict(state)
    r2 = init_from_ancestry(aux, ancestry)
    assert r2["mlp.fc1.weight"] < 0.999 and r2["attn.qkv.weight"] == pytest.approx(1.0, abs=1e-5)
    t = aux.templates.state_dict()["mlp.fc1.weight"]
    fitted = torch.stack([t[0] + (i / 4) * t[1] for i in range(4)])
    blocks = torch.stack([state[f"blocks.{i}.mlp.fc1.weight"] for i in range(4)])
    torch.testing.assert_close(fitted.mean(0), blocks.mean(0), atol=1e-5, rtol=1e-4)
    with pytest.raises(ModelError, match="shared tensors"):
        init_from_ancestry(ExpandedViT({**tiny_cfg, "num_classes": 7}, "linear", 4), ancestry)

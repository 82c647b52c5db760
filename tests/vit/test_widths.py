"""Descendants of any width and depth: every transformer kind at a shape no preset uses, weight selection and the
DCT resizing against hand computations, and the frequency learngene's artifact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learngene.errors import GeneError, ModelError
from learngene.kinds import load_gene
from learngene.models.expansion import ExpandedViT
from learngene.models.vit_resize import (
    dct_coefficients,
    descendant_shape,
    from_coefficients,
    select_into,
    uniform_indices,
)
from learngene.vit.descendants import build_descendant, scratch_descendant, selected_ancestry
from learngene.vit.frequency import FrequencyGene, extract_frequency
from learngene.vit.gene import extract_heur_lg, extract_tleg

SPEC = {"image_size": 16, "channels": 1, "mean": [0.5], "std": [0.25]}
DEPTH, WIDTH = 5, 40  # no preset builds this shape: 5 blocks of width 40 (2 heads of 20)


def _genes(ancestry, tiny_cfg):
    aux = ExpandedViT({**tiny_cfg, "depth": 3}, "linear", 3, seed=1)
    return {"tleg": extract_tleg(aux, SPEC, ancestry=ancestry),
            "heur-lg": extract_heur_lg(ancestry, [2, 3], SPEC),
            "frequency": extract_frequency(ancestry, SPEC, keep=0.6)}


@pytest.mark.parametrize("kind", ["tleg", "heur-lg", "frequency"])
def test_every_kind_builds_a_shape_no_preset_uses_and_round_trips(kind, ancestry, tiny_cfg, batch, tmp_path):
    gene = _genes(ancestry, tiny_cfg)[kind]
    d = build_descendant(gene, DEPTH, 7, width=WIDTH, seed=3)
    assert (d.depth, d.width, d.heads, len(d.model.blocks)) == (DEPTH, WIDTH, 2, DEPTH)
    assert d.model.embed_dim == WIDTH and d.model.blocks[0].mlp.fc1.out_features == 4 * WIDTH
    out = d.model(batch)
    assert out.shape == (6, 7) and torch.isfinite(out).all()
    assert d.inherited and not any(k.startswith("head.") for k in d.inherited)
    gene.save(tmp_path / kind)
    back = load_gene(tmp_path / kind)
    assert type(back) is type(gene) and back.stored_params == gene.stored_params
    assert set(back.tensors) == set(gene.tensors)
    assert all(torch.equal(back.tensors[k], gene.tensors[k]) for k in gene.tensors)
    again = build_descendant(tmp_path / kind, DEPTH, 7, width=WIDTH, seed=3)  # from the directory too
    assert all(torch.equal(a, b) for a, b in zip(d.model.state_dict().values(), again.model.state_dict().values()))
    built = gene.build(7, depth=DEPTH, width=WIDTH, seed=3)  # the Gene protocol's build: the same model
    assert all(torch.equal(a, b) for a, b in zip(d.model.state_dict().values(), built.state_dict().values()))
    assert gene.build(7, depth=DEPTH, width=WIDTH, seed=3, inherit=False).embed_dim == WIDTH
    # wider than the gene, with another head count
    wide = build_descendant(back, 2, 3, width=48, heads=3, seed=0)
    assert (wide.width, wide.heads) == (48, 3) and wide.model(batch).shape == (6, 3)


def test_uniform_indices_and_selection_by_hand():
    assert uniform_indices(6, 3) == [0, 2, 4] and uniform_indices(5, 2) == [0, 2] and uniform_indices(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ModelError):
        uniform_indices(2, 3)
    src = torch.arange(24.0).reshape(4, 6)
    # shrink the second axis 6 -> 3 (columns 0, 2, 4), grow the first 4 -> 5 (a fresh row stays)
    fresh = torch.full((5, 3), -1.0)
    out = select_into(src, fresh, ("M", "D"))
    expected = torch.tensor([[0.0, 2, 4], [6, 8, 10], [12, 14, 16], [18, 20, 22], [-1, -1, -1]])
    assert torch.equal(out, expected) and torch.equal(fresh, torch.full((5, 3), -1.0))
    with pytest.raises(ModelError, match="fixed"):
        select_into(src, torch.zeros(3, 3), ("*", "D"))


def test_weight_selection_of_a_vit_keeps_whole_heads(ancestry, batch):
    """Width 32 -> 16 with 2 heads: each head's 16 channels -> 8 (0, 2, ..., 14), the stream's 32 -> 16."""
    d = selected_ancestry(ancestry, 2, 5, width=16, seed=0)
    src, dst = ancestry.state_dict(), d.model.state_dict()
    half = torch.arange(0, 32, 2)
    qkv = src["blocks.1.attn.qkv.weight"].reshape(3, 2, 16, 32)[:, :, ::2, :][..., half].reshape(48, 16)
    assert torch.equal(dst["blocks.1.attn.qkv.weight"], qkv)
    proj = src["blocks.0.attn.proj.weight"].reshape(32, 2, 16)[half][:, :, ::2].reshape(16, 16)
    assert torch.equal(dst["blocks.0.attn.proj.weight"], proj)
    assert torch.equal(dst["blocks.0.mlp.fc1.weight"], src["blocks.0.mlp.fc1.weight"][::2][:, half])
    assert torch.equal(dst["pos_embed"], src["pos_embed"][..., half])
    assert torch.equal(dst["patch_embed.proj.weight"], src["patch_embed.proj.weight"][half])
    # deeper than the ancestry: its 4 blocks, then fresh ones; at its own shape: the truncated ancestry exactly
    deep = selected_ancestry(ancestry, 6, 5, seed=0)
    assert "blocks.3.norm1.weight" in deep.inherited and "blocks.4.norm1.weight" not in deep.inherited
    same = selected_ancestry(ancestry, 3, 5, seed=0).model.state_dict()
    assert all(torch.equal(same[k], v) for k, v in src.items() if not k.startswith(("head.", "blocks.3.")))


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II by its definition (no scipy): row k, column j."""
    k, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    m = np.cos(np.pi * (2 * j + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


def test_dct_truncation_and_padding_by_hand():
    x = np.array([1.0, 2.0, 4.0, 3.0])
    c = _dct_matrix(4) @ x
    coef = dct_coefficients(torch.tensor(x), ("D",), {"D": 2})
    assert np.allclose(coef.numpy(), c[:2], atol=1e-6)
    # to length 2: the two kept coefficients, inverse DCT of length 2, times sqrt(2 / 4)
    two = from_coefficients(coef, ("D",), {"D": 4}, {"D": 2})
    assert np.allclose(two.numpy(), _dct_matrix(2).T @ c[:2] * math.sqrt(2 / 4), atol=1e-6)
    # to length 6: zero-padded coefficients, inverse DCT of length 6, times sqrt(6 / 4)
    six = from_coefficients(coef, ("D",), {"D": 4}, {"D": 6})
    assert np.allclose(six.numpy(), _dct_matrix(6).T @ np.r_[c[:2], 0, 0, 0, 0] * math.sqrt(6 / 4), atol=1e-6)
    # every coefficient kept and the same length: the tensor itself; a constant stays that constant at any length
    full = dct_coefficients(torch.tensor(x), ("D",), {"D": 4})
    assert np.allclose(from_coefficients(full, ("D",), {"D": 4}, {"D": 4}).numpy(), x, atol=1e-6)
    ones = dct_coefficients(torch.ones(2, 8), ("*", "D"), {"D": 3})
    assert torch.allclose(from_coefficients(ones, ("*", "D"), {"D": 8}, {"D": 5}), torch.ones(2, 5), atol=1e-6)


def test_frequency_gene_keeps_the_ancestry_exactly_with_every_coefficient(ancestry, batch):
    gene = extract_frequency(ancestry, SPEC, keep=1.0)
    model, inherited = gene.descendant(4, 5, seed=0)
    src = ancestry.state_dict()
    assert set(inherited) == {k for k in src if not k.startswith("head.")}
    assert max((model.state_dict()[k] - src[k]).abs().max().item() for k in inherited) < 1e-6
    small = extract_frequency(ancestry, SPEC, keep=0.5)
    assert small.kept == {"L": 2, "D": 16, "E": 8, "M": 64}
    assert small.stored_params < 0.25 * small.ancestry["params_without_head"]
    with pytest.raises(ModelError, match=r"\(0, 1\]"):
        extract_frequency(ancestry, SPEC, keep=0.0)


def test_a_tampered_frequency_gene_is_refused(ancestry, tmp_path):
    from safetensors.torch import load_file, save_file

    extract_frequency(ancestry, SPEC, keep=0.5).save(tmp_path / "g")
    tensors = load_file(tmp_path / "g" / "model.safetensors")
    manifest = (tmp_path / "g" / "learngene.json").read_text()
    FrequencyGene.load(tmp_path / "g")
    # a coefficient block of the wrong size, with a manifest that agrees with the file (checksums recomputed)
    from learngene.artifacts import FREQUENCY_GENE, save_artifact

    tensors["coef.blocks.mlp.fc1.weight"] = torch.zeros(2, 63, 16)
    import json

    fields = {k: v for k, v in json.loads(manifest).items()
              if k not in ("format", "version", "tensors", "sha256", "fields_sha256")}
    fields.pop("stored_params")
    save_artifact(tmp_path / "bad", FREQUENCY_GENE, tensors, fields)
    with pytest.raises(GeneError, match="tensor shapes do not match"):
        load_gene(tmp_path / "bad")
    del tensors["coef.blocks.mlp.fc1.weight"]
    save_file(tensors, tmp_path / "g" / "model.safetensors")  # the checksum no longer matches
    with pytest.raises(GeneError):
        load_gene(tmp_path / "g")


def test_shapes_and_heads_are_checked(tiny_cfg):
    assert descendant_shape(tiny_cfg, 48)["num_heads"] == 2  # the gene's 2 heads divide 48
    assert descendant_shape(tiny_cfg, 48, 3)["num_heads"] == 3
    assert descendant_shape({**tiny_cfg, "embed_dim": 96, "num_heads": 3}, 64)["num_heads"] == 2  # head width 32
    with pytest.raises(ModelError, match="give the head count"):
        descendant_shape({**tiny_cfg, "embed_dim": 96, "num_heads": 3}, 40)
    with pytest.raises(ModelError, match="divides the width"):
        descendant_shape(tiny_cfg, 48, 5)
    d = scratch_descendant(tiny_cfg, 2, 3, width=24, seed=0)
    assert (d.width, d.heads, d.stored_params) == (24, 2, 0)


def test_make_gene_turns_a_users_vit_into_a_frequency_gene(ancestry, tmp_path, capsys):
    """`learngene make-gene`: the user's saved ViT -> a frequency learngene equal to extract_frequency's, in one
    command; a changed file is a different gene (its sha256 in the provenance)."""
    from learngene.cli import main
    from learngene.vit.ancestry import save_ancestry

    save_ancestry(ancestry, tmp_path / "mine")
    args = ["make-gene", "--weights", str(tmp_path / "mine"), "--keep", "0.5", "--mean", "0.5", "--std", "0.25",
            "--out", str(tmp_path / "g")]
    assert main(args) == 0, capsys.readouterr().err
    assert "frequency learngene" in capsys.readouterr().out
    gene = load_gene(tmp_path / "g")
    want = extract_frequency(ancestry, SPEC, keep=0.5)
    assert isinstance(gene, FrequencyGene) and gene.input_spec["std"] == [0.25] and gene.kept == want.kept
    assert all(torch.allclose(gene.tensors[k], want.tensors[k], atol=1e-6) for k in want.tensors)
    assert len(gene.provenance["sha256"]) == 64
    assert main([*args[:-2], "--out", str(tmp_path / "g"), "--preset", "vit-smoke"]) == 2
    assert "are for --kind tleg" in capsys.readouterr().err

"""Transformer learngenes as artifacts: extract, save, load, refuse what does not match, build any depth."""

from __future__ import annotations

import json

import pytest
import torch

from learngene.artifacts import GENE, TRANSFORMER_GENE, load_artifact, save_artifact
from learngene.errors import GeneError, ModelError
from learngene.models.expansion import ExpandedViT
from learngene.models.vit import block_state_dict
from learngene.vit.descendants import build_descendant
from learngene.vit.gene import (
    TransformerGene,
    extract_heur_lg,
    extract_tleg,
    is_transformer_gene,
)

SPEC = {"image_size": 16, "channels": 1, "mean": [0.3], "std": [0.2]}


def _fields(gene) -> dict:
    """The gene's own manifest fields (what save_artifact takes), without the artifact layer's."""
    return {k: v for k, v in gene.manifest().items() if k not in ("format", "version", "tensors", "sha256", "fields_sha256")}


@pytest.fixture
def aux(tiny_cfg):
    """A 3-block TLEG auxiliary net with random (recognisable) templates and shared tensors."""
    net = ExpandedViT(tiny_cfg, "linear", depth=3, seed=0)
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return net.eval()


def _same_block(a, i, b, j) -> bool:
    sa, sb = block_state_dict(a, i), block_state_dict(b, j)
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tleg_round_trip_builds_every_depth(tmp_path, aux, ancestry, batch):
    gene = extract_tleg(aux, SPEC, ancestry=ancestry)
    gene.save(tmp_path / "tleg")
    loaded = TransformerGene.load(tmp_path / "tleg")
    assert loaded.kind == "tleg" and loaded.rule_name == "linear" and loaded.aux_depth == 3
    assert set(loaded.tensors) == set(gene.tensors)
    assert all(torch.equal(loaded.tensors[k], gene.tensors[k]) for k in gene.tensors)
    assert loaded.stored_params == sum(v.numel() for v in aux.templates_state_dict().values())
    assert loaded.ancestry["depth"] == 4 and loaded.input_spec == {**SPEC, "invert": False, "resize": "crop"}
    theta = aux.templates.state_dict()
    for depth in (2, 3, 7):  # 7 is deeper than both the auxiliary net (3) and the ancestry (4)
        d = build_descendant(loaded, depth=depth, num_classes=6, seed=1)
        assert d.method == "tleg" and d.depth == depth and len(d.model.blocks) == depth
        assert d.model(batch).shape == (6, 6)
        assert d.stored_params == loaded.stored_params
        # the expansion formula by hand: block l of L = theta_A + (l / L) * theta_B
        for layer in (0, depth - 1):
            w = d.model.blocks[layer].attn.qkv.weight
            a, b = theta["attn.qkv.weight"][0], theta["attn.qkv.weight"][1]
            torch.testing.assert_close(w, a + (layer / depth) * b)
        assert torch.equal(d.model.pos_embed, aux.vit.pos_embed)
        assert torch.equal(d.model.fc_norm.weight, aux.vit.fc_norm.weight)
    # the head is fresh and seeded: same seed, same head; other seed, other head
    h1 = build_descendant(loaded, depth=2, num_classes=6, seed=1).model.head.weight
    h2 = build_descendant(loaded, depth=2, num_classes=6, seed=1).model.head.weight
    h3 = build_descendant(loaded, depth=2, num_classes=6, seed=2).model.head.weight
    assert torch.equal(h1, h2) and not torch.equal(h1, h3)
    # a path works as well as a gene
    assert build_descendant(tmp_path / "tleg", depth=5, num_classes=2, seed=0).model(batch).shape == (6, 2)


def test_heur_lg_round_trip_stacks_blocks_last(tmp_path, ancestry, batch):
    gene = extract_heur_lg(ancestry, [1, 2], SPEC, criterion={"name": "fixed", "reason": "test"})
    gene.save(tmp_path / "heur")
    loaded = TransformerGene.load(tmp_path / "heur")
    assert loaded.kind == "heur-lg" and loaded.block_indices == [1, 2]
    assert sorted({k.split(".")[1] for k in loaded.tensors if k.startswith("blocks.")}) == ["1", "2"]
    assert loaded.criterion["name"] == "fixed"
    for depth in (1, 3, 6):  # 6 is deeper than the 4-block ancestry
        d = build_descendant(loaded, depth=depth, num_classes=4, seed=0)
        m = d.model
        assert d.method == "heur-lg" and len(m.blocks) == depth and m(batch).shape == (6, 4)
        assert torch.equal(m.patch_embed.proj.weight, ancestry.patch_embed.proj.weight)
        assert torch.equal(m.fc_norm.weight, ancestry.fc_norm.weight)
        assert _same_block(m, depth - 1, ancestry, 2)  # the last chosen block ends the descendant
        if depth >= 2:
            assert _same_block(m, depth - 2, ancestry, 1)
        if depth >= 3:
            assert not any(_same_block(m, 0, ancestry, j) for j in range(4))  # fresh below
    block = sum(v.numel() for v in block_state_dict(ancestry, 0).values())
    shared = sum(v.numel() for k, v in loaded.tensors.items() if not k.startswith("blocks."))
    assert loaded.stored_params == 2 * block + shared


def test_tensors_that_do_not_match_the_manifest_are_refused(tmp_path, aux, ancestry):
    gene = extract_tleg(aux, SPEC)
    fields = _fields(gene)
    # a valid artifact (checksums fine) whose tensors lack one template the manifest's rule calls for
    tensors = {k: v for k, v in gene.tensors.items() if k != "templates.attn.qkv.weight"}
    save_artifact(tmp_path / "missing", TRANSFORMER_GENE, tensors, fields)
    with pytest.raises(GeneError, match=r"do not match its manifest.*missing \['templates.attn.qkv.weight'\]"):
        TransformerGene.load(tmp_path / "missing")
    # one template of the wrong shape (a 3-template stack where the linear rule has 2)
    tensors = dict(gene.tensors)
    tensors["templates.norm1.weight"] = torch.ones(3, 32)
    save_artifact(tmp_path / "shape", TRANSFORMER_GENE, tensors, fields)
    with pytest.raises(GeneError, match="shapes do not match its manifest.*templates.norm1.weight"):
        TransformerGene.load(tmp_path / "shape")
    # a Heur-LG manifest edited to claim a block whose tensors are not there
    heur = extract_heur_lg(ancestry, [2, 3], SPEC)
    heur.save(tmp_path / "heur")
    path = tmp_path / "heur" / "learngene.json"
    manifest = json.loads(path.read_text())
    manifest["block_indices"] = [1, 2, 3]
    path.write_text(json.dumps(manifest))
    with pytest.raises(GeneError, match=r"learngene.json was edited after learngene wrote it: 'block_indices' differs"):
        TransformerGene.load(tmp_path / "heur")
    # the same claim written with consistent field checksums (another tool): the gene's own check refuses it
    from learngene.artifacts import fields_sha256

    manifest["fields_sha256"] = fields_sha256(TRANSFORMER_GENE, {
        k: v for k, v in manifest.items() if k not in ("format", "version", "fields_sha256", "tensors", "sha256")})
    path.write_text(json.dumps(manifest))
    with pytest.raises(GeneError, match=r"do not match its manifest.*missing \['blocks.1"):
        TransformerGene.load(tmp_path / "heur")
    # the tensor index of the manifest edited: the artifact layer refuses it before the gene looks
    heur.save(tmp_path / "index")
    path = tmp_path / "index" / "learngene.json"
    manifest = json.loads(path.read_text())
    manifest["tensors"]["pos_embed"]["shape"] = [1, 8, 32]
    path.write_text(json.dumps(manifest))
    with pytest.raises(GeneError, match="pos_embed"):
        TransformerGene.load(tmp_path / "index")


def test_foreign_and_broken_genes_are_refused(tmp_path, aux):
    gene = extract_tleg(aux, SPEC)
    save_artifact(tmp_path / "cnn", GENE, dict(gene.tensors), {"layers": []})
    with pytest.raises(GeneError, match="not a transformer learngene"):
        TransformerGene.load(tmp_path / "cnn")
    assert not is_transformer_gene(tmp_path / "cnn")
    fields = {**_fields(gene), "kind": "wave"}
    save_artifact(tmp_path / "kind", TRANSFORMER_GENE, dict(gene.tensors), fields)
    with pytest.raises(GeneError, match="'kind' must be one of"):
        TransformerGene.load(tmp_path / "kind")
    fields = {**_fields(gene), "stored_params": 5}
    save_artifact(tmp_path / "count", TRANSFORMER_GENE, dict(gene.tensors), fields)
    with pytest.raises(GeneError, match="stored_params"):
        TransformerGene.load(tmp_path / "count")
    with pytest.raises(GeneError, match="input_spec"):
        TransformerGene("tleg", gene.tensors, vit_cfg=gene.vit_cfg, input_spec={"mean": [0]},
                        rule=gene.rule, aux_depth=3)


def test_describe_inspect_and_depth_limits(tmp_path, tiny_cfg, ancestry):
    stack = ExpandedViT(tiny_cfg, "stack", depth=3, seed=0)
    gene = extract_tleg(stack, SPEC, ancestry=ancestry)
    gene.save(tmp_path / "g")
    assert is_transformer_gene(tmp_path / "g") and is_transformer_gene(tmp_path / "g" / "learngene.json")
    assert not is_transformer_gene(tmp_path)
    text = TransformerGene.load(tmp_path / "g").describe()
    assert "kind tleg" in text and "depth 3 only" in text and "templates.attn.qkv.weight" in text
    assert f"{gene.stored_params:,}" in text and "of the ancestry" in text
    with pytest.raises(ModelError, match="builds depth 3 only"):
        build_descendant(gene, depth=4, num_classes=2)
    with pytest.raises(ModelError, match="num_classes"):
        build_descendant(gene, depth=3, num_classes=0)
    heur = extract_heur_lg(ancestry, [3], SPEC, include_final_norm=False)
    assert not any(k.startswith("fc_norm.") for k in heur.tensors)
    assert "ancestry blocks [3] of 4" in heur.describe()
    with pytest.raises(ModelError, match="blocks"):
        extract_heur_lg(ancestry, [4], SPEC)
    manifest, _, _ = load_artifact(tmp_path / "g", TRANSFORMER_GENE)
    assert manifest["kind"] == "tleg" and manifest["rule"]["name"] == "stack"

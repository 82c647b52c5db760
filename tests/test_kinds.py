"""Every kind of learngene behind one protocol: load_gene, save, manifest, describe, build, and `inspect`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from learngene.cli import main
from learngene.errors import GeneError
from learngene.gene import Learngene
from learngene.kinds import Gene, kind_of, load_gene
from learngene.models.expansion import ExpandedViT
from learngene.models.layers import ConvBlock
from learngene.models.vit import vit_preset_config
from learngene.vit.gene import TransformerGene, extract_tleg

SPEC = {"image_size": 16, "channels": 1, "mean": [0.3], "std": [0.2]}


def _cnn() -> Learngene:
    net = torch.nn.Module()
    net.features = torch.nn.Sequential(ConvBlock(1, 4), ConvBlock(4, 6, pool=True))
    return Learngene.from_model(net, ["features.1"], input_spec=SPEC)


def _vit() -> TransformerGene:
    return extract_tleg(ExpandedViT(vit_preset_config("vit_test", in_chans=1, num_classes=3, depth=3), "linear", 3,
                                    seed=0), SPEC)


@pytest.mark.parametrize("make", [_cnn, _vit], ids=["cnn", "vit"])
def test_both_kinds_satisfy_the_gene_protocol(make, tmp_path, capsys):
    gene = make()
    assert isinstance(gene, Gene) and kind_of(gene).gene is type(gene)
    where = gene.save(tmp_path / "g")
    assert isinstance(where, Path) and where == tmp_path / "g"  # the same kind of answer for every kind
    loaded = load_gene(where)
    assert type(loaded) is type(gene) and loaded.manifest()["sha256"] == gene.manifest()["sha256"]
    assert json.loads((where / "learngene.json").read_text()) == loaded.manifest()
    shape = {"depth": 4} if isinstance(gene, TransformerGene) else {}
    model = loaded.build(3, seed=0, **shape)
    scratch = loaded.build(3, seed=0, inherit=False, **shape)
    x = torch.randn(2, 1, 16, 16)
    assert model(x).shape == scratch(x).shape == (2, 3)
    assert not torch.equal(model(x), scratch(x))  # inherited weights differ from a fresh init
    assert main(["inspect", str(where), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == loaded.manifest()
    assert main(["inspect", str(where)]) == 0 and capsys.readouterr().out.strip() == loaded.describe()


def test_a_directory_without_a_gene_gets_the_loaders_message(tmp_path):
    with pytest.raises(GeneError, match="no learngene.json"):
        load_gene(tmp_path)

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


def _folder(root: Path, classes: int = 3, per_class: int = 2) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            arr = (torch.rand(16, 16, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(root / f"c{c}" / f"{i}.png")
    return root


def test_a_gene_carries_the_individual_settings_its_run_chose_and_inherit_starts_from_them(tmp_path):
    """The read-out that suits a gene is data-dependent (glyphs: the flattened map; Omniglot: average pooling):
    the run that chose the gene records its [individual] settings and `inherit` uses them unless told otherwise."""
    from learngene.config import load_config
    from learngene.kinds import inherit

    net = torch.nn.Module()
    net.features = torch.nn.Sequential(ConvBlock(1, 4, pool=True), ConvBlock(4, 6, pool=True))
    recipe = {"pool": "flatten", "epochs": 2, "augment": "none"}
    gene = Learngene.from_model(net, ["features.0", "features.1"], input_spec=SPEC, individual=recipe)
    gene.save(tmp_path / "g")
    assert load_gene(tmp_path / "g").individual == recipe
    assert "pool = flatten" in load_gene(tmp_path / "g").describe()
    support = _folder(tmp_path / "s")
    from learngene.individual import load_individual

    inherit(tmp_path / "g", support, tmp_path / "m")
    assert load_individual(tmp_path / "m")[0].config()["pool"] == "flatten"  # the gene's, not the default ("avg")
    inherit(tmp_path / "g", support, tmp_path / "m2", overrides=["individual.pool='avg'"])
    assert load_individual(tmp_path / "m2")[0].config()["pool"] == "avg"  # --set wins
    inherit(tmp_path / "g", support, tmp_path / "m3", cfg=load_config("smoke"))
    assert load_individual(tmp_path / "m3")[0].config()["pool"] == "avg"  # so does a preset


def test_inherit_leaves_the_callers_config_as_it_was(tmp_path):
    """One preset object reused over many tasks with per-call --set overrides: an override of one call (e.g. 0
    epochs for a nearest-class-mean reference) must not carry into the next call's training."""
    from learngene.config import load_config
    from learngene.kinds import inherit

    _cnn().save(tmp_path / "g")
    support = _folder(tmp_path / "s")
    cfg = load_config("smoke")
    before = cfg.to_dict()
    inherit(tmp_path / "g", support, None, cfg=cfg, overrides=["individual.epochs=0"])
    assert cfg.to_dict() == before


def test_a_hand_edited_recipe_is_refused(tmp_path):
    net = torch.nn.Module()
    net.features = torch.nn.Sequential(ConvBlock(1, 4), ConvBlock(4, 6, pool=True))
    with pytest.raises(GeneError, match="'individual'.*not valid"):
        Learngene.from_model(net, ["features.1"], input_spec=SPEC, individual={"pool": "sum"})
    with pytest.raises(GeneError, match="'individual'.*not valid"):
        Learngene.from_model(net, ["features.1"], input_spec=SPEC, individual={"no_such_setting": 1})

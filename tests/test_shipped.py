"""Learngenes shipped with the package: listed, loaded offline by name, inherited from by name, weights only; the
number on each card's check reproduced (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import learngene as lg
from learngene.cli import main
from learngene.errors import GeneError
from learngene.shipped import SHIPPED_DIR, list_shipped, shipped_card, shipped_path
from learngene.vit.descendants import build_descendant

NAMES = ["glyphs-frequency", "glyphs-tleg"]


def test_shipped_genes_load_by_name_offline_and_match_their_cards():
    assert list_shipped() == NAMES
    for name in NAMES:
        gene = lg.load_gene(name)
        card = shipped_card(name)
        assert card["name"] == name and card["kind"] == gene.kind and card["stored_params"] == gene.stored_params
        files = {p.name for p in shipped_path(name).iterdir()}
        assert files == {"learngene.json", "model.safetensors", "card.json", "CARD.md"}  # weights only, no data
        assert card["files_bytes"] == {f: (SHIPPED_DIR / name / f).stat().st_size
                                       for f in ("learngene.json", "model.safetensors")}
        # float32 weights and a small header: nothing else hides in the tensor file
        assert 4 * gene.stored_params < card["files_bytes"]["model.safetensors"] < 4 * gene.stored_params + 20_000
        assert card["stored_fraction_of_ancestry"] <= 0.3 and card["check"]["acc"] is not None
        assert "Licence" in (SHIPPED_DIR / name / "CARD.md").read_text()
        spec = gene.input_spec
        d = build_descendant(gene, 3, 4, width=72, seed=0)
        x = torch.randn(2, spec["channels"], spec["image_size"], spec["image_size"])
        assert d.model(x).shape == (2, 4) and d.width == 72


def test_list_genes_names_them_with_sizes(capsys):
    assert main(["list", "genes"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out and "stored parameters" in out and " MB" in out


def _folder(root, n_classes=3, per_class=2, size=20):
    gen = np.random.default_rng(0)
    for c in range(n_classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(gen.integers(0, 255, (size, size), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


def test_inherit_from_a_shipped_gene_by_name(tmp_path, capsys):
    sup = _folder(tmp_path / "support")
    args = ["inherit", "--gene", "glyphs-tleg", "--depth", "2", "--width", "48", "--support", str(sup),
            "--query", str(sup), "--out", str(tmp_path / "m"), "--set", "individual.head_epochs=1"]
    assert main(args) == 0, capsys.readouterr().err
    assert "depth-2 tleg descendant (width 48, 3 heads)" in capsys.readouterr().out
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert "shipped learngene glyphs-tleg" in meta["gene"]["dir"] and meta["width"] == 48


def test_a_local_path_is_never_mistaken_for_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "glyphs-frequency").mkdir()
    (tmp_path / "glyphs-frequency" / "learngene.json").write_text("{}")
    with pytest.raises(GeneError):
        lg.load_gene("glyphs-frequency")  # the user's folder, not the shipped gene
    assert shipped_path("../shipped/glyphs-frequency") is None and shipped_path("no-such-gene") is None


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_card_check_number_is_reproduced(name):
    """The card's reduced setting, run again on the shipped gene: the same accuracy (CPU, same seeds)."""
    from bench.ship_genes import check_accuracy

    card = shipped_card(name)
    check = {k: card["check"][k] for k in ("classes", "depth", "width", "epochs", "seed")}
    assert check_accuracy(lg.load_gene(name), check) == pytest.approx(card["check"]["acc"], abs=0.02)

"""The version rule of Learngene.load: which releases' genes this learngene reads, and what it says otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import learngene
from learngene.errors import GeneError
from learngene.gene import MANIFEST_FILE, Learngene
from learngene.models.layers import ConvBlock

SPEC = {"image_size": 8, "channels": 1, "mean": [0.5], "std": [0.25], "spatial_in": 8}


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(ConvBlock(1, 4), ConvBlock(4, 4, pool=True))


def _gene_labelled(directory: Path, version: object) -> Path:
    """A valid gene whose manifest says it was written by learngene `version`."""
    torch.manual_seed(0)
    Learngene.from_model(_Tiny().eval(), ["features.0", "features.1"], input_spec=SPEC).save(directory)
    path = directory / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["version"] = version
    path.write_text(json.dumps(manifest))
    return directory


@pytest.fixture(autouse=True)
def _this_release(monkeypatch):
    monkeypatch.setattr(learngene, "__version__", "0.1.0")


@pytest.mark.parametrize("version", ["0.1.0", "0.1.7", "0.1.0rc1", "0.1.0.dev3", "0.1.0+local.2"])
def test_same_major_minor_loads(tmp_path, version):
    """Patch releases (and pre-/local releases of this minor) never change what a gene means."""
    gene = Learngene.load(_gene_labelled(tmp_path / "g", version))
    assert gene.made_by == version and gene.manifest()["version"] == version


@pytest.mark.parametrize(
    ("version", "match"),
    [
        ("0.2.0", r"made by learngene 0\.2\.0, this is 0\.1\.0: incompatible format, written by a newer learngene; "
                  r"upgrade learngene to 0\.2 or later"),
        ("0.2.0rc1", "written by a newer learngene; upgrade learngene to 0.2"),
        ("1.0.0", "written by a newer learngene; upgrade learngene to 1.0"),
        ("0.2", "written by a newer learngene"),  # misspelt, but clearly newer: upgrading is the useful advice
        ("0.0.9", r"made by learngene 0\.0\.9, this is 0\.1\.0: incompatible format, written by an older learngene "
                  r"\(this one reads genes of 0\.x releases from 0\.1 on\); re-export the gene"),
        ("0.1", r"'version' '0\.1' is not a release number MAJOR\.MINOR\.PATCH such as '0\.1\.0'"),
        ("0.1.x", "is not a release number MAJOR.MINOR.PATCH"),
        ("v0.1.0", "'version' must be a version string such as '0.1.0', got 'v0.1.0'"),
        ("", "'version' must be a version string"),
        (None, "'version' must be a version string"),
        (0.1, "'version' must be a version string"),
    ],
)
def test_other_versions_are_refused(tmp_path, version, match):
    directory = _gene_labelled(tmp_path / "g", version)
    with pytest.raises(GeneError, match=match):
        Learngene.load(directory)


@pytest.mark.parametrize(
    ("version", "loads"),
    [("0.1.0", True), ("0.2.5", True), ("0.3.9", True), ("0.0.9", False), ("0.4.0", False)],
)
def test_older_minor_loads_while_the_format_is_unchanged(tmp_path, monkeypatch, version, loads):
    """A later release (here 0.3.2) reads every gene of its major from the oldest readable release (0.1) on."""
    monkeypatch.setattr(learngene, "__version__", "0.3.2")
    directory = _gene_labelled(tmp_path / "g", version)
    if loads:
        assert Learngene.load(directory).made_by == version
    else:
        with pytest.raises(GeneError, match="incompatible format"):
            Learngene.load(directory)


def test_another_major_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(learngene, "__version__", "1.0.0")
    with pytest.raises(GeneError, match=r"written by an older learngene .*load it with learngene 0\.1\.x"):
        Learngene.load(_gene_labelled(tmp_path / "g", "0.1.0"))


def test_a_saved_gene_records_this_release(tmp_path):
    torch.manual_seed(0)
    directory = Learngene.from_model(_Tiny().eval(), ["features.0"], input_spec=SPEC).save(tmp_path / "g")
    assert json.loads((directory / MANIFEST_FILE).read_text())["version"] == learngene.__version__

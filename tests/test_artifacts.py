"""One artifact format family: every kind saves and loads through learngene.artifacts and is checked alike."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from learngene.artifacts import (
    BASELINE,
    GENE,
    GRADIENT_STATS,
    INDIVIDUAL,
    NETWORK,
    TRANSFORMER_GENE,
    load_artifact,
    save_artifact,
)
from learngene.errors import DataError, GeneError, LearngeneError
from learngene.individual import IndividualModel, load_individual, save_individual
from learngene.models import create_model
from learngene.models.io import load_network, save_network

KINDS = [GENE, NETWORK, INDIVIDUAL, BASELINE, GRADIENT_STATS]


def _tensors():
    return {"a.weight": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.noun)
def test_round_trip_and_manifest(tmp_path, kind):
    manifest = save_artifact(tmp_path / "x", kind, _tensors(), {"note": "hello"})
    assert list(manifest)[:2] == ["format", "version"] and list(manifest)[-2:] == ["tensors", "sha256"]
    back, tensors, directory = load_artifact(tmp_path / "x", kind)
    assert back == json.loads((tmp_path / "x" / kind.manifest).read_text()) and back["note"] == "hello"
    assert directory == tmp_path / "x" and set(tensors) == {"a.weight", "b"}
    assert torch.equal(tensors["a.weight"], _tensors()["a.weight"])
    assert load_artifact(tmp_path / "x" / kind.manifest, kind)[0] == back  # the manifest path works too


def test_files_are_readable_like_any_other_file(tmp_path):
    save_artifact(tmp_path / "x", NETWORK, _tensors(), {})
    mask = os.umask(0o022)
    os.umask(mask)
    for name in (NETWORK.manifest, NETWORK.weights):
        assert stat.S_IMODE((tmp_path / "x" / name).stat().st_mode) == 0o666 & ~mask


@pytest.mark.parametrize(("writer", "reader"), [(INDIVIDUAL, GENE), (GENE, INDIVIDUAL), (NETWORK, BASELINE)],
                         ids=lambda k: k.noun)
def test_one_kind_is_never_read_as_another(tmp_path, writer, reader):
    save_artifact(tmp_path / "x", writer, _tensors(), {})
    if writer.manifest == reader.manifest:
        with pytest.raises(LearngeneError, match=f"has format '{writer.format}', expected '{reader.format}'"):
            load_artifact(tmp_path / "x", reader)
    else:
        with pytest.raises(LearngeneError, match=f"not an? {reader.noun} \\(no {reader.manifest} in"):
            load_artifact(tmp_path / "x", reader)


def test_tampered_truncated_and_edited_files_are_refused_with_the_kinds_error(tmp_path):
    save_artifact(tmp_path / "x", GRADIENT_STATS, _tensors(), {})
    weights = tmp_path / "x" / GRADIENT_STATS.weights
    weights.write_bytes(weights.read_bytes()[:-3])
    with pytest.raises(DataError, match="tampered: sha256 mismatch"):
        load_artifact(tmp_path / "x", GRADIENT_STATS)
    save_artifact(tmp_path / "g", GENE, _tensors(), {})
    m = json.loads((tmp_path / "g" / GENE.manifest).read_text())
    m["tensors"]["a.weight"]["shape"] = [3, 2]
    (tmp_path / "g" / GENE.manifest).write_text(json.dumps(m))
    with pytest.raises(GeneError, match=r"tensor a.weight is float32\[2, 3\] in model.safetensors but float32\[3, 2\]"):
        load_artifact(tmp_path / "g", GENE)
    m["tensors"]["a.weight"]["shape"], m["version"] = [2, 3], "7.0.0"
    (tmp_path / "g" / GENE.manifest).write_text(json.dumps(m))
    with pytest.raises(GeneError, match="written by a newer learngene; upgrade learngene to 7.0"):
        load_artifact(tmp_path / "g", GENE)


def test_networks_round_trip_through_the_architecture_registry(tmp_path):
    net = create_model("test_vgg", num_classes=3)
    save_network(net, tmp_path / "n", fields={"input_spec": {"image_size": 16}})
    back, manifest = load_network(tmp_path / "n")
    assert manifest["input_spec"] == {"image_size": 16} and type(back) is type(net)
    x = torch.randn(2, net.config()["in_channels"], 16, 16)
    net.eval()
    assert torch.equal(back(x), net(x))


def test_save_individual_is_what_predict_reads(tmp_path):
    """A model trained in the user's own code, saved by the library, loads as `learngene predict` loads it."""
    block = {"in_channels": 1, "out_channels": 4, "pool": True}
    model = IndividualModel(1, 8, [block], [], [], [], num_classes=2).eval()
    pre = {"image_size": 8, "channels": 1, "mean": [0.5], "std": [0.25]}
    save_individual(model, tmp_path / "m", classes=["cat", "dog"], preprocessing=pre, note="mine")
    back, meta = load_individual(tmp_path / "m")
    # the file reading is recorded too (defaults for a spec made without it): predict reads files the same way
    assert meta["preprocessing"] == {**pre, "invert": False, "resize": "crop"}
    assert meta["classes"] == ["cat", "dog"] and meta["note"] == "mine"
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(back(x), model(x))
    with pytest.raises(Exception, match="3 class names for a 2-way model"):
        save_individual(model, tmp_path / "m2", classes=["a", "b", "c"], preprocessing=pre)


@pytest.mark.parametrize(("first", "second"), [(GENE, INDIVIDUAL), (INDIVIDUAL, GENE), (NETWORK, INDIVIDUAL),
                                                (BASELINE, NETWORK)], ids=lambda k: k.noun)
def test_saving_never_destroys_another_kind_of_artifact(tmp_path, first, second):
    """Their weights files share a name: a save into another artifact's directory is refused, not an overwrite."""
    save_artifact(tmp_path / "x", first, _tensors(), {})
    before = (tmp_path / "x" / first.weights).read_bytes()
    with pytest.raises(LearngeneError, match=f"it holds an? {first.noun}"):
        save_artifact(tmp_path / "x", second, _tensors(), {})
    assert (tmp_path / "x" / first.weights).read_bytes() == before
    load_artifact(tmp_path / "x", first)  # still whole


@pytest.mark.parametrize("kind", [*KINDS, TRANSFORMER_GENE], ids=lambda k: k.noun)
def test_every_kind_refuses_a_hand_edited_field(tmp_path, kind):
    """Issue 19 item 5: a field edit that leaves the tensors' shapes fitting (image size, pool, channels) is
    caught by fields_sha256 for every kind, whatever the field holds (no list of keys to keep up to date)."""
    fields = {"input_spec": {"image_size": 32, "channels": 1, "pool": True}, "provenance": {"seed": 0}}
    for key, value in (("image_size", 64), ("pool", False), ("invert", True)):
        save_artifact(tmp_path / key, kind, _tensors(), fields)
        path = tmp_path / key / kind.manifest
        m = json.loads(path.read_text())
        m["input_spec"][key] = value
        path.write_text(json.dumps(m, indent=4))  # reformatted as an editor would: only the values count
        with pytest.raises(kind.error, match=f"{kind.manifest} was edited after learngene wrote it: 'input_spec' "
                                             "differs"):
            load_artifact(tmp_path / key, kind)
    # the untouched manifest, reformatted, still loads
    save_artifact(tmp_path / "same", kind, _tensors(), fields)
    path = tmp_path / "same" / kind.manifest
    path.write_text(json.dumps(json.loads(path.read_text()), indent=1, sort_keys=True))
    load_artifact(tmp_path / "same", kind)
